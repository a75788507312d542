"""A small convolutional KL autoencoder mapping RGB tiles to a low-resolution latent grid.

``64x64x3 -> 16x16x4`` for the ``"cpu"`` configuration. Trained with pixel L1 + image-gradient L1 +
a small KL term (:func:`autoencoder_loss`); diffusion then runs on the (scaled) latent means/samples.
Pixels live in ``[-1, 1]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .seeding import randn


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TileAutoencoder(ModelMixin, ConfigMixin):
    """Convolutional VAE: each entry of ``block_out_channels`` adds a ResNet block and a 2x downsampling.

    Parameters
    ----------
    in_channels
        Image channels (3, RGB).
    latent_channels
        Channels of the latent grid.
    block_out_channels
        Encoder widths per level (the decoder mirrors them).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, latent_channels: int = 4,
                 block_out_channels: tuple[int, ...] = (32, 64)) -> None:
        super().__init__()
        chans = list(block_out_channels)
        enc: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1)]
        prev = chans[0]
        for c in chans:
            enc += [_ResBlock(prev, c), nn.Conv2d(c, c, 3, stride=2, padding=1)]
            prev = c
        enc += [_ResBlock(prev, prev), nn.GroupNorm(_groups(prev), prev), nn.SiLU(),
                nn.Conv2d(prev, 2 * latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(latent_channels, prev, 3, padding=1), _ResBlock(prev, prev)]
        for c in reversed(chans):
            dec += [_ResBlock(prev, c), _Upsample(c)]
            prev = c
        dec += [nn.GroupNorm(_groups(prev), prev), nn.SiLU(), nn.Conv2d(prev, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior ``(mean, logvar)`` of images ``x`` in ``[-1, 1]``; logvar clamped to [-30, 20]."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (unclamped, nominally ``[-1, 1]``) from latents ``z``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct ``x`` through a posterior sample; return ``(reconstruction, mean, logvar)``."""
        mean, logvar = self.encode(x)
        noise = randn(mean.shape, generator, like=mean)
        z = mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def autoencoder_loss(x: torch.Tensor, recon: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, *,
                     grad_weight: float, kl_weight: float) -> torch.Tensor:
    """Pixel L1 + ``grad_weight`` * image-gradient L1 + ``kl_weight`` * KL(q(z|x) || N(0, I)) (per element)."""
    l1 = (recon - x).abs().mean()
    (gy, gx), (ry, rx) = _gradients(x), _gradients(recon)
    grad = (gy - ry).abs().mean() + (gx - rx).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()
    return l1 + grad_weight * grad + kl_weight * kl
