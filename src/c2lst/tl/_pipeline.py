from __future__ import annotations


def run(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
