"""Execution context: torch thread count and the ``accelerate.Accelerator`` of a training run."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, DistributedType

MIXED_PRECISION = ("no", "bf16", "fp16", "auto")
_CPU_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


def native_bf16() -> bool:
    """Whether bf16 autocast runs on native bf16 units here.

    A CUDA device that supports bf16, or a CPU with AVX512-BF16 or AMX (probed through torch, never assumed:
    machines of the same kind differ). Without them bf16 matmuls are emulated and many times slower than fp32.
    """
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in _CPU_BF16_PROBES)


def resolve_mixed_precision(mixed_precision: str) -> str:
    """Validate ``mixed_precision``; ``"auto"`` becomes ``"bf16"`` where :func:`native_bf16`, else ``"no"``."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION}, got {mixed_precision!r}.")
    if mixed_precision == "auto":
        return "bf16" if native_bf16() else "no"
    return mixed_precision


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (unchanged when ``None``)."""
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"`n_threads` must be >= 1, got {n}.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def keep_torch_threads() -> Iterator[None]:
    """Restore torch's intra-op thread count after the block.

    numba's parallel code (e.g. ``squidpy.gr.spatial_autocorr``) shares the OpenMP runtime with torch and sets its
    thread count to numba's; torch's results on the CPU depend on the thread count, so a later seeded run would
    differ from the same run before the block.
    """
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def make_accelerator(mixed_precision: str) -> Accelerator:
    """Create the ``Accelerator`` of one training run (CPU when no CUDA device is visible).

    ``accelerate`` keeps one process-wide state; a single-process run asking for another precision than
    an earlier run of the same process resets it instead of failing.
    """
    mixed_precision = resolve_mixed_precision(mixed_precision)
    cuda = torch.cuda.is_available()
    if mixed_precision == "fp16" and not cuda:
        raise ValueError("fp16 mixed precision needs a CUDA device; use mixed_precision='bf16' on the CPU.")
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision and \
            state.get("distributed_type") == DistributedType.NO:
        AcceleratorState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=mixed_precision)
