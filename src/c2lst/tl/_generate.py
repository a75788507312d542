from __future__ import annotations


def generate(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
