"""Datasets: local her2st sections, the bundled demo section and the bundled default central model."""
from ._central import central_default
from ._demo import demo
from ._her2st import her2st

__all__ = [
    "central_default",
    "demo",
    "her2st",
]
