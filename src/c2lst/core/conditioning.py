"""How much an adapted model's denoising depends on the expression profile it is given."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import DDPMScheduler

from .images import as_tiles, to_model
from .seeding import generator, randn

if TYPE_CHECKING:
    from .models import LocalModel


@torch.no_grad()
def denoising_losses(local: LocalModel, patches: np.ndarray, genes: np.ndarray, partner_genes: np.ndarray, *,
                     n_draws: int = 8, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """Per-patch denoising error of ``local`` given the patch's own profile, another profile, and none.

    Each patch is encoded (latent mean) and noised at ``n_draws`` timesteps spread evenly over the schedule
    (the midpoints of ``n_draws`` equal parts), with noise seeded by ``(seed, patch index, draw)``. The same
    noisy latents are denoised three ways: conditioned on ``genes`` (the patch's own profile), on
    ``partner_genes`` (another spot's), and unconditionally (gene modulation off; an unconditional local
    component, when the adapter has one, stays on). The error is the mean squared error of the predicted
    noise, averaged over the draws.

    Parameters
    ----------
    local
        The adapted model.
    patches
        uint8 ``(n, 3, H, W)`` patches (resized to the model's tile size).
    genes, partner_genes
        ``(n, n_genes)`` standardised profiles: each patch's own and the one it is contrasted with.
    n_draws
        Timesteps (and noise draws) per patch.
    seed
        Seed of the noise.
    batch_size
        Patches per forward pass (the noise of a patch does not depend on it).

    Returns
    -------
    ``(3, n)`` float64: the error with the own profile, with the partner profile, and unconditional.
    """
    tiles = as_tiles(patches, name="patches")
    own, partner = local._genes(genes), local._genes(partner_genes)
    if len(own) != len(tiles) or len(partner) != len(tiles):
        raise ValueError(f"{len(tiles)} patches, {len(own)} own and {len(partner)} partner profiles; pass one of "
                         "each per patch.")
    if not isinstance(n_draws, int | np.integer) or n_draws < 1:
        raise ValueError(f"`n_draws` must be an integer >= 1, got {n_draws!r}.")
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
    central = local.central
    steps = central.config.num_train_timesteps
    timesteps = ((np.arange(n_draws) + 0.5) * steps / n_draws).astype(np.int64)
    scheduler = DDPMScheduler.from_config(central.scheduler_config)
    out = np.zeros((3, len(tiles)), dtype=np.float64)
    for start in range(0, len(tiles), batch_size):
        rows = slice(start, min(start + batch_size, len(tiles)))
        z = central.encode(to_model(tiles[rows], central.tile_px, device=central.device))
        on = torch.ones(len(z), device=z.device)
        for k, step in enumerate(timesteps):
            noise = randn(z.shape, [generator(seed, "conditioning", i, k) for i in range(rows.start, rows.stop)],
                          like=z)
            t = torch.full((len(z),), int(step), dtype=torch.long, device=z.device)
            noisy = scheduler.add_noise(z, noise, t)
            for j, (g, keep) in enumerate(((own[rows], on), (partner[rows], on), (own[rows], 0 * on))):
                err = (local.eps(noisy, t, g, keep).float() - noise) ** 2
                out[j, rows] += err.mean(dim=(1, 2, 3)).double().cpu().numpy() / n_draws
    return out
