from __future__ import annotations


def read_histology(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
