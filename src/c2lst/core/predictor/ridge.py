"""Per-gene ridge regression: one penalty per target column, all from one SVD."""
from __future__ import annotations

import numpy as np

RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))


def ridge_per_target(x: np.ndarray, y: np.ndarray, w: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted ridge regression with one penalty per target column, from one SVD.

    Minimises ``sum_i w_i (y_ij - b_j - x_i . c_j)^2 + alpha_j |c_j|^2`` for every target ``j``.

    Returns
    -------
    ``(coef (n_targets, n_features), intercept (n_targets,))``.
    """
    w = np.asarray(w, dtype=np.float64)
    xm, ym = np.average(x, axis=0, weights=w), np.average(y, axis=0, weights=w)
    sw = np.sqrt(w)[:, None]
    u, s, vt = np.linalg.svd((x - xm) * sw, full_matrices=False)
    uty = u.T @ ((y - ym) * sw)  # (k, targets)
    shrink = s[:, None] / (s[:, None] ** 2 + np.asarray(alpha, dtype=np.float64)[None, :])
    coef = (vt.T @ (shrink * uty)).T
    return coef, ym - coef @ xm


def group_cv_alpha(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """One penalty per target column by leave-one-group-out CV: the alpha with the least held-out squared error.

    Each group (e.g. section) is predicted by a ridge fitted on the other groups (one SVD per group, every alpha);
    the squared errors are summed over groups. Rows of one section are correlated, so leave-one-out CV picks
    penalties that fit within-section structure; holding out whole sections does not.
    """
    groups = np.asarray(groups)
    labels = np.unique(groups)
    if len(labels) < 2:
        raise ValueError(f"leave-one-group-out penalties need at least two groups, got {len(labels)}.")
    alphas = np.asarray(alphas, dtype=np.float64)
    err = np.zeros((len(alphas), y.shape[1]))
    for g in labels:
        tr, va = groups != g, groups == g
        xm, ym = x[tr].mean(axis=0), y[tr].mean(axis=0)
        u, s, vt = np.linalg.svd(x[tr] - xm, full_matrices=False)
        uty = u.T @ (y[tr] - ym)
        xv = (x[va] - xm) @ vt.T  # held-out rows in the singular basis
        for i, a in enumerate(alphas):
            err[i] += ((xv @ ((s / (s**2 + a))[:, None] * uty) + ym - y[va]) ** 2).sum(axis=0)
    return alphas[err.argmin(axis=0)]
