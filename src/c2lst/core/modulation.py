"""Gene-conditioned, zero-initialised modulation of a frozen central UNet (adaLN-Zero style).

A gene encoder (MLP) maps a standardised expression profile to an embedding ``c``. From ``c``:

- an additive shift of the UNet time embedding (forward hook on ``unet.time_embedding``);
- per-channel FiLM ``h * (1 + scale) + shift`` after each GroupNorm of every ResNet block
  (forward hooks on ``norm1``/``norm2``).

All output projections start at zero, so the adapted model computes exactly what the central model
computes until training moves them. A per-sample ``keep`` mask switches the modulation off for some
samples: condition dropout during training, the unconditional branch of classifier-free guidance.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import UNet2DModel
from diffusers.models.resnet import ResnetBlock2D
from torch import nn


def resnet_norms(unet: UNet2DModel) -> list[nn.GroupNorm]:
    """Return the ``norm1``/``norm2`` GroupNorms of every ResNet block of ``unet``, in module order."""
    norms: list[nn.GroupNorm] = []
    for module in unet.modules():
        if isinstance(module, ResnetBlock2D):
            norms += [module.norm1, module.norm2]
    return norms


def _zero_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class GeneModulation(nn.Module):
    """Gene encoder + zero-initialised projections onto the time embedding and ResNet GroupNorms.

    Parameters
    ----------
    n_genes
        Panel size (input width).
    hidden
        Hidden width of the gene-encoder MLP.
    cond_dim
        Width of the gene embedding.
    time_embed_dim
        Width of the UNet time embedding.
    norm_channels
        Channels of each modulated GroupNorm (see :func:`resnet_norms`).
    """

    def __init__(self, n_genes: int, hidden: int, cond_dim: int, time_embed_dim: int,
                 norm_channels: list[int]) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_genes, hidden), nn.SiLU(), nn.Linear(hidden, cond_dim), nn.SiLU())
        self.time_shift = _zero_linear(cond_dim, time_embed_dim)
        self.film = nn.ModuleList(_zero_linear(cond_dim, 2 * c) for c in norm_channels)

    @classmethod
    def for_unet(cls, unet: UNet2DModel, n_genes: int, *, hidden: int, cond_dim: int) -> GeneModulation:
        """Modulation sized for ``unet``."""
        time_dim = unet.time_embedding.linear_2.out_features
        return cls(n_genes, hidden, cond_dim, time_dim, [n.num_channels for n in resnet_norms(unet)])

    @contextmanager
    def applied(self, unet: UNet2DModel, genes: torch.Tensor, keep: torch.Tensor | None = None) -> Iterator[None]:
        """Within the context, forward passes of ``unet`` on a batch are modulated by ``genes``.

        Parameters
        ----------
        unet
            The central UNet (not modified; hooks are removed on exit).
        genes
            Standardised expression ``(batch, n_genes)``.
        keep
            ``(batch,)`` 0/1 mask; 0 switches the modulation off for that sample (central prediction).
        """
        norms = resnet_norms(unet)
        if len(norms) != len(self.film):
            raise ValueError(f"the modulation was built for {len(self.film)} ResNet norms, the UNet has {len(norms)}.")
        dtype = next(unet.parameters()).dtype
        c = self.encoder(genes.to(dtype))
        gate = torch.ones(len(genes), 1, dtype=c.dtype, device=c.device) if keep is None else keep.to(c).view(-1, 1)
        time_shift = self.time_shift(c) * gate

        def _shift_time(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
            return out + time_shift.to(out.dtype)

        def _film(proj: nn.Linear):
            scale, shift = (proj(c) * gate).chunk(2, dim=1)

            def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
                return out * (1 + scale[:, :, None, None].to(out.dtype)) + shift[:, :, None, None].to(out.dtype)

            return hook

        handles = [unet.time_embedding.register_forward_hook(_shift_time)]
        handles += [norm.register_forward_hook(_film(proj)) for norm, proj in zip(norms, self.film, strict=True)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
