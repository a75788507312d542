from __future__ import annotations


def read_visium(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
