from __future__ import annotations


def demo(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
