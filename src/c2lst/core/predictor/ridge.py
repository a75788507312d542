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
