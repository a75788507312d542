from __future__ import annotations


def read_legacy_st(*args, **kwargs):
    """Placeholder: being written."""
    raise NotImplementedError
