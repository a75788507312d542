"""Denoising errors of an adapted model on real patches, under several conditionings of the same noisy latents."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from diffusers import DDPMScheduler

from .images import as_tiles, to_model
from .seeding import generator, randn

if TYPE_CHECKING:
    from .models import LocalModel

TIMESTEPS = ("even", "random")


@torch.no_grad()
def denoising_errors(local: LocalModel, patches: np.ndarray, profiles: Sequence[np.ndarray | None], *,
                     n_draws: int = 8, seed: int = 0, timesteps: str = "even",
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Noise-prediction error of every patch and draw under each conditioning, on identical noisy latents.

    Each patch is encoded (latent mean) and noised ``n_draws`` times; the same noisy latents are denoised once per
    entry of ``profiles``, so the errors compare conditionings draw for draw.

    Parameters
    ----------
    local
        The adapted model.
    patches
        uint8 ``(n, 3, H, W)`` patches (resized to the model's tile size).
    profiles
        ``(n, n_genes)`` standardised profiles, one per patch, or ``None``: unconditional (gene modulation off; an
        unconditional local component, when the adapter has one, stays on).
    n_draws
        Noise draws per patch.
    seed
        Seed of the draws.
    timesteps
        ``"even"``: draw ``j`` of every patch at the midpoint of the ``j``-th of ``n_draws`` equal parts of the
        schedule, its noise seeded by ``(seed, "conditioning", i, j)``; ``"random"``: the timestep and noise of draw
        ``j`` of patch ``i`` seeded by ``(seed, "denoising-loss", i, j)``.
    batch_size
        Patches per forward pass (the draws of a patch do not depend on it).

    Returns
    -------
    ``(errors, steps)``: float64 ``(len(profiles), n, n_draws)`` mean squared errors over latent elements, and the
    int64 ``(n, n_draws)`` timesteps.
    """
    tiles = as_tiles(patches, name="patches")
    conds = [None if p is None else local._genes(p) for p in profiles]
    for c in conds:
        if c is not None and len(c) != len(tiles):
            raise ValueError(f"{len(tiles)} patches but {len(c)} expression profiles; pass one profile per patch.")
    if timesteps not in TIMESTEPS:
        raise ValueError(f"`timesteps` must be one of {TIMESTEPS}, got {timesteps!r}.")
    for name, value in (("n_draws", n_draws), ("batch_size", batch_size)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    central = local.central
    n_steps = central.config.num_train_timesteps
    even = ((np.arange(n_draws) + 0.5) * n_steps / n_draws).astype(np.int64)
    scheduler = DDPMScheduler.from_config(central.scheduler_config)
    errors = np.zeros((len(conds), len(tiles), n_draws), dtype=np.float64)
    steps = np.zeros((len(tiles), n_draws), dtype=np.int64)
    for start in range(0, len(tiles), batch_size):
        rows = range(start, min(start + batch_size, len(tiles)))
        z = central.encode(to_model(tiles[start:rows.stop], central.tile_px, device=central.device))
        off = torch.zeros(len(z), local.n_genes, device=z.device)
        for j in range(n_draws):
            if timesteps == "even":
                gens = [generator(seed, "conditioning", i, j) for i in rows]
                t = torch.full((len(z),), int(even[j]), dtype=torch.long)
            else:
                gens = [generator(seed, "denoising-loss", i, j) for i in rows]
                t = torch.cat([torch.randint(0, n_steps, (1,), generator=g) for g in gens])
            t = t.to(z.device)
            noise = randn(z.shape, gens, like=z)
            noisy = scheduler.add_noise(z, noise, t)
            for k, c in enumerate(conds):
                keep = torch.full((len(z),), float(c is not None), device=z.device)
                pred = local.eps(noisy, t, off if c is None else c[start:rows.stop], keep)
                errors[k, start:rows.stop, j] = ((pred.float() - noise) ** 2).flatten(1).mean(dim=1).double().cpu().numpy()
            steps[start:rows.stop, j] = t.cpu().numpy()
    return errors, steps
