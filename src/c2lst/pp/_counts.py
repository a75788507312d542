"""Raw-count access and validation shared by normalisation and the gene panel."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData


def raw_counts(table: AnnData, *, layer: str | None = None, genes: list[str] | None = None) -> np.ndarray | sp.csr_matrix:
    """Raw counts of ``table`` (``X`` or ``layers[layer]``), optionally restricted to ``genes``; validated.

    Raises
    ------
    ValueError
        When the counts are missing, not numeric, NaN/infinite or negative.
    """
    if layer is not None and layer not in table.layers:
        raise ValueError(f"layer {layer!r} not in the table (layers: {list(table.layers)}); pass `layer_counts=None` to use X.")
    adata = table if genes is None else table[:, genes]
    x = adata.X if layer is None else adata.layers[layer]
    if x is None:
        raise ValueError("the table has no expression matrix X; read the data with c2lst.io or set X to raw counts.")
    data = x.data if sp.issparse(x) else np.asarray(x)
    if not np.issubdtype(data.dtype, np.number) or data.dtype == bool:
        raise ValueError(f"counts have dtype {data.dtype}; expected raw integer (or float) UMI counts.")
    if data.size and not np.isfinite(data).all():
        raise ValueError("counts contain NaN or infinite values; fill or drop those spots/genes before normalising.")
    if data.size and data.min() < 0:
        raise ValueError("counts contain negative values; c2lst expects raw UMI counts (not log or scaled data).")
    return sp.csr_matrix(x, dtype=np.float64) if sp.issparse(x) else np.asarray(x, dtype=np.float64)


def library_sizes(counts: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """Total counts per spot."""
    return np.asarray(counts.sum(axis=1)).ravel()


def lognorm(counts: np.ndarray | sp.csr_matrix, lib: np.ndarray, target_sum: float) -> np.ndarray:
    """``log1p(counts / lib * target_sum)`` as a dense, C-ordered float32 array; spots with zero counts stay 0."""
    scale = np.divide(target_sum, lib, out=np.zeros_like(lib, dtype=np.float64), where=lib > 0)
    x = counts.multiply(scale[:, None]).toarray() if sp.issparse(counts) else counts * scale[:, None]
    return np.log1p(x).astype(np.float32, order="C")


def median_library_size(lib: np.ndarray) -> float:
    """Median of the non-zero library sizes ``lib`` of the training spots: the leakage-safe target sum."""
    lib = lib[lib > 0]
    if lib.size == 0:
        raise ValueError("all training spots have zero counts; check the counts matrix and `train_mask`.")
    return float(np.median(lib))
