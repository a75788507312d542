"""Gene-conditioned, zero-initialised modulation of a frozen central UNet (adaLN-Zero style).

A gene encoder (MLP) maps a standardised expression profile to an embedding ``c``. From ``c``:

- an additive shift of the UNet time embedding (forward hook on ``unet.time_embedding``);
- per-channel FiLM ``h * (1 + scale) + shift`` after each GroupNorm of every ResNet block
  (forward hooks on ``norm1``/``norm2``).

All output projections start at zero, so the adapted model computes exactly what the central model
computes until training moves them. A per-sample ``keep`` mask switches the modulation off for some
samples: condition dropout during training, the unconditional branch of classifier-free guidance.

With ``local=True`` the modulation also holds an unconditional local component: a learned shift of the
time embedding and a learned FiLM scale/shift per modulated GroupNorm, the same for every sample and
applied whether or not the gene conditioning is kept. It starts at zero too; trained on the lab's
unlabelled tissue tiles (unconditional samples) it moves the model to the local morphology, and
classifier-free guidance then contrasts local-conditional with local-unconditional predictions.
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
    local
        Add the unconditional, zero-initialised local component (``local_time``, ``local_film``).
    """

    def __init__(self, n_genes: int, hidden: int, cond_dim: int, time_embed_dim: int,
                 norm_channels: list[int], *, local: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_genes, hidden), nn.SiLU(), nn.Linear(hidden, cond_dim), nn.SiLU())
        self.time_shift = _zero_linear(cond_dim, time_embed_dim)
        self.film = nn.ModuleList(_zero_linear(cond_dim, 2 * c) for c in norm_channels)
        self.local_time = nn.Parameter(torch.zeros(time_embed_dim)) if local else None
        self.local_film = nn.ParameterList(torch.zeros(2 * c) for c in norm_channels) if local else None

    @property
    def local(self) -> bool:
        """Whether the modulation has the unconditional local component."""
        return self.local_time is not None

    @classmethod
    def for_unet(cls, unet: UNet2DModel, n_genes: int, *, hidden: int, cond_dim: int,
                 local: bool = False) -> GeneModulation:
        """Modulation sized for ``unet`` (``local``: with the unconditional local component)."""
        time_dim = unet.time_embedding.linear_2.out_features
        return cls(n_genes, hidden, cond_dim, time_dim, [n.num_channels for n in resnet_norms(unet)], local=local)

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
            ``(batch,)`` 0/1 mask; 0 switches the gene modulation off for that sample (the central prediction,
            with the local component when there is one: it applies to every sample).
        """
        norms = resnet_norms(unet)
        if len(norms) != len(self.film):
            raise ValueError(f"the modulation was built for {len(self.film)} ResNet norms, the UNet has {len(norms)}.")
        dtype = next(unet.parameters()).dtype
        c = self.encoder(genes.to(dtype))
        gate = torch.ones(len(genes), 1, dtype=c.dtype, device=c.device) if keep is None else keep.to(c).view(-1, 1)
        time_shift = self.time_shift(c) * gate
        if self.local_time is not None:
            time_shift = time_shift + self.local_time.to(c.dtype)
        local_film = [None] * len(self.film) if self.local_film is None else list(self.local_film)

        def _shift_time(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
            return out + time_shift.to(out.dtype)

        def _film(proj: nn.Linear, local: torch.Tensor | None):
            film = proj(c) * gate
            scale, shift = (film if local is None else film + local.to(c.dtype)).chunk(2, dim=1)

            def hook(_m: nn.Module, _inp: tuple, out: torch.Tensor) -> torch.Tensor:
                return out * (1 + scale[:, :, None, None].to(out.dtype)) + shift[:, :, None, None].to(out.dtype)

            return hook

        handles = [unet.time_embedding.register_forward_hook(_shift_time)]
        handles += [norm.register_forward_hook(_film(proj, local))
                    for norm, proj, local in zip(norms, self.film, local_film, strict=True)]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
