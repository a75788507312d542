from __future__ import annotations


def from_anndata(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
