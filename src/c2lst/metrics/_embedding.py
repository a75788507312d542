"""2-D embedding of real + synthetic features for overlap plots."""
from __future__ import annotations

import numpy as np


def embed_2d(real: np.ndarray, synthetic: np.ndarray, *, method: str = "umap", n_neighbors: int = 15,
             seed: int = 0) -> np.ndarray:
    """UMAP (or PCA) coordinates of real and synthetic features, standardised on the real set.

    Parameters
    ----------
    real, synthetic
        ``(n, F)`` feature arrays.
    method
        ``"umap"`` (umap-learn, installed with scanpy) or ``"pca"``.
    n_neighbors
        UMAP neighbourhood size (capped at the number of rows - 1).
    seed
        Random state of UMAP.

    Returns
    -------
    ``(n_real + n_synthetic, 2)`` float32 coordinates, real rows first.
    """
    r = np.asarray(real, dtype=np.float64)
    s = np.asarray(synthetic, dtype=np.float64)
    if r.ndim != 2 or s.ndim != 2 or r.shape[1] != s.shape[1]:
        raise ValueError(f"real {r.shape} and synthetic {s.shape} must be (n, F) with the same F.")
    mu, sd = r.mean(axis=0), np.maximum(r.std(axis=0), 1e-8)
    x = np.clip((np.concatenate([r, s]) - mu) / sd, -5, 5)
    if len(x) < 4:
        raise ValueError(f"need at least 4 rows to embed, got {len(x)}.")
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_neighbors=min(n_neighbors, len(x) - 1), random_state=seed, n_jobs=1)
        return reducer.fit_transform(x).astype(np.float32)
    if method == "pca":
        xc = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        coords = xc @ vt[:2].T
        signs = np.sign(coords[np.abs(coords).argmax(axis=0), range(coords.shape[1])])
        return (coords * np.where(signs == 0, 1, signs)).astype(np.float32)
    raise ValueError(f"`method` must be 'umap' or 'pca', got {method!r}.")
