"""The small her2st section shipped with the package."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..io import read_legacy_st

if TYPE_CHECKING:
    from spatialdata import SpatialData

DEMO_DIR = Path(__file__).parent / "data" / "demo"


def demo() -> SpatialData:
    """Load the real legacy-ST section shipped inside the package: her2st C2, reduced to a few MB.

    The H&E image is cropped to the spots (plus a margin) and downsampled to about 1.5 µm/px, the counts
    are restricted to the 2,000 most variable genes (raw integers kept); see ``data/demo/README.md`` for
    provenance (Andersson et al. 2021, Nat Commun 12:6012) and ``benchmarks/make_demo_data.py`` for how it
    was made.

    Returns
    -------
    ``SpatialData`` as returned by :func:`c2lst.io.read_legacy_st` (``library_id`` ``"C2"``):
    ``images["C2_image"]``, ``shapes["C2_spots"]`` and ``tables["table"]`` (187 spots).
    """
    return read_legacy_st(DEMO_DIR / "C2.tsv.gz", DEMO_DIR / "C2_selection.tsv", DEMO_DIR / "C2_HE.jpg")
