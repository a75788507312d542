"""Execution context: torch thread count and the ``accelerate.Accelerator`` of a training run."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, DistributedType

MIXED_PRECISION = ("no", "bf16", "fp16")


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


def make_accelerator(mixed_precision: str) -> Accelerator:
    """Create the ``Accelerator`` of one training run (CPU when no CUDA device is visible).

    ``accelerate`` keeps one process-wide state; a single-process run asking for another precision than
    an earlier run of the same process resets it instead of failing.
    """
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION}, got {mixed_precision!r}.")
    cuda = torch.cuda.is_available()
    if mixed_precision == "fp16" and not cuda:
        raise ValueError("fp16 mixed precision needs a CUDA device; use mixed_precision='bf16' on the CPU.")
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") != mixed_precision and \
            state.get("distributed_type") == DistributedType.NO:
        AcceleratorState._reset_state()
    return Accelerator(cpu=not cuda, mixed_precision=mixed_precision)
