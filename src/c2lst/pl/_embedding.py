from __future__ import annotations


def embedding_overlap(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
