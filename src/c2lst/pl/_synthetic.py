from __future__ import annotations


def synthetic_grid(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
