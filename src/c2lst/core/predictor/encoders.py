"""Patch encoders: the small end-to-end CNN, a frozen ResNet read from a local safetensors checkpoint."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from safetensors.torch import load_file as load_torch
from torch import nn

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureModel(Protocol):
    """Anything with the central model's ``features`` method (e.g. ``c2lst.core.models.CentralModel``)."""

    def features(self, patches: np.ndarray, *, t: int = 50, batch_size: int = 64, seed: int = 0) -> np.ndarray:
        """``(n, F)`` float32 features of ``(n, 3, H, W)`` uint8 patches."""


def _to_tensor(patches: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(patches)).float().div_(255.0)


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


class PatchCNN(nn.Module):
    """Small convolutional encoder: four conv/GroupNorm/ReLU stages, global average pooling.

    Parameters
    ----------
    width
        Channels of the first stage (doubled in the second, quadrupled in the third).
    feat_dim
        Output feature size.
    """

    def __init__(self, width: int = 16, feat_dim: int = 64) -> None:
        super().__init__()
        chans = (3, width, 2 * width, 4 * width)
        layers: list[nn.Module] = []
        for cin, cout in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(4, cout), nn.ReLU(), nn.MaxPool2d(2)]
        layers += [nn.Conv2d(chans[-1], feat_dim, 3, padding=1), nn.GroupNorm(4, feat_dim), nn.ReLU(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` floats in [0, 1] -> ``(n, feat_dim)``."""
        return self.net((x - 0.5) / 0.25)


class _Block(nn.Module):
    def __init__(self, cin: int, mid: int, stride: int, bottleneck: bool, downsample: bool) -> None:
        super().__init__()
        cout = mid * 4 if bottleneck else mid
        self.bottleneck = bottleneck
        if bottleneck:
            self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
            self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
            self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        else:
            self.conv1, self.bn1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
            self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, 1, 1, bias=False), nn.BatchNorm2d(mid)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(torch.relu(out)))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetEncoder(nn.Module):
    """ResNet trunk with torchvision's (and timm's) parameter names, so their checkpoints load unchanged.

    Parameters
    ----------
    blocks
        Residual blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for ResNet-50.
    bottleneck
        Bottleneck blocks (ResNet-50 and deeper) instead of basic blocks.
    """

    def __init__(self, blocks: tuple[int, ...], bottleneck: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        expansion = 4 if bottleneck else 1
        cin = 64
        for i, n in enumerate(blocks):
            mid = 64 * 2**i
            stage = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(_Block(cin, mid, stride, bottleneck, downsample=j == 0 and (stride != 1 or cin != mid * expansion)))
                cin = mid * expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*stage))
        self.n_stages = len(blocks)
        self.feat_dim = cin
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ResNetEncoder:
        """Infer the architecture from a torchvision/timm ResNet state dict and load it (``fc.*`` ignored)."""
        stages = sorted({int(k.split(".")[0][5:]) for k in state if k.startswith("layer") and k[5].isdigit()})
        if "conv1.weight" not in state or not stages:
            raise ValueError("the checkpoint is not a torchvision/timm ResNet (no 'conv1.weight' / 'layerN.*' keys); "
                             "pass a ResNet .safetensors file or use encoder='cnn'/'handcrafted'/'central'.")
        blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{s}.")}) for s in stages)
        model = cls(blocks, bottleneck="layer1.0.conv3.weight" in state)
        trunk = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(trunk, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(f"ResNet checkpoint does not match the inferred architecture {blocks}: missing "
                             f"{missing[:5]}, unexpected {unexpected[:5]}.")
        return model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` floats in [0, 1] -> ``(n, feat_dim)`` pooled features."""
        x = (x - self.mean) / self.std
        x = torch.relu(self.bn1(self.conv1(x)))
        x = nn.functional.max_pool2d(x, 3, 2, 1)
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x.mean(dim=(2, 3))


def _load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(f"expected exactly one .safetensors file in {p}, found {[f.name for f in files]}.")
        p = files[0]
    if not p.exists():
        raise ValueError(f"encoder checkpoint {str(p)!r} does not exist; pass an existing .safetensors path or "
                         "encoder='cnn'/'handcrafted'/'central'.")
    if p.suffix != ".safetensors":
        raise ValueError(f"encoder checkpoint {p.name!r} is not a .safetensors file; only safetensors weights are "
                         "loaded (convert with safetensors.torch.save_file(model.state_dict(), path)).")
    state = load_torch(str(p))
    prefix = next((pre for pre in ("model.", "module.", "backbone.") if all(k.startswith(pre) for k in state)), "")
    return {k[len(prefix):]: v for k, v in state.items()}
