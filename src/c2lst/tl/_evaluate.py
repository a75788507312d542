from __future__ import annotations


def evaluate(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
