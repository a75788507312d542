from __future__ import annotations


def her2st(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
