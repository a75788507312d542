"""Whether a generator uses the expression profile: denoising error shares, and the profile's effect on predictions."""
from __future__ import annotations

import numpy as np

from ._regression import finite_mean, pearson_per_gene


def conditioning_scores(own: np.ndarray, partner: np.ndarray, unconditional: np.ndarray) -> dict[str, float]:
    """Summarise per-patch denoising errors with the own profile, another spot's profile, and none.

    Parameters
    ----------
    own, partner, unconditional
        ``(n,)`` errors of the same noisy latents (:func:`c2lst.core.conditioning.denoising_errors`, averaged over draws).

    Returns
    -------
    ``loss_own``, ``loss_partner``, ``loss_unconditional`` (means); ``conditioning_gain``: the share of the
    unconditional error the own profile removes, ``(u - o) / u``; ``profile_gain``: the share of the
    partner-profile error the own profile removes, ``(p - o) / p``; ``profile_share``: the part of the
    conditioning gain that is specific to the own profile, ``(p - o) / (u - o)`` (0: any profile helps as much,
    1: another spot's profile helps no more than none; NaN when conditioning does not lower the error);
    ``own_wins``: the share of patches whose own profile beats the partner's; ``n``.
    """
    o, p, u = (np.asarray(v, dtype=np.float64).ravel() for v in (own, partner, unconditional))
    if not (len(o) == len(p) == len(u)) or len(o) == 0:
        raise ValueError(f"need the same number (>= 1) of own, partner and unconditional errors, got {len(o)}, "
                         f"{len(p)}, {len(u)}.")
    lo, lp, lu = float(o.mean()), float(p.mean()), float(u.mean())
    return {"loss_own": lo, "loss_partner": lp, "loss_unconditional": lu,
            "conditioning_gain": (lu - lo) / lu if lu > 0 else float("nan"),
            "profile_gain": (lp - lo) / lp if lp > 0 else float("nan"),
            "profile_share": (lp - lo) / (lu - lo) if lu > lo else float("nan"),
            "own_wins": float(np.mean(o < p)), "n": float(len(o))}


def profile_response(delta_predicted: np.ndarray, delta_profile: np.ndarray) -> dict[str, float]:
    """How well a change of profile moves a predictor's reading of the generated tile along that change.

    Parameters
    ----------
    delta_predicted
        ``(n, g)``: prediction on the tile generated for the own profile minus on the tile generated (same seed)
        for the partner profile (or on the two spots' real patches: the reference).
    delta_profile
        ``(n, g)``: own profile minus partner profile (the same genes, the predictor's scale).

    Returns
    -------
    ``delta_r``: the mean over genes of the Pearson correlation across tiles (genes constant in either are
    skipped); ``delta_r_pooled``: the correlation over all entries after centring each gene; ``delta_slope``: the
    least-squares slope of the reading's change on the profile's change over the same centred entries, i.e.
    ``delta_r_pooled`` times the ratio of their norms: how far the reading moves along the profile change per unit
    of it (direction and extent together; 1: as far as the profile, 0: not along it); ``n_genes``.
    """
    dp, dy = np.asarray(delta_predicted, dtype=np.float64), np.asarray(delta_profile, dtype=np.float64)
    if dp.shape != dy.shape or dp.ndim != 2 or len(dp) < 3:
        raise ValueError(f"need two (n >= 3, g) arrays of the same shape, got {dp.shape} and {dy.shape}.")
    r = pearson_per_gene(dy, dp)
    a, b = (dp - dp.mean(axis=0)).ravel(), (dy - dy.mean(axis=0)).ravel()
    denom = np.sqrt((a @ a) * (b @ b))
    return {"delta_r": finite_mean(r),
            "delta_r_pooled": float(a @ b / denom) if denom > 0 else float("nan"),
            "delta_slope": float(a @ b / (b @ b)) if b @ b > 0 else float("nan"),
            "n_genes": float(np.isfinite(r).sum())}
