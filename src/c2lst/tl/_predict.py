from __future__ import annotations


def predict(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
