from __future__ import annotations


def spatial_genes(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
