"""Cellular composition of real vs synthetic patches (nuclei count, size, haematoxylin density)."""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from ._features import NUCLEI_FEATURES, nuclei_stats


def composition_distances(real: np.ndarray, synthetic: np.ndarray, *, min_area: int = 4) -> dict[str, float]:
    """Compare the nuclei statistics of real and synthetic patches.

    Parameters
    ----------
    real, synthetic
        ``(n, 3, H, W)`` uint8 RGB patches.
    min_area
        Smallest nucleus kept, in pixels.

    Returns
    -------
    For each of ``nuclei_count``, ``nuclear_area``, ``haematoxylin_density``: ``{name}_real`` and
    ``{name}_synthetic`` (means) and ``{name}_wasserstein`` (1-D Wasserstein distance between the two
    distributions, scipy.stats.wasserstein_distance).
    """
    a = nuclei_stats(real, min_area=min_area)
    b = nuclei_stats(synthetic, min_area=min_area)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("composition needs at least one real and one synthetic patch.")
    out: dict[str, float] = {}
    for j, name in enumerate(NUCLEI_FEATURES):
        if name == "nuclear_area_std":
            continue
        out[f"{name}_real"] = float(a[:, j].mean())
        out[f"{name}_synthetic"] = float(b[:, j].mean())
        out[f"{name}_wasserstein"] = float(wasserstein_distance(a[:, j], b[:, j]))
    return out
