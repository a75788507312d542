from __future__ import annotations


def central_default(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
