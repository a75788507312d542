"""Preprocessing: spot patches, tissue tiles, expression normalisation and the gene panel."""
from ._normalize import normalize
from ._panel import PANEL_FLAVORS, GenePanel, gene_panel
from ._patches import extract_patches
from ._split import split_spots
from ._tissue import tissue_tiles

__all__ = [
    "PANEL_FLAVORS",
    "GenePanel",
    "extract_patches",
    "gene_panel",
    "normalize",
    "split_spots",
    "tissue_tiles",
]
