from __future__ import annotations


def napari(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
