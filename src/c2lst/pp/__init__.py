"""Preprocessing: spot patches, tissue tiles, expression normalisation and the gene panel."""
from __future__ import annotations

import lazy_loader as _lazy

# spatialdata-style lazy imports: the names in __init__.pyi load on first use, with their heavy dependencies.
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
