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
    n_comps
        With ``n_comps > 0`` the gene encoder reads ``n_comps`` principal-component scores of the profile instead of
        the profile: a fixed ``(n_genes, n_comps)`` buffer ``projection`` (set with :meth:`fit_projection` on the
        training profiles; saved with the adapter). 0: the encoder reads the standardised panel.
    """

    def __init__(self, n_genes: int, hidden: int, cond_dim: int, time_embed_dim: int,
                 norm_channels: list[int], *, local: bool = False, n_comps: int = 0) -> None:
        super().__init__()
        if n_comps < 0 or n_comps > n_genes:
            raise ValueError(f"`n_comps` must be in [0, {n_genes}] (the panel size), got {n_comps}.")
        self.n_genes = n_genes
        self.register_buffer("projection", torch.zeros(n_genes, n_comps) if n_comps else None)
        self.encoder = nn.Sequential(nn.Linear(n_comps or n_genes, hidden), nn.SiLU(), nn.Linear(hidden, cond_dim),
                                     nn.SiLU())
        self.time_shift = _zero_linear(cond_dim, time_embed_dim)
        self.film = nn.ModuleList(_zero_linear(cond_dim, 2 * c) for c in norm_channels)
        self.local_time = nn.Parameter(torch.zeros(time_embed_dim)) if local else None
        self.local_film = nn.ParameterList(torch.zeros(2 * c) for c in norm_channels) if local else None

    @property
    def local(self) -> bool:
        """Whether the modulation has the unconditional local component."""
        return self.local_time is not None

    @property
    def n_comps(self) -> int:
        """Principal components the gene encoder reads (0: the standardised panel itself)."""
        return 0 if self.projection is None else int(self.projection.shape[1])

    @classmethod
    def for_unet(cls, unet: UNet2DModel, n_genes: int, *, hidden: int, cond_dim: int,
                 local: bool = False, n_comps: int = 0) -> GeneModulation:
        """Modulation sized for ``unet`` (``local``: with the unconditional local component; ``n_comps``: PCA input)."""
        time_dim = unet.time_embedding.linear_2.out_features
        return cls(n_genes, hidden, cond_dim, time_dim, [n.num_channels for n in resnet_norms(unet)], local=local,
                   n_comps=n_comps)

    @torch.no_grad()
    def fit_projection(self, genes: torch.Tensor) -> None:
        """Set ``projection`` to the whitened principal axes of the (training) profiles ``genes`` ``(n, n_genes)``.

        The scores ``(genes - mean) @ projection`` have unit variance on ``genes``; each axis' sign makes its largest
        loading positive (deterministic). The centring is folded into the encoder's first bias, so the encoder reads
        ``genes @ projection`` and computes what it would on the centred scores.
        """
        if self.projection is None:
            raise ValueError("this modulation reads the panel itself (n_comps=0); there is no projection to fit.")
        x = genes.detach().double()
        if x.ndim != 2 or x.shape[1] != self.n_genes or len(x) < 2:
            raise ValueError(f"need at least two profiles of {self.n_genes} genes, got shape {tuple(x.shape)}.")
        mean = x.mean(dim=0)
        _, sv, vt = torch.linalg.svd(x - mean, full_matrices=False)
        k = self.n_comps
        if len(sv) < k:
            raise ValueError(f"{len(x)} profiles give {len(sv)} principal components, fewer than n_comps={k}; lower "
                             "`n_comps` or train on more spots.")
        axes = vt[:k].T  # (n_genes, k)
        sign = torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
        scale = (sv[:k] / (len(x) - 1) ** 0.5).clamp_min(1e-6)
        proj = axes * sign / scale
        self.projection.copy_(proj.to(self.projection))
        first = self.encoder[0]
        first.bias.sub_((mean.to(proj) @ proj @ first.weight.double().T).to(first.bias))

    def embed(self, genes: torch.Tensor) -> torch.Tensor:
        """Return the gene embedding ``c`` of standardised profiles (through the projection when there is one)."""
        return self.encoder(genes if self.projection is None else genes @ self.projection.to(genes.dtype))

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
        c = self.embed(genes.to(dtype))
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
