"""Histology -> expression predictor: a patch encoder followed by a ridge or MLP head.

Encoders turn ``(n, 3, H, W)`` uint8 RGB patches into ``(n, F)`` features:

``"handcrafted"``
    Colour / HED / GLCM / nuclei statistics (:func:`c2lst.metrics.handcrafted_features`), no weights.
``"cnn"``
    A small CNN trained end-to-end on the training patches (with a linear probe on the standardised
    targets), then frozen.
``"central"``
    ``central.features(patches, t=..., batch_size=..., seed=...)`` of a central diffusion model.
a path (or a :class:`ResNetEncoder`)
    A local torchvision/timm ResNet checkpoint (``.safetensors``; architecture inferred from the keys),
    frozen, ImageNet-normalised, global-average-pooled (saved predictors record it as ``"resnet"``).
a callable
    Any ``patches -> (n, F)`` feature function (not savable).

Frozen encoders' features (central, ResNet, callable) are by default concatenated with the handcrafted
ones; the end-to-end CNN's are not (its features are fitted to the training targets, so a ridge refit on
them would trust them over the handcrafted ones; measured on her2st: worse than either alone).

The head maps standardised features to standardised targets: ``"ridge"`` (one alpha per gene chosen by
efficient leave-one-out CV on the real training rows only, then refit on real + extra rows) or ``"mlp"``.
Extra rows (synthetic or augmented patches with their expression) and feature-space mixup rows only ever
enter fitting; every statistic (feature and target mean/std, ridge alphas) comes from the real rows.
Weights are saved as ``config.json`` + ``model.safetensors`` (never pickled).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from torch import nn

from .._files import atomic_dir, check_output
from ..metrics import check_patches, handcrafted_features, pearson_per_gene
from .checkpoint import load_tensors, manifest_entry, read_json, sha256_file

ENCODERS = ("handcrafted", "cnn", "central")
HEADS = ("ridge", "mlp")
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))
EXTRA_WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # candidates of extra_weight="cv"
EXTRA_ALIGN = ("moments",)
# Defaults of the public functions for synthetic rows (tl.predict, tl.run, the benchmark, the CLI), measured on
# her2st (benchmarks/README.md): aligned rows at weight 0.25 gained at every paired fraction < 1, raw rows at
# weight 1 lost at f = 0.25 and 0.5. Predictor.fit itself stays neutral (weight 1, no alignment) for other extra rows.
SYNTHETIC_WEIGHT, SYNTHETIC_ALIGN = 0.25, "moments"
_X_STD_FLOOR, _Y_STD_FLOOR = 1e-6, 1e-3  # smallest feature / target sd used for standardising
MIN_GROUP_ROWS = 5  # group_norm: the fewest patches a group's own feature moments are taken from
# group_norm: each group's feature sd is shrunk toward the training spots' pooled within-group sd, as if that sd had
# been seen on this many extra patches. Unshrunk, a section more homogeneous than the training sections (one tissue
# type, few spots) had its features blown up: on her2st (benchmarks/another_patient.py) half sections of another
# patient lost 0.019 in mean r against no group_norm at f = 1; shrunk they gain 0.002, and the stain correction stays.
GROUP_STD_PRIOR = 100
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_FORMAT = "c2lst-predictor"
PREDICTOR_WEIGHTS = "model.safetensors"


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


class MLPHead(nn.Module):
    """Two-layer perceptron head: ``Linear -> GELU -> Dropout -> Linear``."""

    def __init__(self, n_in: int, n_out: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised features -> standardised targets."""
        return self.net(x)


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


def ridge_per_target(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ridge regression with one penalty per target column, from one SVD.

    Minimises ``sum_i w_i (y_ij - b_j - x_i . c_j)^2 + alpha_j |c_j|^2`` for every target ``j``.

    Returns
    -------
    ``(coef (n_targets, n_features), intercept (n_targets,))``.
    """
    w = np.asarray(w, dtype=np.float64)
    xm, ym = np.average(x, axis=0, weights=w), np.average(y, axis=0, weights=w)
    sw = np.sqrt(w)[:, None]
    u, s, vt = np.linalg.svd((x - xm) * sw, full_matrices=False)
    uty = u.T @ ((y - ym) * sw)  # (k, targets)
    shrink = s[:, None] / (s[:, None] ** 2 + np.asarray(alpha, dtype=np.float64)[None, :])
    coef = (vt.T @ (shrink * uty)).T
    return coef, ym - coef @ xm


def _row_weights(n_real: int, n_extra: int, extra_weight: float) -> np.ndarray:
    """Sample weights of ``n_real`` real rows (1) followed by ``n_extra`` extra rows (``extra_weight``)."""
    return np.concatenate([np.ones(n_real), np.full(n_extra, float(extra_weight))])


def check_extra_options(weight: Any, align: Any, *, cv_possible: bool = True,
                        names: tuple[str, str] = ("extra_weight", "extra_align")) -> None:
    """Raise a ``ValueError`` unless ``weight`` and ``align`` are valid weighing options for extra rows.

    ``weight``: a finite number >= 0, or ``"cv"`` where ``cv_possible`` (the ridge head on a frozen encoder);
    ``align``: ``None`` or one of :data:`EXTRA_ALIGN`. ``names`` are the parameter names used in the message (the
    public functions call them ``synthetic_weight``/``synthetic_align``).
    """
    w_name, a_name = names
    if isinstance(weight, str):
        if weight != "cv":
            raise ValueError(f"`{w_name}` must be a number >= 0 or 'cv', got {weight!r}.")
        if not cv_possible:
            raise ValueError(f"{w_name}='cv' needs the ridge head on a frozen encoder; pass a number, or use "
                             "head='ridge' with encoder='handcrafted'/'central'/a checkpoint.")
    else:
        try:
            valid = bool(np.isfinite(float(weight)) and float(weight) >= 0)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"`{w_name}` must be a number >= 0 or 'cv', got {weight!r}.")
    if align not in (None, *EXTRA_ALIGN):
        raise ValueError(f"`{a_name}` must be None or one of {EXTRA_ALIGN}, got {align!r}.")


def _check_augment(n_augment: Any, weight: Any, cv_weight: bool) -> int:
    """Check ``fit``'s ``n_augment`` / ``augment_weight`` and return the number of copies."""
    if isinstance(n_augment, bool) or not isinstance(n_augment, (int, np.integer)) or n_augment < 0:
        raise ValueError(f"`n_augment` must be a whole number of copies >= 0, got {n_augment!r}.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) or not 0 <= float(weight) < np.inf:
        raise ValueError(f"`augment_weight` must be a finite number >= 0, got {weight!r}.")
    if n_augment and cv_weight:
        raise ValueError("extra_weight='cv' with augmented rows is not supported: the inner folds would have to leave "
                         "out each held-out group's augmented copies too. Pass a fixed `extra_weight`, or n_augment=0.")
    return int(n_augment)


def _check_groups(groups: np.ndarray | None, extra_groups: np.ndarray | None, n_real: int,
                  n_extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Check and return the real and extra rows' groups of ``extra_weight="cv"``."""
    if groups is None or extra_groups is None:
        raise ValueError("extra_weight='cv' needs `groups` (one per real row, e.g. its section) and "
                         "`extra_groups` (the group each extra row was derived from).")
    g_real, g_extra = np.asarray(groups), np.asarray(extra_groups)
    if g_real.shape != (n_real,) or g_extra.shape != (n_extra,):
        raise ValueError(f"`groups` must have one label per real row ({n_real}) and `extra_groups` one per extra "
                         f"row ({n_extra}); got {g_real.shape} and {g_extra.shape}.")
    if len(np.unique(g_real)) < 2:
        raise ValueError("extra_weight='cv' needs at least two groups of real rows (leave-one-group-out); pass "
                         "a fixed weight instead.")
    return g_real, g_extra


def _moments(a: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (at least ``floor``) of ``a``."""
    return a.mean(axis=0), np.maximum(a.std(axis=0), floor)


def _standardise_extra(f_extra: np.ndarray, mean: np.ndarray, std: np.ndarray, align: str | None) -> np.ndarray:
    """Extra rows' features on the real rows' standardised scale (``align="moments"``: on their own moments)."""
    if align is None or len(f_extra) < 2:
        return (f_extra - mean) / std
    own_mean, own_std = _moments(f_extra, _X_STD_FLOOR)
    return (f_extra - own_mean) / own_std


def _group_labels(groups: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """Return ``groups`` as an ``(n,)`` string array (``None``: one group), for ``group_norm``."""
    if groups is None:
        return np.zeros(n, dtype="<U1")
    g = np.asarray(groups).astype(str)
    if g.shape != (n,):
        raise ValueError(f"`{what}` must have one label per row ({n}), got shape {g.shape}.")
    return g


def _pooled_group_std(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Feature sd of the rows ``f`` after centring each group on its own mean (``group_norm``'s shrinkage target)."""
    centred = f.copy()
    for label in np.unique(g):
        centred[g == label] -= f[g == label].mean(axis=0)
    return np.maximum(centred.std(axis=0), _X_STD_FLOOR)


def _standardise_per_group(f: np.ndarray, g: np.ndarray, what: str, pooled_std: np.ndarray | None) -> np.ndarray:
    """Each group's rows centred on the group's mean and divided by its sd shrunk toward ``pooled_std``.

    A group of ``n`` rows with feature sd ``s`` is scaled by ``sqrt((n s² + k p²) / (n + k))``, ``p = pooled_std``
    and ``k =`` :data:`GROUP_STD_PRIOR` (``group_norm``); ``pooled_std=None`` (predictors saved before the
    shrinkage) divides by ``s``.
    """
    out = np.empty_like(f)
    for label in np.unique(g):
        rows = g == label
        if rows.sum() < MIN_GROUP_ROWS:
            raise ValueError(f"group {label!r} of the {what} has {int(rows.sum())} patches; group_norm standardises "
                             f"each group on its own patches and needs at least {MIN_GROUP_ROWS}. Pass whole sections "
                             "(or slides), or merge small groups.")
        m, sd = _moments(f[rows], _X_STD_FLOOR)
        if pooled_std is not None:
            n = rows.sum()
            sd = np.sqrt((n * sd**2 + GROUP_STD_PRIOR * pooled_std**2) / (n + GROUP_STD_PRIOR))
        out[rows] = (f[rows] - m) / sd
    return out


def _fold_rows(x_real: np.ndarray, z_real: np.ndarray, x_extra: np.ndarray, z_extra: np.ndarray, tr: np.ndarray,
               va: np.ndarray, etr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return an inner CV fold of rows standardised beforehand (``group_norm``): the rows the masks select."""
    return x_real[tr], z_real[tr], x_extra[etr], z_extra[etr], x_real[va], z_real[va]


def _restandardised_fold(f_real: np.ndarray, y: np.ndarray, f_extra: np.ndarray, y_extra: np.ndarray,
                         align: str | None, tr: np.ndarray, va: np.ndarray, etr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return an inner CV fold standardised on its own real training rows (features and targets)."""
    m, s = _moments(f_real[tr], _X_STD_FLOOR)
    ym, ys = _moments(y[tr], _Y_STD_FLOOR)
    return ((f_real[tr] - m) / s, (y[tr] - ym) / ys, _standardise_extra(f_extra[etr], m, s, align),
            (y_extra[etr] - ym) / ys, (f_real[va] - m) / s, y[va])


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


class Predictor:
    """Patch encoder + regression head predicting log-normalised expression of a gene panel.

    Parameters
    ----------
    encoder
        ``"handcrafted"``, ``"cnn"``, ``"central"``, the path of a ResNet ``.safetensors`` checkpoint, a
        :class:`ResNetEncoder` or a feature callable.
    handcrafted
        Append handcrafted features to a learned encoder's (``True``), or not (``False``); a callable is used
        in place of :func:`c2lst.metrics.handcrafted_features` (e.g. a cached version). ``None``: ``True``
        for frozen encoders, ``False`` for ``"cnn"``.
    head
        ``"ridge"`` or ``"mlp"``.
    genes
        Names of the predicted genes, in target-column order (stored with the model).
    central
        Model with a ``features`` method; required for ``encoder="central"``.
    central_t
        Diffusion timestep at which central features are read.
    seed
        Seed of every random choice (initialisation, batches, mixup).
    epochs, batch_size, lr, weight_decay
        Optimisation of the CNN encoder and of the MLP head.
    cnn_width, feat_dim
        Size of the CNN encoder.
    hidden
        Hidden units of the MLP head.
    alphas
        Ridge penalties searched (per gene) by leave-one-out CV on the real rows.
    mixup_alpha
        Beta(``mixup_alpha``, ``mixup_alpha``) mixing weights of feature-space mixup rows.
    batch_features
        Batch size when encoding patches with a network.
    group_norm
        Standardise each group's features (e.g. each section's or slide's) on that group's own patches, and centre
        the training targets per group, so the head learns how expression varies *within* a section from how the
        tissue varies within it. This removes between-slide shifts in stain and texture. Each group's feature sd is
        shrunk toward the training spots' pooled within-group sd (weight :data:`GROUP_STD_PRIOR` patches against the
        group's own), so a section more homogeneous than the training ones (one tissue type, few spots) is not
        blown up. Groups are given to :meth:`fit` (``groups``, ``extra_groups``) and :meth:`predict` (``groups``;
        ``None``: all patches are one group, e.g. one new slide); each needs at least :data:`MIN_GROUP_ROWS`
        patches. Predictions are centred on the training mean. Frozen encoders only; extra rows are always
        standardised on their own group's moments (``extra_align`` has no further effect). ``extra_weight="cv"``
        holds out one group at a time.
    """

    def __init__(self, *, encoder: str | Path | ResNetEncoder | Callable[[np.ndarray], np.ndarray] = "cnn",
                 handcrafted: bool | Callable[[np.ndarray], np.ndarray] | None = None, head: str = "ridge",
                 genes: list[str] | tuple[str, ...] | None = None, central: FeatureModel | None = None,
                 central_t: int = 50, seed: int = 0, epochs: int = 30, batch_size: int = 32, lr: float = 2e-3,
                 weight_decay: float = 1e-4, cnn_width: int = 16, feat_dim: int = 64, hidden: int = 256,
                 alphas: tuple[float, ...] = RIDGE_ALPHAS, mixup_alpha: float = 0.4, batch_features: int = 64,
                 group_norm: bool = False) -> None:
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; use one of {HEADS}.")
        if encoder == "central" and (central is None or not callable(getattr(central, "features", None))):
            raise ValueError("encoder='central' needs `central=`, a model with a features(patches) method "
                             "(a c2lst CentralModel); or choose encoder='cnn'/'handcrafted'.")
        if int(epochs) < 1 or int(batch_size) < 1:
            raise ValueError(f"`epochs` and `batch_size` must be >= 1, got {epochs} and {batch_size}.")
        self.resnet: ResNetEncoder | None = None
        self.encoder_path: str | None = None
        self.encoder_fn = encoder if callable(encoder) and not isinstance(encoder, nn.Module) else None
        if isinstance(encoder, ResNetEncoder):
            self.resnet = encoder.eval()
        elif self.encoder_fn is None and str(encoder) not in ENCODERS:
            self.encoder_path = str(encoder)
            self.resnet = ResNetEncoder.from_state_dict(_load_checkpoint(encoder))
        self.encoder_kind = ("resnet" if self.resnet is not None else "callable" if self.encoder_fn is not None
                             else str(encoder))
        if handcrafted is None:
            handcrafted = self.encoder_kind != "cnn"
        self.handcrafted_fn = (None if self.encoder_kind == "handcrafted" or handcrafted is False
                               else handcrafted if callable(handcrafted) else handcrafted_features)
        if group_norm and self.encoder_kind == "cnn":
            raise ValueError("group_norm needs a frozen encoder ('handcrafted', 'central' or a checkpoint); the 'cnn' "
                             "encoder is trained on the raw patches.")
        self.head_kind = head
        self.genes = list(genes) if genes is not None else None
        self.central = central
        self.hparams: dict[str, Any] = {
            "central_t": int(central_t), "seed": int(seed), "epochs": int(epochs), "batch_size": int(batch_size),
            "lr": float(lr), "weight_decay": float(weight_decay), "cnn_width": int(cnn_width), "feat_dim": int(feat_dim),
            "hidden": int(hidden), "alphas": [float(a) for a in alphas], "mixup_alpha": float(mixup_alpha),
            "batch_features": int(batch_features), "group_norm": bool(group_norm),
        }
        self.cnn: PatchCNN | None = None
        self.mlp: MLPHead | None = None
        self.stats: dict[str, np.ndarray] = {}
        self.fit_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ encoding
    def _net_features(self, net: nn.Module, patches: np.ndarray) -> np.ndarray:
        net.eval()
        bs = self.hparams["batch_features"]
        with torch.no_grad():
            out = [net(_to_tensor(patches[s])).numpy() for s in _batches(len(patches), bs)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def _learned(self, p: np.ndarray) -> np.ndarray:
        if self.encoder_kind == "callable":
            return np.asarray(self.encoder_fn(p), dtype=np.float32).reshape(len(p), -1)
        if self.encoder_kind == "central":
            f = self.central.features(p, t=self.hparams["central_t"], batch_size=self.hparams["batch_features"],
                                      seed=self.hparams["seed"])
            return np.asarray(f, dtype=np.float32).reshape(len(p), -1)
        net = self.cnn if self.encoder_kind == "cnn" else self.resnet
        if net is None:
            raise ValueError("the CNN encoder is not trained yet; call fit() first.")
        return self._net_features(net, p)

    def features(self, patches: np.ndarray) -> np.ndarray:
        """Raw (unstandardised) features ``(n, F)`` float32 of uint8 ``(n, 3, H, W)`` patches."""
        p = check_patches(patches)
        if self.encoder_kind == "handcrafted":
            return handcrafted_features(p)
        learned = self._learned(p)
        if self.handcrafted_fn is None:
            return learned
        return np.concatenate([np.asarray(self.handcrafted_fn(p), dtype=np.float32), learned], axis=1)

    def _train_cnn(self, patches: np.ndarray, z: np.ndarray, weight: np.ndarray) -> None:
        hp = self.hparams
        gen = _seeded(hp["seed"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"])
            cnn = PatchCNN(hp["cnn_width"], hp["feat_dim"])
            probe = nn.Linear(hp["feat_dim"], z.shape[1])
        params = list(cnn.parameters()) + list(probe.parameters())
        opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
        n = len(patches)
        steps = hp["epochs"] * max(1, int(np.ceil(n / hp["batch_size"])))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp["lr"], total_steps=steps, pct_start=0.2)
        zt, wt = torch.from_numpy(z), torch.from_numpy(weight.astype(np.float32))
        cnn.train()
        losses = []
        for _ in range(hp["epochs"]):
            order = torch.randperm(n, generator=gen)
            for s in _batches(n, hp["batch_size"]):
                idx = order[s]
                pred = probe(cnn(_to_tensor(patches[idx.numpy()])))
                loss = (((pred - zt[idx]) ** 2).mean(dim=1) * wt[idx]).sum() / wt[idx].sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
        self.cnn = cnn.eval()
        self.fit_info["cnn_final_loss"] = float(np.mean(losses[-max(1, len(losses) // 10):]))

    # ------------------------------------------------------------------ heads
    def _ridge_alpha(self, x_real: np.ndarray, z_real: np.ndarray) -> np.ndarray:
        """One ridge penalty per target by efficient leave-one-out CV on the real rows (the largest if < 3 rows)."""
        from sklearn.linear_model import RidgeCV

        alphas = np.asarray(self.hparams["alphas"])
        if len(x_real) < 3:
            return np.full(z_real.shape[1], alphas.max())
        cv = RidgeCV(alphas=alphas, alpha_per_target=True).fit(x_real, z_real)
        return np.broadcast_to(np.asarray(cv.alpha_, dtype=np.float64), (z_real.shape[1],)).copy()

    def _fit_ridge(self, x_real: np.ndarray, z_real: np.ndarray, x_all: np.ndarray, z_all: np.ndarray,
                   w_all: np.ndarray) -> None:
        alpha = self._ridge_alpha(x_real, z_real)
        coef, intercept = ridge_per_target(x_all, z_all, w_all, alpha)
        self.stats.update({"ridge_coef": coef, "ridge_intercept": intercept, "ridge_alpha": alpha})

    def _fit_mlp(self, x: np.ndarray, z: np.ndarray, w: np.ndarray) -> None:
        hp = self.hparams
        gen = _seeded(hp["seed"] + 1)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"] + 1)
            mlp = MLPHead(x.shape[1], z.shape[1], hp["hidden"])
        opt = torch.optim.AdamW(mlp.parameters(), lr=hp["lr"], weight_decay=max(hp["weight_decay"], 1e-2))
        xt, zt, wt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(z), torch.from_numpy(w.astype(np.float32))
        n = len(x)
        mlp.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hp["seed"] + 2)  # dropout masks
            for _ in range(max(hp["epochs"], 100)):
                order = torch.randperm(n, generator=gen)
                for s in _batches(n, hp["batch_size"]):
                    idx = order[s]
                    loss = (((mlp(xt[idx]) - zt[idx]) ** 2).mean(dim=1) * wt[idx]).sum() / wt[idx].sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        self.mlp = mlp.eval()

    def _head(self, x: np.ndarray) -> np.ndarray:
        if self.head_kind == "ridge":
            return x @ self.stats["ridge_coef"].T + self.stats["ridge_intercept"]
        with torch.no_grad():
            return self.mlp(torch.from_numpy(x.astype(np.float32))).numpy()

    # ------------------------------------------------------------------ public API
    def fit(self, patches: np.ndarray, targets: np.ndarray, *, extra_patches: np.ndarray | None = None,
            extra_targets: np.ndarray | None = None, extra_weight: float | str = 1.0, extra_align: str | None = None,
            groups: np.ndarray | None = None, extra_groups: np.ndarray | None = None, n_mixup: int = 0,
            n_augment: int = 0, augment_weight: float = 1.0) -> Predictor:
        """Fit the encoder (``"cnn"``) and the head.

        Parameters
        ----------
        patches
            ``(n, 3, H, W)`` uint8 patches of the real training spots.
        targets
            ``(n, G)`` log-normalised expression of the panel genes at those spots.
        extra_patches, extra_targets
            Additional training pairs (synthetic or augmented patches); never used for statistics or the
            ridge penalty.
        extra_weight
            Sample weight of each extra row (real rows weigh 1), or ``"cv"``: the weight among
            :data:`EXTRA_WEIGHTS` (0 included) with the best mean per-gene Pearson r in leave-one-group-out
            cross-validation on the real rows (ridge head; needs ``groups`` and ``extra_groups``). In each
            inner fold the extra rows of the held-out group are left out, so no extra row derived from a
            validation spot is trained on.
        extra_align
            ``"moments"``: standardise the extra rows' features on their own mean and standard deviation
            (instead of the real rows'), which moves them onto the real rows' distribution feature by
            feature. This removes a generator's global shift (e.g. fewer nuclei in every synthetic tile) and
            keeps how features vary with expression among the extra rows. ``None``: no alignment.
        groups, extra_groups
            Group (e.g. section) of each real row and of each extra row, for ``extra_weight="cv"`` and
            ``group_norm`` (where ``None`` makes all rows one group).
        n_mixup
            Number of feature-space mixup rows added to the head's training set: random pairs of real
            training spots, features and expression mixed with the same Beta weight.
        n_augment
            Classic augmentation: ``n_augment`` flip/rot90/HED-stain-jittered copies of each real training patch
            (:func:`augment_patches`, seeded by ``seed``) with that spot's expression, added as their own set of
            rows next to the extra rows. They are standardised like real rows (with ``group_norm``: per group, on
            their own moments), so stacking them with synthetic rows keeps each set's alignment separate.
        augment_weight
            Sample weight of each augmented row (a fixed weight; not with ``extra_weight="cv"``).

        Returns
        -------
        ``self``.
        """
        p = check_patches(patches)
        y = np.asarray(targets, dtype=np.float32)
        if y.ndim != 2 or len(y) != len(p):
            raise ValueError(f"targets {y.shape} must be (n_patches={len(p)}, n_genes).")
        if len(p) < 2:
            raise ValueError(f"need at least 2 training spots to fit a predictor, got {len(p)}; add training spots.")
        if not np.isfinite(y).all():
            raise ValueError("training targets contain NaN or infinite values.")
        if self.genes is not None and len(self.genes) != y.shape[1]:
            raise ValueError(f"{y.shape[1]} target columns but {len(self.genes)} genes were given.")
        if (extra_patches is None) != (extra_targets is None):
            raise ValueError("pass both `extra_patches` and `extra_targets`, or neither.")
        if extra_patches is not None:
            ep = check_patches(extra_patches, "extra_patches")
            ey = np.asarray(extra_targets, dtype=np.float32)
            if ey.shape != (len(ep), y.shape[1]):
                raise ValueError(f"extra targets {ey.shape} must be (n_extra={len(ep)}, {y.shape[1]}) in the same gene order.")
            if ep.shape[2:] != p.shape[2:]:
                raise ValueError(f"extra patches are {ep.shape[2:]} px, training patches {p.shape[2:]}; extract both at one size.")
        else:
            ep, ey = p[:0], y[:0]
        check_extra_options(extra_weight, extra_align, cv_possible=self.head_kind == "ridge" and self.encoder_kind != "cnn")
        cv_weight = extra_weight == "cv"
        n_augment = _check_augment(n_augment, augment_weight, cv_weight)
        ap, a_src = (augment_patches(p, n_copies=n_augment, seed=self.hparams["seed"]) if n_augment
                     else (p[:0], np.zeros(0, dtype=np.int64)))
        group_norm = self.hparams["group_norm"]
        if cv_weight:
            g_real, g_extra = _check_groups(groups, extra_groups, len(p), len(ep))
        if group_norm:
            g_real = _group_labels(groups, len(p), "groups")
            if len(ep) and (groups is None) != (extra_groups is None):
                raise ValueError("group_norm with extra rows: pass both `groups` and `extra_groups` (the group each "
                                 "extra row comes from), or neither (one group).")
            g_extra = _group_labels(extra_groups, len(ep), "extra_groups")
            unknown = sorted(set(g_extra) - set(g_real))
            if unknown:
                raise ValueError(f"extra rows of groups {unknown[:3]} have no real rows; group_norm centres each extra "
                                 "row's target on its group's real rows.")
        y_mean, y_std = _moments(y, _Y_STD_FLOOR)
        self.stats = {"y_mean": y_mean.astype(np.float64), "y_std": y_std.astype(np.float64)}
        z_real, z_extra = (y - y_mean) / y_std, (ey - y_mean) / y_std
        all_p = np.concatenate([p, ep, ap]) if len(ep) or len(ap) else p
        if self.encoder_kind == "cnn":
            self._train_cnn(all_p, np.concatenate([z_real, z_extra, z_real[a_src]]).astype(np.float32),
                            np.concatenate([_row_weights(len(p), len(ep), extra_weight),
                                            np.full(len(ap), float(augment_weight))]))
        f_all = self.features(all_p).astype(np.float64)
        f_real, f_extra, f_aug = f_all[: len(p)], f_all[len(p): len(p) + len(ep)], f_all[len(p) + len(ep):]
        self.stats["x_mean"], self.stats["x_std"] = _moments(f_real, _X_STD_FLOOR)
        if group_norm:
            self.stats["x_group_std"] = pooled = _pooled_group_std(f_real, g_real)
            x_real = _standardise_per_group(f_real, g_real, "training spots", pooled)
            x_extra = _standardise_per_group(f_extra, g_extra, "extra rows", pooled) if len(ep) else f_extra
            centre = {g: z_real[g_real == g].mean(axis=0) for g in np.unique(g_real)}
            z_real = z_real - np.stack([centre[g] for g in g_real])
            z_extra = z_extra - (np.stack([centre[g] for g in g_extra]) if len(ep) else 0.0)
            x_aug = _standardise_per_group(f_aug, g_real[a_src], "augmented rows", pooled) if len(ap) else f_aug
        else:
            x_real = (f_real - self.stats["x_mean"]) / self.stats["x_std"]
            x_extra = _standardise_extra(f_extra, self.stats["x_mean"], self.stats["x_std"], extra_align)
            x_aug = (f_aug - self.stats["x_mean"]) / self.stats["x_std"]
        x_all = np.concatenate([x_real, x_extra, x_aug])
        z_all = np.concatenate([z_real, z_extra, z_real[a_src]]).astype(np.float32)
        if cv_weight:
            # with group_norm each group is standardised on its own rows, the same in every inner fold
            inner_fold = (partial(_fold_rows, x_real, z_real, x_extra, z_extra) if group_norm
                          else partial(_restandardised_fold, f_real, y, f_extra, ey, extra_align))
            scores = self._cv_scores(g_real, g_extra, inner_fold)
            extra_weight = max(EXTRA_WEIGHTS, key=lambda w: (scores[w], -w))  # ties: the smaller weight
            self.fit_info["extra_weight_cv"] = {str(w): float(v) for w, v in scores.items()}
        w_all = np.concatenate([_row_weights(len(p), len(ep), extra_weight), np.full(len(ap), float(augment_weight))])
        if n_mixup > 0:
            rng = np.random.default_rng(self.hparams["seed"] + 3)
            i, j = rng.integers(0, len(p), n_mixup), rng.integers(0, len(p), n_mixup)
            lam = rng.beta(self.hparams["mixup_alpha"], self.hparams["mixup_alpha"], n_mixup)[:, None]
            x_all = np.concatenate([x_all, lam * x_real[i] + (1 - lam) * x_real[j]])
            z_all = np.concatenate([z_all, (lam * z_real[i] + (1 - lam) * z_real[j]).astype(np.float32)])
            w_all = np.concatenate([w_all, np.ones(n_mixup)])
        if self.head_kind == "ridge":
            self._fit_ridge(x_real, z_real, x_all, z_all, w_all)
        else:
            self._fit_mlp(x_all, z_all, w_all)
        self.fit_info.update({"patch_px": int(p.shape[-1]), "n_real": len(p), "n_extra": len(ep), "n_mixup": int(n_mixup),
                              "n_augmented": len(ap), "augment_weight": float(augment_weight),
                              "n_features": x_all.shape[1], "extra_weight": float(extra_weight),
                              "extra_align": "groups" if group_norm and len(ep) else extra_align})
        if group_norm:
            self.fit_info["n_groups"] = int(len(np.unique(g_real)))
        return self

    def _cv_scores(self, g_real: np.ndarray, g_extra: np.ndarray,
                   inner_fold: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
                   ) -> dict[float, float]:
        """Mean over held-out groups of the mean per-gene Pearson r, for each weight in :data:`EXTRA_WEIGHTS`.

        ``inner_fold(train, validation, extra_train)`` (row masks) returns the inner fold's standardised
        ``(x_train, z_train, x_extra, z_extra, x_validation, y_validation)``; its ridge penalties come from its real
        training rows, once for all weights.
        """
        scores: dict[float, list[float]] = {w: [] for w in EXTRA_WEIGHTS}
        for g in np.unique(g_real):
            tr, va, etr = g_real != g, g_real == g, g_extra != g
            if tr.sum() < 3 or va.sum() < 3:
                continue
            x_tr, z_tr, x_e, z_e, x_va, y_va = inner_fold(tr, va, etr)
            alpha = self._ridge_alpha(x_tr, z_tr)
            for weight in EXTRA_WEIGHTS:
                w = _row_weights(len(x_tr), len(x_e), weight)
                coef, intercept = ridge_per_target(np.concatenate([x_tr, x_e]), np.concatenate([z_tr, z_e]), w, alpha)
                scores[weight].append(np.nanmean(pearson_per_gene(y_va, x_va @ coef.T + intercept)))
        if not scores[EXTRA_WEIGHTS[0]]:
            raise ValueError("extra_weight='cv' found no group with >= 3 validation and >= 3 training rows; pass a "
                             "fixed weight instead.")
        return {w: float(np.mean(v)) for w, v in scores.items()}

    def predict(self, patches: np.ndarray, *, groups: np.ndarray | None = None) -> np.ndarray:
        """Predicted log-normalised expression ``(n, G)`` float32 of ``(n, 3, H, W)`` uint8 patches.

        ``groups``: the group (section, slide) of each patch, used with ``group_norm`` only (``None``: one group).
        """
        if "x_mean" not in self.stats:
            raise ValueError("the predictor is not fitted; call fit() or Predictor.load().")
        f = self.features(patches).astype(np.float64)
        if f.shape[1] != len(self.stats["x_mean"]):
            raise ValueError(f"encoder gives {f.shape[1]} features, the head expects {len(self.stats['x_mean'])}.")
        if self.hparams["group_norm"]:
            x = _standardise_per_group(f, _group_labels(groups, len(f), "groups"), "patches to predict",
                                       self.stats.get("x_group_std"))
        else:
            x = (f - self.stats["x_mean"]) / self.stats["x_std"]
        z = self._head(x)
        return (z * self.stats["y_std"] + self.stats["y_mean"]).astype(np.float32)

    @property
    def params(self) -> dict[str, Any]:
        """JSON-safe description: encoder, head, genes, hyperparameters, fit summary."""
        central_id = getattr(self.central, "identity", None)
        return {
            "format": _FORMAT, "encoder": self.encoder_kind, "encoder_path": self.encoder_path, "head": self.head_kind,
            "handcrafted": self.handcrafted_fn is not None,
            "genes": self.genes, **self.hparams, "fit": dict(self.fit_info),
            "central_identity": central_id() if callable(central_id) else None,
        }

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to the directory ``path`` (atomically).

        Returns
        -------
        The directory written.
        """
        if "x_mean" not in self.stats:
            raise ValueError("nothing to save: the predictor is not fitted.")
        if self.encoder_kind == "callable":
            raise ValueError("a predictor with a callable encoder cannot be saved; use a named encoder or a checkpoint.")
        target = check_output(path, overwrite=overwrite, what="predictor directory")
        tensors = {f"stats.{k}": np.ascontiguousarray(v) for k, v in self.stats.items()}
        for prefix, net in (("cnn.", self.cnn), ("resnet.", self.resnet), ("mlp.", self.mlp)):
            if net is not None:
                tensors.update({prefix + k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()})
        with atomic_dir(target, kind="predictor") as tmp:
            save_numpy(tensors, str(tmp / PREDICTOR_WEIGHTS))
            config = self.params | {"files_sha256": {PREDICTOR_WEIGHTS: sha256_file(tmp / PREDICTOR_WEIGHTS)}}
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
        return target

    @classmethod
    def load(cls, path: str | Path, *, central: FeatureModel | None = None) -> Predictor:
        """Read a predictor written by :meth:`save` (weights from safetensors, nothing unpickled).

        Parameters
        ----------
        path
            Directory holding ``config.json`` and ``model.safetensors``.
        central
            The central model, required when the predictor uses ``encoder="central"``; its identity is checked.
        """
        d = Path(path)
        if not (d / "config.json").exists() or not (d / PREDICTOR_WEIGHTS).exists():
            raise ValueError(f"{d} is not a saved predictor (needs config.json and {PREDICTOR_WEIGHTS}); pass a "
                             "folder written by Predictor.save or `c2lst predict --save-model`.")
        cfg = read_json(d / "config.json", what="predictor")
        if cfg.get("format") != _FORMAT:
            raise ValueError(f"{d}/config.json is not a c2lst predictor config; pass a folder written by "
                             "Predictor.save or `c2lst predict --save-model`.")
        files = manifest_entry(cfg, "files_sha256", d / "config.json", what="predictor")
        sha = manifest_entry(files, PREDICTOR_WEIGHTS, d / "config.json", what="predictor")
        keys = ("central_t", "seed", "epochs", "batch_size", "lr", "weight_decay", "cnn_width", "feat_dim", "hidden",
                "alphas", "mixup_alpha", "batch_features", "encoder", "encoder_path", "head", "genes")
        for key in keys:
            manifest_entry(cfg, key, d / "config.json", what="predictor")
        if cfg["encoder"] == "central" and cfg.get("central_identity") and central is not None:
            got = central.identity() if callable(getattr(central, "identity", None)) else None
            if got != cfg["central_identity"]:
                raise ValueError("the central model passed is not the one this predictor was fitted with; pass that model.")
        tensors = {k: v.numpy() for k, v in load_tensors(d / PREDICTOR_WEIGHTS, sha256=sha, what="predictor").items()}
        kwargs = {k: cfg[k] for k in keys[:12]}
        kwargs["alphas"] = tuple(kwargs["alphas"])
        kwargs["group_norm"] = bool(cfg.get("group_norm", False))  # absent in predictors saved before it existed

        def sub(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix):]: torch.from_numpy(v) for k, v in tensors.items() if k.startswith(prefix)}

        encoder = ResNetEncoder.from_state_dict(sub("resnet.")) if cfg["encoder"] == "resnet" else cfg["encoder"]
        obj = cls(encoder=encoder, handcrafted=bool(cfg.get("handcrafted", False)), head=cfg["head"], genes=cfg["genes"],
                  central=central, **kwargs)
        obj.encoder_path = cfg["encoder_path"]
        obj.stats = {k[6:]: v for k, v in tensors.items() if k.startswith("stats.")}

        if cfg["encoder"] == "cnn":
            obj.cnn = PatchCNN(cfg["cnn_width"], cfg["feat_dim"])
            obj.cnn.load_state_dict(sub("cnn."))
            obj.cnn.eval()
        if cfg["head"] == "mlp":
            obj.mlp = MLPHead(len(obj.stats["x_mean"]), len(obj.stats["y_mean"]), cfg["hidden"])
            obj.mlp.load_state_dict(sub("mlp."))
            obj.mlp.eval()
        obj.fit_info = dict(cfg.get("fit", {}))
        return obj


def augment_patches(patches: np.ndarray, *, n_copies: int = 1, stain_sigma: float = 0.05,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classic augmentation: random flip + rot90 and HED stain jitter of each patch, ``n_copies`` times.

    Stain jitter scales and shifts each haematoxylin/eosin/DAB optical-density channel by
    ``1 + N(0, stain_sigma)`` and ``N(0, stain_sigma / 5)`` (Tellez et al. 2018).

    Returns
    -------
    ``(augmented patches (n * n_copies, 3, H, W) uint8, source index of each row)``.
    """
    from skimage.color import hed2rgb, rgb2hed

    p = check_patches(patches)
    rng = np.random.default_rng(seed)
    out, src = [], []
    for _ in range(int(n_copies)):
        for i, patch in enumerate(p):
            img = np.moveaxis(patch, 0, -1)
            img = np.rot90(img, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                img = img[:, ::-1]
            hed = rgb2hed(img)
            hed = hed * (1 + rng.normal(0, stain_sigma, 3)) + rng.normal(0, stain_sigma / 5, 3)
            rgb = np.clip(hed2rgb(hed) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            out.append(np.moveaxis(rgb, -1, 0))
            src.append(i)
    if not out:
        return p[:0].copy(), np.zeros(0, dtype=np.int64)
    return np.stack(out), np.asarray(src, dtype=np.int64)

