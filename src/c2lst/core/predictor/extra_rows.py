"""Extra training rows (synthetic, augmented): their weights, alignment, groups and per-group standardisation."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...metrics import check_patches
from ..recipe import SYNTHETIC_ALIGN, SYNTHETIC_WEIGHT  # noqa: F401  (re-exported by the package)

EXTRA_WEIGHTS = (0.0, 0.25, 0.5, 1.0)  # candidates of extra_weight="cv"
EXTRA_ALIGN = ("moments",)
_X_STD_FLOOR, _Y_STD_FLOOR = 1e-6, 1e-3  # smallest feature / target sd used for standardising
MIN_GROUP_ROWS = 5  # group_norm: the fewest patches a group's own feature moments are taken from
# group_norm: each group's feature sd is shrunk toward the training spots' pooled within-group sd, as if that sd had
# been seen on this many extra patches. Unshrunk, a section more homogeneous than the training sections (one tissue
# type, few spots) had its features blown up: on her2st (benchmarks/another_patient.py) half sections of another
# patient lost 0.019 in mean r against no group_norm at f = 1; shrunk they gain 0.002, and the stain correction stays.
GROUP_STD_PRIOR = 100


def _row_weights(n_real: int, n_extra: int, extra_weight: float) -> np.ndarray:
    """Sample weights of ``n_real`` real rows (1) followed by ``n_extra`` extra rows (``extra_weight``)."""
    return np.concatenate([np.ones(n_real), np.full(n_extra, float(extra_weight))])


def check_extra_options(weight: Any, align: Any, *, cv_possible: bool = True,
                        names: tuple[str, str] = ("extra_weight", "extra_align")) -> None:
    """Raise a ``ValueError`` unless ``weight`` and ``align`` are valid weighing options for extra rows.

    ``weight``: a finite number >= 0, or ``"cv"`` where ``cv_possible`` (the ridge head on a frozen encoder);
    ``align``: ``None`` or one of :data:`EXTRA_ALIGN`. ``names`` are the parameter names used in the message (the
    public functions call them ``synthetic_weight``/``synthetic_align``).
    """
    w_name, a_name = names
    if isinstance(weight, str):
        if weight != "cv":
            raise ValueError(f"`{w_name}` must be a number >= 0 or 'cv', got {weight!r}.")
        if not cv_possible:
            raise ValueError(f"{w_name}='cv' needs the ridge head on a frozen encoder; pass a number, or use "
                             "head='ridge' with encoder='handcrafted'/'central'/a checkpoint.")
    else:
        try:
            valid = bool(np.isfinite(float(weight)) and float(weight) >= 0)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ValueError(f"`{w_name}` must be a number >= 0 or 'cv', got {weight!r}.")
    if align not in (None, *EXTRA_ALIGN):
        raise ValueError(f"`{a_name}` must be None or one of {EXTRA_ALIGN}, got {align!r}.")


def _check_augment(n_augment: Any, weight: Any, cv_weight: bool) -> int:
    """Check ``fit``'s ``n_augment`` / ``augment_weight`` and return the number of copies."""
    if isinstance(n_augment, bool) or not isinstance(n_augment, (int, np.integer)) or n_augment < 0:
        raise ValueError(f"`n_augment` must be a whole number of copies >= 0, got {n_augment!r}.")
    if isinstance(weight, bool) or not isinstance(weight, (int, float, np.number)) or not 0 <= float(weight) < np.inf:
        raise ValueError(f"`augment_weight` must be a finite number >= 0, got {weight!r}.")
    if n_augment and cv_weight:
        raise ValueError("extra_weight='cv' with augmented rows is not supported: the inner folds would have to leave "
                         "out each held-out group's augmented copies too. Pass a fixed `extra_weight`, or n_augment=0.")
    return int(n_augment)


def _check_groups(groups: np.ndarray | None, extra_groups: np.ndarray | None, n_real: int,
                  n_extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Check and return the real and extra rows' groups of ``extra_weight="cv"``."""
    if groups is None or extra_groups is None:
        raise ValueError("extra_weight='cv' needs `groups` (one per real row, e.g. its section) and "
                         "`extra_groups` (the group each extra row was derived from).")
    g_real, g_extra = np.asarray(groups), np.asarray(extra_groups)
    if g_real.shape != (n_real,) or g_extra.shape != (n_extra,):
        raise ValueError(f"`groups` must have one label per real row ({n_real}) and `extra_groups` one per extra "
                         f"row ({n_extra}); got {g_real.shape} and {g_extra.shape}.")
    if len(np.unique(g_real)) < 2:
        raise ValueError("extra_weight='cv' needs at least two groups of real rows (leave-one-group-out); pass "
                         "a fixed weight instead.")
    return g_real, g_extra


def _moments(a: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and standard deviation (at least ``floor``) of ``a``."""
    return a.mean(axis=0), np.maximum(a.std(axis=0), floor)


def _standardise_extra(f_extra: np.ndarray, mean: np.ndarray, std: np.ndarray, align: str | None) -> np.ndarray:
    """Extra rows' features on the real rows' standardised scale (``align="moments"``: on their own moments)."""
    if align is None or len(f_extra) < 2:
        return (f_extra - mean) / std
    own_mean, own_std = _moments(f_extra, _X_STD_FLOOR)
    return (f_extra - own_mean) / own_std


def _group_labels(groups: np.ndarray | None, n: int, what: str) -> np.ndarray:
    """Return ``groups`` as an ``(n,)`` string array (``None``: one group), for ``group_norm``."""
    if groups is None:
        return np.zeros(n, dtype="<U1")
    g = np.asarray(groups).astype(str)
    if g.shape != (n,):
        raise ValueError(f"`{what}` must have one label per row ({n}), got shape {g.shape}.")
    return g


def _pooled_group_std(f: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Feature sd of the rows ``f`` after centring each group on its own mean (``group_norm``'s shrinkage target)."""
    centred = f.copy()
    for label in np.unique(g):
        centred[g == label] -= f[g == label].mean(axis=0)
    return np.maximum(centred.std(axis=0), _X_STD_FLOOR)


def _standardise_per_group(f: np.ndarray, g: np.ndarray, what: str, pooled_std: np.ndarray | None) -> np.ndarray:
    """Each group's rows centred on the group's mean and divided by its sd shrunk toward ``pooled_std``.

    A group of ``n`` rows with feature sd ``s`` is scaled by ``sqrt((n s² + k p²) / (n + k))``, ``p = pooled_std``
    and ``k =`` :data:`GROUP_STD_PRIOR` (``group_norm``); ``pooled_std=None`` (predictors saved before the
    shrinkage) divides by ``s``.
    """
    out = np.empty_like(f)
    for label in np.unique(g):
        rows = g == label
        if rows.sum() < MIN_GROUP_ROWS:
            raise ValueError(f"group {label!r} of the {what} has {int(rows.sum())} patches; group_norm standardises "
                             f"each group on its own patches and needs at least {MIN_GROUP_ROWS}. Pass whole sections "
                             "(or slides), or merge small groups.")
        m, sd = _moments(f[rows], _X_STD_FLOOR)
        if pooled_std is not None:
            n = rows.sum()
            sd = np.sqrt((n * sd**2 + GROUP_STD_PRIOR * pooled_std**2) / (n + GROUP_STD_PRIOR))
        out[rows] = (f[rows] - m) / sd
    return out


def _fold_rows(x_real: np.ndarray, z_real: np.ndarray, x_extra: np.ndarray, z_extra: np.ndarray, tr: np.ndarray,
               va: np.ndarray, etr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return an inner CV fold of rows standardised beforehand (``group_norm``): the rows the masks select."""
    return x_real[tr], z_real[tr], x_extra[etr], z_extra[etr], x_real[va], z_real[va]


def _restandardised_fold(f_real: np.ndarray, y: np.ndarray, f_extra: np.ndarray, y_extra: np.ndarray,
                         align: str | None, tr: np.ndarray, va: np.ndarray, etr: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return an inner CV fold standardised on its own real training rows (features and targets)."""
    m, s = _moments(f_real[tr], _X_STD_FLOOR)
    ym, ys = _moments(y[tr], _Y_STD_FLOOR)
    return ((f_real[tr] - m) / s, (y[tr] - ym) / ys, _standardise_extra(f_extra[etr], m, s, align),
            (y_extra[etr] - ym) / ys, (f_real[va] - m) / s, y[va])


def augment_patches(patches: np.ndarray, *, n_copies: int = 1, stain_sigma: float = 0.05,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Classic augmentation: random flip + rot90 and HED stain jitter of each patch, ``n_copies`` times.

    Stain jitter scales and shifts each haematoxylin/eosin/DAB optical-density channel by
    ``1 + N(0, stain_sigma)`` and ``N(0, stain_sigma / 5)`` (Tellez et al. 2018).

    Returns
    -------
    ``(augmented patches (n * n_copies, 3, H, W) uint8, source index of each row)``.
    """
    from skimage.color import hed2rgb, rgb2hed

    p = check_patches(patches)
    rng = np.random.default_rng(seed)
    out, src = [], []
    for _ in range(int(n_copies)):
        for i, patch in enumerate(p):
            img = np.moveaxis(patch, 0, -1)
            img = np.rot90(img, k=int(rng.integers(4)))
            if rng.random() < 0.5:
                img = img[:, ::-1]
            hed = rgb2hed(img)
            hed = hed * (1 + rng.normal(0, stain_sigma, 3)) + rng.normal(0, stain_sigma / 5, 3)
            rgb = np.clip(hed2rgb(hed) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            out.append(np.moveaxis(rgb, -1, 0))
            src.append(i)
    if not out:
        return p[:0].copy(), np.zeros(0, dtype=np.int64)
    return np.stack(out), np.asarray(src, dtype=np.int64)
