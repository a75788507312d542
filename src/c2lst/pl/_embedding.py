"""2-D embedding of real vs synthetic patch features."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..metrics import embed_2d, handcrafted_features, prdc, standardize_on_real
from ._show import figure_doc, finish
from ._synthetic import patches_of, synthetic_tables

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@figure_doc
def embedding_overlap(
    data: SpatialData | AnnData | tuple[np.ndarray, np.ndarray],
    *,
    synthetic: str | AnnData = "c2lst_synthetic",
    patch_key: str = "c2lst_patch",
    table_key: str | None = None,
    method: str = "umap",
    k: int = 5,
    seed: int = 0,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """UMAP (or PCA) of real and synthetic patch features, coloured by origin.

    Features are :func:`c2lst.metrics.handcrafted_features` of the patches (colour, texture, nuclei),
    standardised on the real patches. The title reports precision / recall / density / coverage
    (:func:`c2lst.metrics.prdc`, k-NN radii in the standardised feature space): precision = share of
    synthetic patches that look like some real patch, coverage = share of real patches with a synthetic
    neighbour.

    Parameters
    ----------
    data
        SpatialData with the real and synthetic tables, the real AnnData (then ``synthetic`` is the synthetic
        AnnData), or a ``(real_features, synthetic_features)`` pair of ``(n, F)`` arrays.
    synthetic
        Synthetic table name (from :func:`c2lst.tl.generate`) or the table.
    patch_key
        ``obsm`` key of the patches in both tables.
    table_key
        Real table name, when the SpatialData holds several besides the synthetic one.
    method
        ``"umap"`` or ``"pca"``.
    k
        Neighbour used for the PRDC radii.
    seed
        Random state of UMAP.
    {ax}
    {show_save}

    Returns
    -------
    The matplotlib Figure.
    """
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError("pass features as a (real_features, synthetic_features) pair.")
        real_f, syn_f = (np.asarray(x, dtype=np.float64) for x in data)
    else:
        real, syn = synthetic_tables(data, synthetic, table_key)
        real_f = handcrafted_features(patches_of(real, patch_key, "real"))
        syn_f = handcrafted_features(patches_of(syn, patch_key, "synthetic"))
    coords = embed_2d(real_f, syn_f, method=method, seed=seed)
    rz, sz = standardize_on_real(real_f, syn_f)
    scores = prdc(rz, sz, k=min(k, len(rz) - 1, len(sz) - 1))
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
    else:
        fig = ax.figure
    n_real = len(real_f)
    ax.scatter(*coords[:n_real].T, s=14, c="#4C72B0", alpha=0.75, linewidths=0, label=f"real (n = {n_real})")
    ax.scatter(*coords[n_real:].T, s=14, c="#DD8452", alpha=0.75, linewidths=0, label=f"synthetic (n = {len(syn_f)})")
    axis = "UMAP" if method == "umap" else "PC"
    ax.set_xlabel(f"{axis} 1")
    ax.set_ylabel(f"{axis} 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(frameon=False, fontsize=8, loc="best")
    ax.set_title("precision {precision:.2f} · recall {recall:.2f}\ndensity {density:.2f} · coverage {coverage:.2f}".format(**scores),
                 fontsize=9)
    return finish(fig, show=show, save=save)
