"""Distribution metrics between real and synthetic feature sets.

All functions take ``(n, F)`` feature arrays. :func:`standardize_on_real` puts both sets on the real
set's per-feature mean/std and clips to ``±clip`` so that one runaway feature cannot dominate a distance.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg
from scipy.spatial.distance import cdist

_STD_FLOOR = 1e-8


def _features(x: np.ndarray, name: str, min_rows: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < min_rows:
        raise ValueError(f"`{name}` must be (n >= {min_rows}, F) features, got shape {a.shape}.")
    if not np.isfinite(a).all():
        raise ValueError(f"`{name}` contains NaN or infinite values; drop those rows first.")
    return a


def _same_width(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sets have different widths ({a.shape[1]} vs {b.shape[1]}); use one feature space.")


def standardize_on_real(real: np.ndarray, synthetic: np.ndarray, *, clip: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Standardise both sets with the real set's mean/std and clip to ``[-clip, clip]``.

    Returns
    -------
    ``(real_z, synthetic_z)`` float64 arrays.
    """
    r = _features(real, "real")
    s = _features(synthetic, "synthetic", min_rows=1)
    _same_width(r, s)
    mu, sd = r.mean(axis=0), np.maximum(r.std(axis=0), _STD_FLOOR)
    return np.clip((r - mu) / sd, -clip, clip), np.clip((s - mu) / sd, -clip, clip)


def out_of_range_share(real: np.ndarray, synthetic: np.ndarray, *, clip: float = 5.0) -> float:
    """Share of synthetic rows with any feature more than ``clip`` real standard deviations from the real mean."""
    r = _features(real, "real")
    s = _features(synthetic, "synthetic", min_rows=1)
    _same_width(r, s)
    mu, sd = r.mean(axis=0), np.maximum(r.std(axis=0), _STD_FLOOR)
    return float((np.abs((s - mu) / sd) > clip).any(axis=1).mean())


def frechet_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID formula)."""
    a, b = _features(real, "real"), _features(synthetic, "synthetic")
    _same_width(a, b)
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        eps = 1e-6 * np.eye(s1.shape[0])
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = np.real(covmean)
    return float(max(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean), 0.0))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, coef0: float) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    m, n = x.shape[0], y.shape[0]
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kid(real: np.ndarray, synthetic: np.ndarray, *, n_subsets: int = 10, subset_size: int = 200,
        degree: int = 3, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² with the polynomial kernel ``(x·y / F + coef0) ** degree``.

    Averaged over ``n_subsets`` random subsets of ``min(subset_size, n_real, n_synthetic)`` rows each.

    Returns
    -------
    ``(mean, std)`` of the subset estimates.
    """
    a, b = _features(real, "real"), _features(synthetic, "synthetic")
    _same_width(a, b)
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.default_rng(seed)
    vals = [
        _mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)], b[rng.choice(b.shape[0], m, replace=False)],
                       degree, coef0)
        for _ in range(n_subsets)
    ]
    return float(np.mean(vals)), float(np.std(vals))


def diversity_ratio(real: np.ndarray, synthetic: np.ndarray) -> float:
    """Feature spread of the synthetic set relative to the real set: ``sqrt(tr Cov_syn / tr Cov_real)``.

    1 means the same spread, < 1 mode collapse, > 1 more spread than the real tiles.
    """
    a, b = _features(real, "real"), _features(synthetic, "synthetic")
    _same_width(a, b)
    tr_real = a.var(axis=0, ddof=1).sum()
    if tr_real <= 0:
        raise ValueError("the real features have zero spread; the diversity ratio is undefined.")
    return float(np.sqrt(b.var(axis=0, ddof=1).sum() / tr_real))


def _kth_nn_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = cdist(x, x)
    return np.sort(d, axis=1)[:, k]  # column 0 is the point itself


def prdc(real: np.ndarray, synthetic: np.ndarray, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage with k-NN radii (Naeem et al. 2020).

    Parameters
    ----------
    real, synthetic
        ``(n, F)`` features (standardise them first, e.g. with :func:`standardize_on_real`).
    k
        Neighbour defining each point's radius.

    Returns
    -------
    ``{"precision", "recall", "density", "coverage"}``.
    """
    a, b = _features(real, "real", k + 1), _features(synthetic, "synthetic", k + 1)
    _same_width(a, b)
    r_real = _kth_nn_radius(a, k)
    r_fake = _kth_nn_radius(b, k)
    d = cdist(a, b)  # real x fake
    inside_real = d <= r_real[:, None]
    return {
        "precision": float(inside_real.any(axis=0).mean()),
        "recall": float((d <= r_fake[None, :]).any(axis=1).mean()),
        "density": float(inside_real.sum() / (k * b.shape[0])),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }


def fidelity_report(real: np.ndarray, synthetic: np.ndarray, *, clip: float = 5.0, k: int = 5,
                    seed: int = 0) -> dict[str, float]:
    """Fréchet distance, KID, PRDC, diversity ratio and out-of-range share on real-standardised features.

    Returns
    -------
    Dict with ``frechet``, ``kid``, ``kid_std``, ``precision``, ``recall``, ``density``, ``coverage``,
    ``diversity_ratio``, ``out_of_range``, ``n_real``, ``n_synthetic``.
    """
    rz, sz = standardize_on_real(real, synthetic, clip=clip)
    kid_mean, kid_std = kid(rz, sz, seed=seed)
    return {
        "frechet": frechet_distance(rz, sz),
        "kid": kid_mean,
        "kid_std": kid_std,
        **prdc(rz, sz, k=k),
        "diversity_ratio": diversity_ratio(rz, sz),
        "out_of_range": out_of_range_share(real, synthetic, clip=clip),
        "n_real": float(rz.shape[0]),
        "n_synthetic": float(sz.shape[0]),
    }


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    half = n // 2
    return order[:half], order[half:2 * half]


def floor_halves(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the two halves A (reference) and B that :func:`fidelity_floor` draws from ``n`` real rows.

    Reconstruct (or otherwise derive) only the rows of B to score them against A exactly as the floor scores
    B itself: no reconstruction then sits next to its own original in the reference.
    """
    return _halves(int(n), np.random.default_rng(seed))


def fidelity_floor(real: np.ndarray, synthetic: np.ndarray, *, clip: float = 5.0, k: int = 5,
                   seed: int = 0) -> dict[str, float]:
    """Score two disjoint halves of the real set against each other (the floor), and the synthetic set at their size.

    The real set is split into two disjoint random halves A and B. The floor is the report of A against B: what
    real tiles score against real tiles. The synthetic set is scored against A with a random draw of ``len(B)``
    synthetic rows (all of them when there are fewer), so both numbers carry the same small-sample bias, which
    for the Fréchet distance grows quickly as the rows approach the feature count. A synthetic set is as close
    as real tiles when its ``*_vs_half`` values are near the ``*_floor`` values.

    Returns
    -------
    The keys of :func:`fidelity_report` with the suffix ``_floor`` (A against B) and ``_vs_half`` (A against the
    synthetic draw), without the row counts; ``n_floor``, the rows of each half.

    Raises
    ------
    ValueError
        When the real set has fewer than ``2 * (k + 1)`` rows or the synthetic set fewer than ``k + 1`` (PRDC's
        radii need ``k + 1`` rows in each set).
    """
    a = _features(real, "real", 2 * (k + 1))
    s = _features(synthetic, "synthetic", k + 1)
    rng = np.random.default_rng(seed)
    ref_rows, other_rows = _halves(len(a), rng)
    ref, other = a[ref_rows], a[other_rows]
    half = len(ref_rows)
    drawn = s[rng.choice(len(s), min(half, len(s)), replace=False)]
    out: dict[str, float] = {}
    for suffix, b in (("floor", other), ("vs_half", drawn)):
        rep = fidelity_report(ref, b, clip=clip, k=k, seed=seed)
        out.update({f"{key}_{suffix}": v for key, v in rep.items() if key not in ("n_real", "n_synthetic")})
    out["n_floor"] = float(half)
    return out
