"""Everything that judges one synthetic set against its real reference, in one report."""
from __future__ import annotations

import numpy as np

from ._composition import composition_distances
from ._fidelity import fidelity_floor, fidelity_report
from ._memorisation import memorisation_audit


def synthetic_report(reference: np.ndarray, synthetic: np.ndarray, reference_patches: np.ndarray,
                     synthetic_patches: np.ndarray, heldout: np.ndarray | None = None, *, k: int = 5,
                     seed: int = 0) -> dict[str, float]:
    """Fidelity with its real-vs-real floor, cellular composition and the memorisation audit of a synthetic set.

    Parameters
    ----------
    reference, synthetic
        ``(n, F)`` features of the real reference patches (those the generator was adapted on) and of the
        synthetic patches, in one feature space.
    reference_patches, synthetic_patches
        The same patches as ``(n, 3, H, W)`` uint8 RGB, for the nuclei composition.
    heldout
        ``(n, F)`` features of real patches the generator never saw, for the memorisation audit; ``None``: no audit.
    k, seed
        PRDC neighbour and seed of the KID subsets and of the floor's halves.

    Returns
    -------
    :func:`fidelity_report`'s keys; :func:`fidelity_floor`'s (``*_floor`` and ``*_vs_half``) when the reference
    has at least ``2 * (k + 1)`` rows and the synthetic set ``k + 1``; :func:`composition_distances`'s;
    :func:`memorisation_audit`'s when ``heldout`` is given.
    """
    out = fidelity_report(reference, synthetic, k=k, seed=seed)
    if len(reference) >= 2 * (k + 1) and len(synthetic) >= k + 1:
        out.update(fidelity_floor(reference, synthetic, k=k, seed=seed))
    out.update(composition_distances(reference_patches, synthetic_patches))
    if heldout is not None:
        out.update(memorisation_audit(reference, synthetic, heldout))
    return out


def reconstruction_ceiling(reference: np.ndarray, reconstructed: np.ndarray, originals: np.ndarray,
                           reconstructions: np.ndarray, *, k: int = 5, seed: int = 0) -> dict[str, float]:
    """Score autoencoder reconstructions of real patches like a synthetic set: the realism ceiling.

    Every generated tile passes the decoder, so no generator can score better than the reconstructions of
    real patches do. They are scored exactly as :func:`synthetic_report` scores a synthetic set against the
    floor (:func:`fidelity_floor` with the same ``k`` and ``seed``: the same reference half, at the other
    half's size), so ``frechet_ceiling`` reads against ``frechet_floor`` and ``frechet_vs_half``.

    Parameters
    ----------
    reference, reconstructed
        ``(n, F)`` features of the real reference patches and of the reconstructions, in one feature space.
        Reconstruct patches the model never saw (held-out spots) where there are enough.
    originals, reconstructions
        The reconstructed patches before and after, ``(m, 3, H, W)`` uint8, for the pixel error.

    Returns
    -------
    :func:`fidelity_floor`'s ``*_vs_half`` keys renamed ``*_ceiling``, and ``mae_ceiling``, the mean absolute
    pixel error on the 0-255 scale.
    """
    originals, reconstructions = np.asarray(originals), np.asarray(reconstructions)
    if originals.shape != reconstructions.shape:
        raise ValueError(f"`originals` {originals.shape} and `reconstructions` {reconstructions.shape} differ in "
                         "shape; pass each patch next to its own reconstruction.")
    rep = fidelity_floor(reference, reconstructed, k=k, seed=seed)
    out = {key.removesuffix("_vs_half") + "_ceiling": v for key, v in rep.items() if key.endswith("_vs_half")}
    out["mae_ceiling"] = float(np.abs(originals.astype(np.float64) - reconstructions.astype(np.float64)).mean())
    return out
