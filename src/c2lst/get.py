"""Getters (scanpy's ``sc.get``): which table of a SpatialData holds the spots, and which spots trained a step.

The same resolvers :mod:`c2lst.tl`, :mod:`c2lst.pl` and the command line use, for scripts built on c2lst.
"""
from __future__ import annotations

from ._utils import recorded_train_mask, spot_table

__all__ = ["recorded_train_mask", "spot_table"]
