"""c2lst (type stub: the names ``__init__.py`` loads lazily)."""
from . import benchmark, core, datasets, files, get, io, metrics, pl, pp, tl
from ._settings import settings
from .core.models import CentralModel, LocalModel
from .core.predictor import Predictor

__version__: str
__all__ = [
    "CentralModel",
    "LocalModel",
    "Predictor",
    "__version__",
    "benchmark",
    "core",
    "datasets",
    "files",
    "get",
    "io",
    "metrics",
    "pl",
    "pp",
    "settings",
    "tl",
]
