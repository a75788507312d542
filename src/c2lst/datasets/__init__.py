"""Datasets: local her2st sections, the bundled demo section and the bundled default central model."""
from __future__ import annotations

import lazy_loader as _lazy

# spatialdata-style lazy imports: the names in __init__.pyi load on first use, with their heavy dependencies.
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
