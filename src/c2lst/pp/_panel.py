"""The gene panel: highly variable genes chosen on training spots, with their normalisation statistics.

A :class:`GenePanel` travels with every fitted model (adapters, predictors) so that later steps can check
that they see the same genes in the same order, and normalise new spots exactly as the training spots were.
"""
from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _logging as logg
from .._deprecation import renamed_kwargs
from .._docs import doc_params
from .._utils import as_mask, check_key, resolve_table, returned, writable
from ._counts import library_sizes, lognorm, median_library_size, raw_counts

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

_STD_FLOOR = 1e-3


@dataclass(frozen=True, eq=False)
class GenePanel:
    """An ordered gene panel with training-spot normalisation statistics.

    Attributes
    ----------
    genes
        Gene names, in model order.
    mean, std
        Per-gene mean and standard deviation of the log-normalised expression over the training spots.
    target_sum
        Library size used for normalisation (median over training spots).
    params
        How the panel was chosen (``n_top_genes``, ``flavor``, ``n_train``...).
    """

    genes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    target_sum: float
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.genes) == 0:
            raise ValueError("a gene panel needs at least one gene.")
        if len(set(self.genes)) != len(self.genes):
            raise ValueError("the gene panel has duplicated genes; make var_names unique (AnnData.var_names_make_unique()).")
        mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        std = np.asarray(self.std, dtype=np.float32).reshape(-1)
        if mean.shape != (len(self.genes),) or std.shape != (len(self.genes),):
            raise ValueError(f"panel statistics have shapes {mean.shape}/{std.shape}, expected ({len(self.genes)},).")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("panel statistics must be finite with positive std.")
        if not (np.isfinite(self.target_sum) and self.target_sum > 0):
            raise ValueError(f"panel target_sum must be positive, got {self.target_sum}.")
        object.__setattr__(self, "genes", tuple(str(g) for g in self.genes))
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def __len__(self) -> int:
        return len(self.genes)

    def __repr__(self) -> str:
        head = ", ".join(self.genes[:5]) + (", ..." if len(self) > 5 else "")
        return f"GenePanel({len(self)} genes [{head}], target_sum={self.target_sum:.0f}, id={self.identity()[:12]})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GenePanel):
            return NotImplemented
        return (
            self.genes == other.genes
            and np.array_equal(self.mean, other.mean)
            and np.array_equal(self.std, other.std)
            and self.target_sum == other.target_sum
        )

    __hash__ = None  # type: ignore[assignment]

    def identity(self) -> str:
        """SHA-256 of the ordered gene list (what models are checked against)."""
        return hashlib.sha256("\n".join(self.genes).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe representation (also what is stored in ``.uns``)."""
        return {
            "genes": list(self.genes),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "target_sum": float(self.target_sum),
            "params": dict(self.params),
            "identity": self.identity(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenePanel:
        """Inverse of :meth:`to_dict`; checks the stored identity."""
        try:
            panel = cls(
                genes=tuple(np.asarray(d["genes"]).tolist()),
                mean=np.asarray(d["mean"]),
                std=np.asarray(d["std"]),
                target_sum=float(d["target_sum"]),
                params=dict(d.get("params", {})),
            )
        except KeyError as e:
            raise ValueError(f"not a gene panel: missing field {e}. Create one with c2lst.pp.gene_panel.") from None
        if "identity" in d and str(d["identity"]) != panel.identity():
            raise ValueError("gene panel identity does not match its genes: the stored panel is corrupt.")
        return panel

    @classmethod
    def from_table(cls, table: AnnData, key: str = "c2lst_panel") -> GenePanel:
        """Read a panel stored by :func:`gene_panel` in ``table.uns[key]``."""
        if key not in table.uns:
            raise ValueError(f"no gene panel in .uns[{key!r}]; create one with c2lst.pp.gene_panel(sdata, train_mask=...).")
        return cls.from_dict(table.uns[key])

    def validate(self, var_names: Iterable[str]) -> None:
        """Raise ``ValueError`` if any panel gene is missing from ``var_names``."""
        present = set(map(str, var_names))
        missing = [g for g in self.genes if g not in present]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(self)} panel genes are missing from the data (e.g. {missing[:5]}); "
                "use data measured on the same gene panel, or build a new panel with c2lst.pp.gene_panel."
            )

    def expression(self, table: AnnData, *, layer_counts: str | None = None) -> np.ndarray:
        """Log-normalised expression of the panel genes, ``(n_spots, n_genes)`` float32.

        Library sizes use all genes of ``table``; the scale is the panel's own ``target_sum`` (from training
        spots), so test spots are normalised exactly like training spots.
        """
        self.validate(table.var_names)
        lib = library_sizes(raw_counts(table, layer=layer_counts))
        counts = raw_counts(table, layer=layer_counts, genes=list(self.genes))
        return lognorm(counts, lib, self.target_sum)

    def standardize(self, expr: np.ndarray) -> np.ndarray:
        """``(expr - mean) / std`` as float32; ``expr`` is ``(n, n_genes)`` log-normalised expression."""
        expr = self._check(expr)
        return ((expr - self.mean) / self.std).astype(np.float32)

    def destandardize(self, z: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`standardize`."""
        z = self._check(z)
        return (z * self.std + self.mean).astype(np.float32)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(self):
            raise ValueError(f"expression has shape {x.shape}, expected (n, {len(self)}) in panel gene order.")
        if not np.isfinite(x).all():
            raise ValueError("expression contains NaN or infinite values; fill or drop those profiles.")
        return x


def variance_panel(train: np.ndarray, genes: Sequence[str], target_sum: float, *, n_top_genes: int,
                   min_spots: float) -> tuple[GenePanel, np.ndarray]:
    """Choose the ``n_top_genes`` most variable genes of the training spots' lognorm expression, with their statistics.

    Genes detected (> 0) in fewer than ``min_spots`` of the rows are excluded; ties keep the gene order. This is
    the array-level core of :func:`gene_panel`, shared with the benchmark.

    Parameters
    ----------
    train
        ``(n_train, n_genes)`` lognorm expression of the training spots only, at ``target_sum``.
    genes
        The ``n_genes`` gene names.
    target_sum
        Normalisation target sum of ``train`` (recorded in the panel).
    n_top_genes, min_spots
        As in :func:`gene_panel`.

    Returns
    -------
    The :class:`GenePanel` and the column indices of its genes in ``train`` (in panel order).

    Raises
    ------
    ValueError
        When fewer than ``n_top_genes`` genes pass ``min_spots``.

    Warns
    -----
    UserWarning
        When panel genes have zero variance over the training spots.
    """
    detected = (train > 0).mean(axis=0) >= min_spots
    n_ok = int(detected.sum())
    if n_ok < n_top_genes:
        raise ValueError(f"only {n_ok} genes are detected in >= {min_spots:.0%} of the training spots, fewer than "
                         f"n_top_genes={n_top_genes}; lower `n_top_genes` or `min_spots`.")
    var = train.var(axis=0)
    var[~detected] = -np.inf
    order = np.argsort(-var, kind="stable")[:n_top_genes]
    flat = np.asarray(genes)[order][var[order] <= 0]
    if len(flat):
        warnings.warn(f"{len(flat)} of the {n_top_genes} panel genes do not vary over the {len(train)} training spots (e.g. "
                      f"{[str(g) for g in flat[:5]]}): they carry no signal and are predicted as a constant. Use more training "
                      "spots or a smaller `n_top_genes`.", UserWarning, stacklevel=3)
    panel = GenePanel(
        genes=tuple(np.asarray(genes)[order]),
        mean=train[:, order].mean(axis=0),
        std=np.maximum(train[:, order].std(axis=0), _STD_FLOOR),
        target_sum=target_sum,
        params={"n_top_genes": int(n_top_genes), "flavor": "variance", "min_spots": float(min_spots), "n_train": len(train)},
    )
    return panel, order


PANEL_FLAVORS = ("variance", "seurat", "cell_ranger", "seurat_v3", "seurat_v3_paper")


def check_include(include: Any, var_names: Any, n_top_genes: int) -> list[str]:
    """Validate the genes forced into a panel: known, unique, at most ``n_top_genes``; near matches named when unknown."""
    import difflib

    genes = [include] if isinstance(include, str) else [str(g) for g in (include or [])]
    names = [str(g) for g in var_names]
    known = set(names)
    unknown = [g for g in genes if g not in known]
    if unknown:
        by_upper = {n.upper(): n for n in names}
        hints = {g: ([by_upper[g.upper()]] if g.upper() in by_upper else difflib.get_close_matches(g, names, n=3))
                 for g in unknown}
        text = "; ".join(f"{g!r}: did you mean {h}?" if h else f"{g!r}: no similar name" for g, h in hints.items())
        raise ValueError(f"`include` names {len(unknown)} genes that are not in the table's var_names ({text}). Pass "
                         "names exactly as in var_names.")
    if len(set(genes)) != len(genes):
        raise ValueError(f"`include` lists a gene twice: {genes}; pass each gene once.")
    if len(genes) > n_top_genes:
        raise ValueError(f"`include` forces {len(genes)} genes into a panel of n_top_genes={n_top_genes}; raise `n_top_genes`.")
    return genes


def _ranked(train: np.ndarray, train_counts: Any, genes: Sequence[str], flavor: str, candidates: np.ndarray,
            n_top_genes: int) -> np.ndarray:
    """Column indices of the ``candidates`` genes, most variable first, by ``flavor`` (training spots only)."""
    if flavor == "variance":
        score = train.var(axis=0)
    else:
        import anndata as ad
        import pandas as pd
        import scanpy as sc

        cols = np.flatnonzero(candidates)
        scratch = ad.AnnData(X=train[:, cols], var=pd.DataFrame(index=[str(genes[c]) for c in cols]))
        scratch.uns["log1p"] = {"base": None}  # lognorm is log1p of normalised counts
        v3 = flavor.startswith("seurat_v3")
        if v3:
            scratch.layers["counts"] = train_counts[:, cols]
        try:
            sc.pp.highly_variable_genes(scratch, flavor=flavor, n_top_genes=min(n_top_genes, len(cols)),
                                        layer="counts" if v3 else None)
        except ImportError as e:
            raise ImportError(f"flavor={flavor!r} needs scikit-misc (`pip install scikit-misc`), or use "
                              "flavor='seurat' or 'variance'.") from e
        score = np.full(train.shape[1], -np.inf)
        col = "variances_norm" if v3 else "dispersions_norm"
        score[cols] = np.nan_to_num(scratch.var[col].to_numpy(np.float64), nan=-np.inf)
    score = np.where(candidates, score, -np.inf)
    order = np.argsort(-score, kind="stable")
    order = order[np.isfinite(score[order])]  # never a non-candidate (a forced or undetected gene)
    if len(order) < n_top_genes:
        raise ValueError(f"only {len(order)} candidate genes have a {flavor!r} score (constant genes have none), fewer "
                         f"than the {n_top_genes} needed; lower `n_top_genes` or use flavor='variance'.")
    return order


@renamed_kwargs(n_top="n_top_genes")
@doc_params
def gene_panel(
    data: SpatialData | AnnData,
    *,
    n_top_genes: int = 256,
    train_mask: Any = None,
    min_spots: float = 0.1,
    layer_counts: str | None = None,
    flavor: str = "variance",
    include: Sequence[str] | None = None,
    table_key: str | None = None,
    key_added: str = "c2lst_panel",
    overwrite: bool = False,
    copy: bool = False,
) -> GenePanel | tuple[SpatialData | AnnData, GenePanel]:
    """Choose a panel of highly variable genes from the training spots only.

    Genes detected in at least ``min_spots`` of the training spots are ranked on the training spots only:
    by the variance of their log-normalised expression (``flavor="variance"``) or by
    :func:`scanpy.pp.highly_variable_genes` (``"seurat"``, ``"cell_ranger"``: normalised dispersion of the
    lognorm; ``"seurat_v3"``: standardised variance of the raw counts, needs ``scikit-misc``). The genes in
    ``include`` come first (e.g. ``ERBB2`` on a HER2+ section), then the best-ranked others up to ``n_top_genes``.
    The normalisation target sum and the per-gene mean/std are also computed on training spots.

    Parameters
    ----------
    {data}
        Raw counts in ``X`` (or ``layer_counts``).
    n_top_genes
        Number of genes in the panel (scanpy's name; ``n_top`` is its deprecated old name).
    {train_mask}
        ``None`` uses every spot.
    min_spots
        Minimum fraction of training spots in which a gene must be detected (not applied to ``include``).
    flavor
        How genes are ranked: ``"variance"`` (the default), or a flavor of
        :func:`scanpy.pp.highly_variable_genes`: ``"seurat"``, ``"cell_ranger"``, ``"seurat_v3"``,
        ``"seurat_v3_paper"``.
    include
        Genes of interest forced into the panel, whatever their rank (at most ``n_top_genes``); names must be in
        ``var_names`` exactly (the error lists near matches).
    {layer_counts}
    {table_key}
    {key_added_overwrite_copy}

    Returns
    -------
    The :class:`GenePanel` (``(copy, panel)`` with ``copy=True``). Also writes to the table:

    - ``.var[key_added]``: bool, gene in the panel.
    - ``.uns[key_added]``: :meth:`GenePanel.to_dict` (genes in order, statistics, params with ``flavor``
      and ``include``).

    Raises
    ------
    ValueError
        For an unknown ``flavor``, a gene of ``include`` not in ``var_names`` (near matches are listed), or
        fewer than ``n_top_genes`` genes passing ``min_spots``.
    """
    start = logg.info("choosing the gene panel on training spots")
    data = writable(data, copy)
    _, table, _ = resolve_table(data, table_key)
    check_key(table.uns, key_added, where=".uns", overwrite=overwrite)
    if not isinstance(n_top_genes, int | np.integer) or n_top_genes < 1:
        raise ValueError(f"`n_top_genes` must be a positive integer, got {n_top_genes!r}.")
    if not 0 <= min_spots < 1:
        raise ValueError(f"`min_spots` is a fraction in [0, 1), got {min_spots}.")
    if not table.var_names.is_unique:
        raise ValueError("gene names are not unique; call table.var_names_make_unique() first.")
    if flavor not in PANEL_FLAVORS:
        raise ValueError(f"unknown flavor {flavor!r}; choose one of {list(PANEL_FLAVORS)}.")
    include = check_include(include, table.var_names, n_top_genes)
    mask = as_mask(train_mask, table.n_obs)
    counts = raw_counts(table, layer=layer_counts)
    lib = library_sizes(counts)[mask]
    target_sum = median_library_size(lib)
    rows = np.flatnonzero(mask)
    train = lognorm(counts[rows], lib, target_sum)
    if flavor == "variance" and not include:
        panel, _ = variance_panel(train, table.var_names, target_sum, n_top_genes=n_top_genes, min_spots=min_spots)
    else:
        forced = table.var_names.get_indexer(include)
        candidates = (train > 0).mean(axis=0) >= min_spots
        candidates[forced] = False
        n_free = n_top_genes - len(forced)
        if int(candidates.sum()) < n_free:
            raise ValueError(f"only {int(candidates.sum())} genes besides `include` are detected in >= {min_spots:.0%} "
                             f"of the training spots, fewer than the {n_free} needed; lower `n_top_genes` or `min_spots`.")
        order = np.r_[forced, _ranked(train, counts[rows], table.var_names, flavor, candidates, n_free)[:n_free]]
        order = order.astype(np.int64)
        panel = GenePanel(
            genes=tuple(np.asarray(table.var_names)[order]),
            mean=train[:, order].mean(axis=0),
            std=np.maximum(train[:, order].std(axis=0), _STD_FLOOR),
            target_sum=target_sum,
            params={"n_top_genes": int(n_top_genes), "flavor": flavor, "min_spots": float(min_spots), "n_train": len(train),
                    "include": list(include)},
        )
    table.var[key_added] = table.var_names.isin(panel.genes)
    table.uns[key_added] = panel.to_dict()
    logg.info(f"    added .var[{key_added!r}] and .uns[{key_added!r}] ({len(panel)} genes)", time=start)
    return returned(data, panel, copy)
