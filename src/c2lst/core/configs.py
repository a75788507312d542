"""Named model configurations of the central latent-diffusion model and its local adapter.

A configuration fixes the tile geometry (pixels and microns per pixel), the autoencoder and UNet
architectures, the noise schedule, the default optimisation settings of pretraining and adaptation and
the size of the gene-conditioned modulation. Three are shipped:

``"tiny"``
    For tests and smoke runs: 32 px tiles, 8x8x4 latents, a two-level 32-channel UNet. Twenty
    sampling steps take a fraction of a second on one thread.
``"cpu"``
    The default: 64 px tiles at 1.5625 µm/px (100 µm, one legacy-ST spot), 16x16x4 latents, a
    (64, 128, 128) UNet. The default 3,000 steps (600 autoencoder + 2,400 UNet, batch 32) give
    recognisable H&E texture (lymphocyte-dense, stroma, fat, right palette); on 2 free CPU cores that
    is roughly 30-40 minutes, and H&E colours/textures start to appear after ~20 minutes.
``"gpu"``
    Larger autoencoder and UNet with attention, trained in bf16 on an accelerator.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DiffusionConfig:
    """Architecture and default optimisation settings of a central model and its adapter.

    Attributes
    ----------
    name
        Configuration name (``"tiny"``, ``"cpu"``, ``"gpu"``).
    tile_px
        Side of the square RGB tiles the model sees, in pixels.
    mpp
        Microns per pixel of those tiles.
    ae_channels
        Autoencoder widths, one per downsampling (``tile_px / 2**len(ae_channels)`` = latent side).
    latent_channels
        Channels of the latent the UNet diffuses.
    ae_kl_weight, ae_grad_weight
        Weights of the KL term and of the image-gradient L1 term of the autoencoder loss (pixel L1 has 1).
    unet_channels, unet_layers_per_block, unet_attention
        UNet widths per resolution level, ResNet layers per level, and whether each level has attention.
    num_train_timesteps, beta_schedule, beta_start, beta_end
        DDPM noise schedule of the central model.
    ae_fraction
        Share of the pretraining steps spent on the autoencoder (phase 1); the rest trains the UNet.
    steps, batch_size, lr, ema_decay, warmup_steps
        Default pretraining steps (both phases), batch size, AdamW learning rate, EMA decay, linear warm-up.
    mixed_precision
        Default mixed precision of pretraining (``"no"`` or ``"bf16"``).
    n_top_genes
        Default gene-panel size when adaptation has to choose a panel.
    cond_dim, gene_hidden
        Gene-encoder MLP widths: panel -> ``gene_hidden`` -> ``cond_dim`` embedding that drives the
        zero-initialised modulation.
    adapt_steps, adapt_batch_size, adapt_lr
        Default adaptation settings.
    """

    name: str
    tile_px: int
    mpp: float
    ae_channels: tuple[int, ...]
    unet_channels: tuple[int, ...]
    unet_layers_per_block: int
    unet_attention: tuple[bool, ...]
    steps: int
    batch_size: int
    lr: float
    n_top_genes: int
    cond_dim: int
    gene_hidden: int
    adapt_steps: int
    adapt_batch_size: int
    adapt_lr: float
    latent_channels: int = 4
    ae_kl_weight: float = 1e-4
    ae_grad_weight: float = 1.0
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.0015
    beta_end: float = 0.0155
    ae_fraction: float = 0.3
    ema_decay: float = 0.999
    warmup_steps: int = 100
    mixed_precision: str = "no"

    @property
    def latent_px(self) -> int:
        """Side of the latent grid."""
        return self.tile_px // 2 ** len(self.ae_channels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dictionary (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiffusionConfig:
        """Inverse of :meth:`to_dict`."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown configuration fields {unknown}: the model was written by another c2lst version.")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    def scheduler_config(self) -> dict[str, Any]:
        """Keyword arguments of the training ``DDPMScheduler``."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": "epsilon",
            "clip_sample": False,
        }


CONFIGS: dict[str, DiffusionConfig] = {
    "tiny": DiffusionConfig(
        name="tiny", tile_px=32, mpp=3.125, ae_channels=(16, 32), unet_channels=(32, 32),
        unet_layers_per_block=1, unet_attention=(False, False), steps=200, batch_size=16, lr=1e-3,
        n_top_genes=64, cond_dim=8, gene_hidden=16, adapt_steps=100, adapt_batch_size=16, adapt_lr=2e-3,
        warmup_steps=5,
    ),
    "cpu": DiffusionConfig(
        name="cpu", tile_px=64, mpp=1.5625, ae_channels=(16, 64), unet_channels=(64, 128, 128),
        unet_layers_per_block=2, unet_attention=(False, False, True), steps=3000, batch_size=32, lr=1e-3,
        n_top_genes=256, cond_dim=24, gene_hidden=64, adapt_steps=600, adapt_batch_size=32, adapt_lr=1e-3,
        ae_fraction=0.2,
    ),
    "gpu": DiffusionConfig(
        name="gpu", tile_px=64, mpp=1.5625, ae_channels=(64, 128), unet_channels=(128, 256, 384),
        unet_layers_per_block=2, unet_attention=(False, True, True), steps=50000, batch_size=128, lr=2e-4,
        n_top_genes=256, cond_dim=64, gene_hidden=128, adapt_steps=2000, adapt_batch_size=64, adapt_lr=1e-3,
        mixed_precision="bf16", warmup_steps=500,
    ),
}


def get_config(config: str | DiffusionConfig) -> DiffusionConfig:
    """Resolve a configuration name (or pass a :class:`DiffusionConfig` through)."""
    if isinstance(config, DiffusionConfig):
        return config
    if config not in CONFIGS:
        raise ValueError(f"unknown model configuration {config!r}; choose one of {sorted(CONFIGS)}.")
    return CONFIGS[config]
