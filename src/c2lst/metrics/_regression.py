"""Per-gene regression metrics between measured and predicted expression."""
from __future__ import annotations

import numpy as np


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 1:
        t = t[:, None]
    if p.ndim == 1:
        p = p[:, None]
    if t.shape != p.shape or t.ndim != 2:
        raise ValueError(f"measured {t.shape} and predicted {p.shape} must have the same (n_spots, n_genes) shape.")
    if t.shape[0] == 0:
        raise ValueError("no spots to compare; pass at least one spot.")
    return t, p


def pearson_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation per gene (column).

    Parameters
    ----------
    y_true, y_pred
        ``(n_spots, n_genes)`` (or ``(n_spots,)``) measured and predicted values.

    Returns
    -------
    ``(n_genes,)`` float64 correlations; ``NaN`` where either column is constant (or has < 2 spots), without
    warnings.
    """
    t, p = _pair(y_true, y_pred)
    tc = t - t.mean(axis=0)
    pc = p - p.mean(axis=0)
    num = (tc * pc).sum(axis=0)
    den = np.sqrt((tc**2).sum(axis=0) * (pc**2).sum(axis=0))
    scale = np.maximum(np.abs(t).max(axis=0), np.abs(p).max(axis=0))
    ok = (den > 1e-12 * np.maximum(scale, 1.0) ** 2) & (t.shape[0] > 1)
    out = np.full(t.shape[1], np.nan)
    out[ok] = np.clip(num[ok] / den[ok], -1.0, 1.0)
    return out


def finite_mean(values: np.ndarray) -> float:
    """Return the mean over the non-NaN entries of ``values``; NaN, without a warning, when none is finite.

    For per-gene correlations, which are NaN for constant genes.
    """
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def mse_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Mean squared error per gene, ``(n_genes,)``."""
    t, p = _pair(y_true, y_pred)
    return ((t - p) ** 2).mean(axis=0)


def mae_per_gene(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Mean absolute error per gene, ``(n_genes,)``."""
    t, p = _pair(y_true, y_pred)
    return np.abs(t - p).mean(axis=0)
