"""Real and synthetic patches side by side, grouped by expression."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
from matplotlib.figure import Figure

from .._utils import is_synthetic, spot_table
from ..metrics import check_patches
from ._expression import layer_matrix
from ._show import figure_doc, finish

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

LEVELS = ("low", "mid", "high")


def _dense(x: object) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)


def synthetic_tables(
    data: SpatialData | AnnData, synthetic: str | AnnData, table_key: str | None
) -> tuple[AnnData, AnnData]:
    """``(real table, synthetic table)`` from a SpatialData + table name, or two AnnData objects."""
    from anndata import AnnData

    if isinstance(synthetic, AnnData):
        return spot_table(data, table_key)[1], synthetic
    if isinstance(data, AnnData):
        raise ValueError("with an AnnData input pass the synthetic table itself: `synthetic=<AnnData>`.")
    from spatialdata import SpatialData

    if not isinstance(data, SpatialData):
        raise ValueError(f"expected a SpatialData or AnnData object, got {type(data).__name__}.")
    sdata = data
    if synthetic not in sdata.tables:
        raise ValueError(f"no table {synthetic!r} in the SpatialData; run c2lst.tl.generate first (or pass `synthetic=`).")
    if table_key is None:
        others = [k for k, t in sdata.tables.items() if k != synthetic and not is_synthetic(t)]
        table_key = "table" if "table" in others else (others[0] if len(others) == 1 else None)
        if table_key is None:
            raise ValueError(f"several tables {others} besides {synthetic!r}: choose the real one with `table_key=`.")
    return spot_table(sdata, table_key)[1], sdata.tables[synthetic]


def patches_of(table: AnnData, key: str, which: str) -> np.ndarray:
    """Return the ``(n, 3, h, w)`` uint8 patches in ``table.obsm[key]``, with a clear error when missing."""
    if key not in table.obsm:
        hint = "run c2lst.pp.extract_patches" if which == "real" else "run c2lst.tl.generate"
        raise ValueError(f"the {which} table has no obsm[{key!r}] patches; {hint} first (or pass `patch_key=`).")
    return check_patches(np.asarray(table.obsm[key]), name=f"{which} patches")


def expression_groups(
    real: AnnData, syn: AnnData, *, groupby: str | None, layer: str, n_clusters: int, seed: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Group labels, and the group index of every real spot and every synthetic patch.

    ``groupby=None``: one group. A gene name: tertiles (low / mid / high) of its level on the real spots,
    applied to the synthetic patches' conditioning expression. ``"cluster"``: k-means on the panel genes
    (the synthetic table's genes), standardised on the real spots; synthetic patches join the nearest centre.
    """
    if groupby is None:
        return ["all"], np.zeros(real.n_obs, dtype=int), np.zeros(syn.n_obs, dtype=int)
    genes = list(syn.var_names)
    missing = [g for g in genes if g not in real.var_names]
    if missing:
        raise ValueError(f"synthetic genes {missing[:5]} are not in the real table; the tables do not match.")
    real_expr = _dense(layer_matrix(real, layer)[:, real.var_names.get_indexer(genes)])
    syn_expr = _dense(syn.X)
    if groupby == "cluster":
        from sklearn.cluster import KMeans

        if real.n_obs < n_clusters:
            raise ValueError(f"{real.n_obs} real spots cannot form {n_clusters} clusters; lower `n_clusters`.")
        mu, sd = real_expr.mean(axis=0), np.maximum(real_expr.std(axis=0), 1e-8)
        km = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit((real_expr - mu) / sd)
        labels = [f"cluster {i}" for i in range(n_clusters)]
        return labels, km.labels_.astype(int), km.predict((syn_expr - mu) / sd).astype(int)
    if groupby not in genes:
        raise ValueError(f"`groupby` must be None, 'cluster' or a panel gene; {groupby!r} is not among the "
                         f"synthetic table's genes (e.g. {genes[:5]}).")
    j = genes.index(groupby)
    cuts = np.quantile(real_expr[:, j], [1 / 3, 2 / 3])
    labels = [f"{groupby} {lv}" for lv in LEVELS]
    return labels, np.searchsorted(cuts, real_expr[:, j], side="right"), np.searchsorted(cuts, syn_expr[:, j], side="right")


@figure_doc
def synthetic_grid(
    data: SpatialData | AnnData,
    *,
    synthetic: str | AnnData = "c2lst_synthetic",
    n: int = 8,
    groupby: str | None = None,
    n_clusters: int = 3,
    layer: str = "lognorm",
    patch_key: str = "c2lst_patch",
    table_key: str | None = None,
    seed: int = 0,
    patch_size: float = 0.9,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Real spot patches and synthetic patches side by side, one row per expression group.

    Parameters
    ----------
    data
        SpatialData holding the real table and the synthetic table, or the real AnnData (then pass the
        synthetic AnnData as ``synthetic``).
    synthetic
        Name of the synthetic table written by :func:`c2lst.tl.generate`, or that table.
    n
        Patches per side and row (fewer when a group holds fewer).
    groupby
        ``None`` (one row), a panel gene (rows = low / mid / high tertiles of its level on the real spots) or
        ``"cluster"`` (k-means clusters of the panel expression).
    n_clusters
        Number of clusters for ``groupby="cluster"``.
    layer
        Real-table layer holding log-normalised expression (the synthetic table's ``X`` is on that scale).
    patch_key
        ``obsm`` key of the patches in both tables.
    table_key
        Real table name, when the SpatialData holds several besides the synthetic one.
    seed
        Seed of the patch sampling and of k-means.
    patch_size
        Size of one patch in inches.
    {show_save}

    Returns
    -------
    The matplotlib Figure; row labels give the group and how many real / synthetic patches it holds.
    """
    if n < 1:
        raise ValueError(f"`n` must be at least 1, got {n}.")
    real, syn = synthetic_tables(data, synthetic, table_key)
    real_p, syn_p = patches_of(real, patch_key, "real"), patches_of(syn, patch_key, "synthetic")
    labels, real_g, syn_g = expression_groups(real, syn, groupby=groupby, layer=layer, n_clusters=n_clusters, seed=seed)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(labels), 2 * n + 1, figsize=(patch_size * (2 * n + 1), patch_size * len(labels) + 0.6),
                             squeeze=False, gridspec_kw={"wspace": 0.04, "hspace": 0.15,
                                                         "width_ratios": [1] * n + [0.3] + [1] * n})
    for g, label in enumerate(labels):
        picks = []
        for groups, patches in ((real_g, real_p), (syn_g, syn_p)):
            idx = np.flatnonzero(groups == g)
            picks.append((patches, np.sort(rng.choice(idx, size=min(n, idx.size), replace=False)), idx.size))
        for side, (patches, idx, _) in enumerate(picks):
            for k in range(n):
                ax = axes[g, k + side * (n + 1)]
                ax.set_axis_off()
                if k < len(idx):
                    ax.imshow(np.moveaxis(patches[idx[k]], 0, -1))
        axes[g, n].set_axis_off()
        axes[g, 0].text(-0.15, 0.5, f"{label}\n{picks[0][2]} real / {picks[1][2]} syn.", transform=axes[g, 0].transAxes,
                        ha="right", va="center", fontsize=9)
    axes[0, n // 2].set_title("real", fontsize=10, loc="left")
    axes[0, n + 1 + n // 2].set_title("synthetic", fontsize=10, loc="left")
    return finish(fig, show=show, save=save)
