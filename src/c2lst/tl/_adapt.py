from __future__ import annotations


def adapt(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
