"""Tile arrays <-> model tensors, resizing, and seeded augmentation (dihedral + mild stain jitter)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def as_tiles(images: np.ndarray, *, name: str = "images") -> np.ndarray:
    """Validate uint8 RGB tiles ``(n, 3, H, W)`` or ``(n, H, W, 3)``; return them channel-first, contiguous."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8 RGB tiles, got dtype {arr.dtype}; convert with "
                         "np.clip(x, 0, 255).astype(np.uint8).")
    if arr.ndim != 4 or (arr.shape[1] != 3 and arr.shape[-1] != 3):
        raise ValueError(f"`{name}` must have shape (n, 3, H, W) or (n, H, W, 3), got {arr.shape}.")
    if arr.shape[1] != 3:
        arr = arr.transpose(0, 3, 1, 2)
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` holds no tile.")
    if arr.shape[2] < 8 or arr.shape[3] < 8:
        raise ValueError(f"`{name}` tiles are {arr.shape[2]}x{arr.shape[3]} px; at least 8x8 px are needed.")
    return np.ascontiguousarray(arr)


def to_model(tiles: np.ndarray, tile_px: int, *, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(n, 3, H, W)`` tiles -> float tensor in ``[-1, 1]``, resized (antialiased) to ``tile_px``."""
    x = torch.from_numpy(np.ascontiguousarray(tiles)).to(device=device).to(torch.float32) / 127.5 - 1.0
    if x.shape[-2:] != (tile_px, tile_px):
        x = F.interpolate(x, size=(tile_px, tile_px), mode="bilinear", antialias=True, align_corners=False)
    return x.to(dtype)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model-space images in ``[-1, 1]`` -> uint8 ``(n, 3, H, W)``."""
    return ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8).cpu().numpy()


def resize_tiles(tiles: np.ndarray, tile_px: int) -> np.ndarray:
    """Resize uint8 tiles to ``tile_px`` (antialiased bilinear); no-op when they already have that size."""
    if tiles.shape[-2:] == (tile_px, tile_px):
        return tiles
    out = [to_uint8(to_model(tiles[i:i + 256], tile_px)) for i in range(0, len(tiles), 256)]
    return np.concatenate(out)


def augment(x: torch.Tensor, gen: torch.Generator, *, stain_jitter: float = 0.05) -> torch.Tensor:
    """Random flips and 90° rotations per tile, plus mild stain jitter in optical-density space.

    Parameters
    ----------
    x
        Images in ``[-1, 1]``, ``(n, 3, h, w)`` square.
    gen
        CPU generator every draw comes from.
    stain_jitter
        Per-channel optical-density scale ``U(1 - s, 1 + s)`` and shift ``U(-s/2, s/2)``; 0 disables.

    Returns
    -------
    Augmented images in ``[-1, 1]``.
    """
    n = x.shape[0]
    rot = torch.randint(0, 4, (n,), generator=gen).tolist()
    flip = torch.randint(0, 2, (n,), generator=gen).tolist()
    scale = 1.0 + stain_jitter * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    shift = 0.5 * stain_jitter * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
    out = torch.stack([torch.rot90(xi.flip(-1) if f else xi, k, dims=(-2, -1)) for xi, k, f in zip(x, rot, flip, strict=True)])
    if stain_jitter > 0:
        intensity = (out.float() + 1.0) * 127.5
        od = -torch.log((intensity + 1.0) / 256.0)
        od = od * scale.to(od.device) + shift.to(od.device)
        out = (256.0 * torch.exp(-od) - 1.0).clamp(0, 255) / 127.5 - 1.0
    return out.to(x.dtype)
