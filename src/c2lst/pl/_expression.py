"""Reading gene values and the held-out spots from a table, for the plots."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .._utils import as_mask, recorded_train_mask
from ..metrics import pearson_per_gene

if TYPE_CHECKING:
    from anndata import AnnData

ERROR = "error"  # pseudo-layer: predicted - measured
MEASURED, PREDICTED = "lognorm", "c2lst_pred"
DIVERGING = "PiYG"  # colormap of the error layer, centred on 0


def layer_matrix(table: AnnData, layer: str) -> Any:
    """``table.X`` for ``"X"``, else ``table.layers[layer]``, with a clear error when missing."""
    if layer == "X":
        return table.X
    if layer not in table.layers:
        hint = {"lognorm": "run c2lst.pp.normalize first", "c2lst_pred": "run c2lst.tl.predict first"}.get(layer, "")
        raise ValueError(f"layer {layer!r} not in the table (layers: {list(table.layers)}); {hint or 'pass an existing layer'}.")
    return table.layers[layer]


def gene_values(table: AnnData, gene: str, layer: str) -> np.ndarray:
    """Float values of one gene in one layer, as a dense ``(n_obs,)`` array.

    ``layer="error"`` gives ``c2lst_pred - lognorm`` (predicted minus measured).
    """
    if layer == ERROR:
        return gene_values(table, gene, PREDICTED) - gene_values(table, gene, MEASURED)
    if gene not in table.var_names:
        raise ValueError(f"gene {gene!r} not in the table's var_names; pick one of e.g. {list(table.var_names[:5])}.")
    panel_col = f"{layer}_panel"  # written by tl.predict: the gene is predicted from histology
    if panel_col in table.var and not bool(table.var[panel_col].iloc[table.var_names.get_loc(gene)]):
        raise ValueError(f"gene {gene!r} is outside the predicted gene panel of layer {layer!r}; choose a gene with "
                         f"table.var[{panel_col!r}] True.")
    col = layer_matrix(table, layer)[:, table.var_names.get_loc(gene)]
    col = col.toarray() if sp.issparse(col) else np.asarray(col)
    vals = np.asarray(col, dtype=np.float64).reshape(-1)
    if not np.isfinite(vals).any():
        raise ValueError(f"layer {layer!r} has no value for gene {gene!r} (outside the predicted gene panel?); "
                         "choose a panel gene (table.var['c2lst_panel']).")
    return vals


def heldout_mask(table: AnnData, layer: str, train_mask: Any = None) -> np.ndarray:
    """Spots to evaluate ``layer`` on: not in ``train_mask`` (or the recorded training spots); else all spots."""
    train = as_mask(train_mask, table.n_obs) if train_mask is not None else recorded_train_mask(table, layer)
    if train is None or train.all():
        return np.ones(table.n_obs, dtype=bool)
    return ~train


def pearson(measured: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson r of one gene over the spots where both values are finite (``NaN`` if undefined)."""
    ok = np.isfinite(measured) & np.isfinite(predicted)
    if ok.sum() < 2:
        return float("nan")
    return float(pearson_per_gene(measured[ok], predicted[ok])[0])


def contrast_limits(values: np.ndarray, layer: str) -> tuple[float, float]:
    """1st-99th percentile of the finite values (symmetric around 0 for the error layer)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    if layer == ERROR:
        hi = float(np.percentile(np.abs(finite), 99)) or 1.0
        return -hi, hi
    lo, hi = (float(v) for v in np.percentile(finite, [1, 99]))
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
