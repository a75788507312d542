from __future__ import annotations


def pretrain(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
