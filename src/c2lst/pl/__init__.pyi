"""Plotting (matplotlib, scanpy-style ``show=``/``save=``) and the napari overlay."""
from ._benchmark import benchmark
from ._embedding import embedding_overlap
from ._napari import napari
from ._spatial import spatial_genes
from ._synthetic import synthetic_grid

__all__ = [
    "benchmark",
    "embedding_overlap",
    "napari",
    "spatial_genes",
    "synthetic_grid",
]
