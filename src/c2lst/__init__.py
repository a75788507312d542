"""c2lst: central-to-local adaptive generative diffusion for data-limited spatial transcriptomics."""
from __future__ import annotations

import lazy_loader as _lazy

__version__ = "0.1.0"

# spatialdata-style lazy imports: ``import c2lst`` stays light; the subpackages and classes named in
# __init__.pyi (and torch, diffusers, scanpy, pyplot with them) load on first use.
__getattr__, __dir__, _lazy_all = _lazy.attach_stub(__name__, __file__)
__all__ = [*_lazy_all, "__version__"]
