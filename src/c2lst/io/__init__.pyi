"""Readers: spatial transcriptomics sections, H&E slides and histology images -> ``SpatialData``."""
from ._anndata import from_anndata
from ._hest import read_hest
from ._histology import HistologyTiles, read_histology
from ._legacy_st import read_legacy_st
from ._slide import read_slide
from ._spatialdata import from_spatialdata
from ._visium import read_visium

__all__ = [
    "HistologyTiles",
    "from_anndata",
    "from_spatialdata",
    "read_hest",
    "read_histology",
    "read_legacy_st",
    "read_slide",
    "read_visium",
]
