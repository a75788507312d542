"""Moran's I of values on spot coordinates (own implementation, binary k-NN or radius weights)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree


def spatial_weights(coords: np.ndarray, *, k: int | None = 6, radius: float | None = None) -> sp.csr_matrix:
    """Binary spatial weights between spots.

    Parameters
    ----------
    coords
        ``(n, 2)`` spot coordinates.
    k
        Number of nearest neighbours (used when ``radius`` is ``None``).
    radius
        Link every pair closer than ``radius`` (same units as ``coords``) instead of k-NN.

    Returns
    -------
    ``(n, n)`` symmetric CSR matrix of 0/1 weights, zero diagonal.
    """
    xy = np.asarray(coords, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[0] < 3:
        raise ValueError(f"coords must be (n >= 3, d), got shape {xy.shape}.")
    n = xy.shape[0]
    tree = cKDTree(xy)
    if radius is not None:
        if not radius > 0:
            raise ValueError(f"`radius` must be positive, got {radius}.")
        w = tree.sparse_distance_matrix(tree, radius, output_type="coo_matrix").tocsr()
        w.data[:] = 1.0
    else:
        if k is None or not 1 <= k < n:
            raise ValueError(f"`k` must be in [1, {n - 1}] for {n} spots, got {k}.")
        _, idx = tree.query(xy, k=k + 1)
        rows = np.repeat(np.arange(n), k)
        w = sp.csr_matrix((np.ones(n * k), (rows, idx[:, 1:].ravel())), shape=(n, n))
        w = w.maximum(w.T)
    w.setdiag(0)
    w.eliminate_zeros()
    return w.tocsr()


def morans_i(values: np.ndarray, coords: np.ndarray | None = None, *, weights: sp.spmatrix | None = None,
             k: int | None = 6, radius: float | None = None) -> np.ndarray:
    """Global Moran's I of each column of ``values``.

    ``I = n / W * (z' W z) / (z' z)`` with ``z`` the centred values and ``W`` the sum of weights.

    Parameters
    ----------
    values
        ``(n,)`` or ``(n, g)`` values on the spots.
    coords
        ``(n, 2)`` spot coordinates (ignored when ``weights`` is given).
    weights
        Precomputed ``(n, n)`` weights (e.g. from :func:`spatial_weights`).
    k, radius
        Passed to :func:`spatial_weights`.

    Returns
    -------
    ``(g,)`` float64 Moran's I (a float array of length 1 for a 1-D input); ``NaN`` for constant columns.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if weights is None:
        if coords is None:
            raise ValueError("pass `coords` (n, 2) or precomputed `weights`.")
        weights = spatial_weights(coords, k=k, radius=radius)
    w = sp.csr_matrix(weights)
    if w.shape != (v.shape[0], v.shape[0]):
        raise ValueError(f"weights {w.shape} do not match {v.shape[0]} spots.")
    total = w.sum()
    if total <= 0:
        raise ValueError("the spatial weights are all zero; increase `k` or `radius`.")
    z = v - v.mean(axis=0)
    den = (z**2).sum(axis=0)
    num = (z * (w @ z)).sum(axis=0)
    out = np.full(v.shape[1], np.nan)
    ok = den > 1e-12 * np.maximum((v**2).sum(axis=0), 1e-300)
    out[ok] = v.shape[0] / total * num[ok] / den[ok]
    return out
