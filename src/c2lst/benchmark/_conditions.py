"""Training sets of the benchmark conditions: expression mixup and diffusion-generated pairs.

Everything here works on arrays (``core`` + numpy), so the expensive conditions can run on any machine
with torch, without SpatialData.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from ..core.seeding import derive_seed

MIX_LOW, MIX_HIGH = 0.5, 1.0  # weight of the source spot in a spatial mixup profile (as tl.generate)


class CachedFeatures:
    """Memoise a ``patches -> (n, F)`` feature function per patch content (sha1 of its bytes).

    Real spot patches recur in every fold, fraction and seed; their features are computed once.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], name: str) -> None:
        self.fn, self.__name__ = fn, name
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Features of ``patches``, computing only the rows not seen before."""
        keys = [hashlib.sha1(np.ascontiguousarray(p).tobytes()).digest() for p in patches]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            new = np.asarray(self.fn(patches[todo]), dtype=np.float32).reshape(len(todo), -1)
            self.cache.update({keys[i]: row for i, row in zip(todo, new, strict=True)})
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


def resize(patches: np.ndarray, px: int) -> np.ndarray:
    """Resize uint8 ``(n, 3, H, W)`` patches to ``px`` (antialiased bilinear)."""
    if patches.shape[-1] == px:
        return patches
    x = torch.from_numpy(np.ascontiguousarray(patches)).float()
    y = torch.nn.functional.interpolate(x, size=(px, px), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).numpy()


def spatial_mixup(z: np.ndarray, xy: np.ndarray, group: np.ndarray, *, n_per_profile: int, n_neighbors: int = 6,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mix each training profile with a random spatial neighbour of the same section.

    Same rule as ``tl.generate(source="mixup")``: weight ``w ~ U(0.5, 1)`` on the source spot.

    Returns
    -------
    ``(mixed profiles, source index, partner index)``.
    """
    rng = np.random.default_rng(derive_seed(seed, "mixup"))
    src_all, partner_all = [], []
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        if len(rows) < 2:
            continue
        k = min(n_neighbors, len(rows) - 1)
        _, nn = cKDTree(xy[rows]).query(xy[rows], k=k + 1)
        src = np.repeat(np.arange(len(rows)), n_per_profile)
        partner = nn[src, 1 + rng.integers(0, k, len(src))]
        src_all.append(rows[src])
        partner_all.append(rows[partner])
    if not src_all:
        raise ValueError("mixup needs at least two training spots in one section.")
    src, partner = np.concatenate(src_all), np.concatenate(partner_all)
    w = rng.uniform(MIX_LOW, MIX_HIGH, len(src))[:, None]
    return (w * z[src] + (1 - w) * z[partner]).astype(np.float32), src, partner


def diffusion_pairs(central: Any, patches: np.ndarray, z: np.ndarray, xy: np.ndarray, group: np.ndarray,
                    panel: dict[str, Any], *, adapt_steps: int, adapt_batch_size: int, adapt_lr: float,
                    decoder_steps: int, n_per_profile: int, sample_steps: int, guidance_scale: float,
                    strength: float, seed: int, out_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Adapt ``central`` on the paired training spots, then generate tiles for spatial-mixup profiles.

    With ``strength < 1`` each tile starts from its source spot's own patch (image-to-image).

    Returns
    -------
    ``(synthetic patches at out_px, standardised conditioning profiles, source spot of each tile, stage timings)``.
    """
    import time

    from ..core.adaptation import adapt_local

    t0 = time.perf_counter()
    local = adapt_local(central, patches, z, panel, steps=adapt_steps, batch_size=adapt_batch_size, lr=adapt_lr,
                        cond_dropout=0.1, lora_rank=0, seed=seed, decoder_steps=decoder_steps)
    t1 = time.perf_counter()
    profiles, src, _ = spatial_mixup(z, xy, group, n_per_profile=n_per_profile, seed=seed)
    seeds = [derive_seed(seed, "synthetic", i) for i in range(len(profiles))]
    tiles = local.generate(profiles, seeds=seeds, steps=sample_steps, guidance_scale=guidance_scale,
                           batch_size=256 if torch.cuda.is_available() else 64,
                           init_tiles=resize(patches[src], central.tile_px) if strength < 1 else None,
                           strength=strength)
    t2 = time.perf_counter()
    return resize(np.asarray(tiles), out_px), profiles, src, {"adapt_s": t1 - t0, "generate_s": t2 - t1}
