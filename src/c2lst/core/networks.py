"""Builders of the central networks from a :class:`~c2lst.core.configs.DiffusionConfig`, and UNet features."""
from __future__ import annotations

import torch
from diffusers import UNet2DModel

from .autoencoder import TileAutoencoder
from .configs import DiffusionConfig


def build_autoencoder(config: DiffusionConfig) -> TileAutoencoder:
    """Untrained autoencoder of ``config``."""
    return TileAutoencoder(in_channels=3, latent_channels=config.latent_channels,
                           block_out_channels=tuple(config.ae_channels))


def build_unet(config: DiffusionConfig) -> UNet2DModel:
    """Untrained latent UNet of ``config`` (epsilon prediction on ``latent_px`` x ``latent_px`` latents)."""
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in config.unet_attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.unet_attention))
    groups = 32 if min(config.unet_channels) >= 64 else 8
    return UNet2DModel(
        sample_size=config.latent_px, in_channels=config.latent_channels, out_channels=config.latent_channels,
        block_out_channels=tuple(config.unet_channels), layers_per_block=config.unet_layers_per_block,
        down_block_types=down, up_block_types=up, norm_num_groups=groups, attention_head_dim=32,
        add_attention=any(config.unet_attention),
    )


def unet_features(unet: UNet2DModel, sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Global-average-pooled outputs of every down block and of the mid block, concatenated.

    Parameters
    ----------
    unet
        A ``UNet2DModel``.
    sample
        Noisy latents ``(n, C, h, w)``.
    timesteps
        Integer timesteps ``(n,)``.

    Returns
    -------
    ``(n, sum(block_out_channels) + block_out_channels[-1])`` features.
    """
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=sample.dtype))
    h = unet.conv_in(sample)
    pooled = []
    for block in unet.down_blocks:
        h, _ = block(hidden_states=h, temb=emb)
        pooled.append(h.mean(dim=(2, 3)))
    if unet.mid_block is not None:
        h = unet.mid_block(h, emb)
        pooled.append(h.mean(dim=(2, 3)))
    return torch.cat(pooled, dim=1)
