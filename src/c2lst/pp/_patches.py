from __future__ import annotations


def extract_patches(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
