"""Seed derivation: every random draw comes from a generator seeded by ``(seed, purpose, index)``.

Deriving the generator of training step ``k`` from ``(seed, k)`` (instead of advancing one global
stream) is what makes an interrupted-and-resumed run bit-identical to an uninterrupted one, and what
makes generated item ``i`` independent of the batch it falls in.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """Derive a 63-bit seed deterministically from ``seed`` and ``keys`` (sha256 of their repr)."""
    digest = hashlib.sha256(repr((int(seed), *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, *keys: object) -> torch.Generator:
    """Create a CPU ``torch.Generator`` seeded with :func:`derive_seed` ``(seed, *keys)``."""
    return torch.Generator(device="cpu").manual_seed(derive_seed(seed, *keys))


def randn(shape: Sequence[int], gen: torch.Generator | Sequence[torch.Generator] | None, *,
          like: torch.Tensor) -> torch.Tensor:
    """Draw standard normal noise on the CPU (device-independent values), moved to ``like``'s device/dtype.

    A sequence of generators draws one item of the leading dimension from each.
    """
    if gen is not None and not isinstance(gen, torch.Generator):
        gens = list(gen)
        if len(gens) != shape[0]:
            raise ValueError(f"{len(gens)} generators for a batch of {shape[0]}.")
        out = torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in gens])
    else:
        out = torch.randn(tuple(shape), generator=gen)
    return out.to(device=like.device, dtype=like.dtype)
