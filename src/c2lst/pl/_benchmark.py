from __future__ import annotations


def benchmark(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
