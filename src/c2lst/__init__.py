"""c2lst: central-to-local adaptive generative diffusion for data-limited spatial transcriptomics."""
from __future__ import annotations

from . import datasets, io, pl, pp, tl
from ._settings import settings

__version__ = "0.1.0"
__all__ = ["datasets", "io", "pl", "pp", "settings", "tl", "__version__"]
