"""Memorisation audit: synthetic patches nearer to the training patches than unseen real ones are."""
from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree


def memorisation_audit(train: np.ndarray, synthetic: np.ndarray, heldout: np.ndarray, *,
                       quantile: float = 0.05) -> dict[str, float]:
    """Nearest-training-patch distances of synthetic patches vs held-out real patches.

    All three sets are standardised with the training set's mean/std. A generator that copies its training
    patches puts synthetic patches much nearer to the training set than held-out real patches are.

    Parameters
    ----------
    train
        ``(n_train, F)`` features of the patches the generator was adapted on.
    synthetic
        ``(n_syn, F)`` features of generated patches.
    heldout
        ``(n_heldout, F)`` features of real patches the generator never saw.
    quantile
        Quantile of the held-out distances that defines "suspiciously close".

    Returns
    -------
    ``nn_synthetic_median``, ``nn_heldout_median``, ``nn_ratio`` (synthetic / held-out medians; < 1 means
    closer than unseen real tiles), ``share_below_heldout_q`` (share of synthetic patches nearer than the
    ``quantile`` of held-out distances; ~``quantile`` when there is no copying) and ``quantile``.
    """
    t = np.asarray(train, dtype=np.float64)
    s = np.asarray(synthetic, dtype=np.float64)
    h = np.asarray(heldout, dtype=np.float64)
    if t.ndim != 2 or s.ndim != 2 or h.ndim != 2 or not (t.shape[1] == s.shape[1] == h.shape[1]):
        raise ValueError(f"train {t.shape}, synthetic {s.shape} and held-out {h.shape} must be (n, F) with one F.")
    if min(len(t), len(s), len(h)) == 0:
        raise ValueError("memorisation audit needs training, synthetic and held-out rows; none may be empty.")
    if not 0 < quantile < 1:
        raise ValueError(f"`quantile` must be in (0, 1), got {quantile}.")
    mu, sd = t.mean(axis=0), np.maximum(t.std(axis=0), 1e-8)
    tree = cKDTree((t - mu) / sd)
    d_syn = tree.query((s - mu) / sd, k=1)[0]
    d_held = tree.query((h - mu) / sd, k=1)[0]
    med_s, med_h = float(np.median(d_syn)), float(np.median(d_held))
    return {
        "nn_synthetic_median": med_s,
        "nn_heldout_median": med_h,
        "nn_ratio": med_s / med_h if med_h > 0 else float("nan"),
        "share_below_heldout_q": float((d_syn < np.quantile(d_held, quantile)).mean()),
        "quantile": float(quantile),
    }
