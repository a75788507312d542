"""A seeded training / held-out split of the spots, per section."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import _logging as logg
from .._deprecation import renamed_kwargs
from .._docs import doc_params
from .._utils import LIBRARY_KEY, check_key, returned, section_labels, spot_table, writable

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def split_mask(library_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Seeded random training mask: ``fraction`` of the spots of each section (at least one, at most all but one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction}.")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(library_id), dtype=bool)
    for lib in np.unique(library_id):
        idx = np.flatnonzero(library_id == lib)
        if len(idx) < 2 and fraction < 1:
            raise ValueError(f"section {str(lib)!r} has {len(idx)} spot: it cannot give both a training and a held-out "
                             "spot. Pass a `train_mask`, `fraction=1` (no evaluation), or leave the section out.")
        k = len(idx) if fraction == 1 else min(max(1, round(fraction * len(idx))), len(idx) - 1)
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


@renamed_kwargs(positional=("fraction",))
@doc_params
def split_spots(
    data: SpatialData | AnnData,
    *,
    fraction: float,
    seed: int = 0,
    library_key: str | None = LIBRARY_KEY,
    table_key: str | None = None,
    key_added: str = "c2lst_train",
    overwrite: bool = False,
    copy: bool = False,
) -> np.ndarray | tuple[SpatialData | AnnData, np.ndarray]:
    """Draw a seeded training mask: ``fraction`` of each section's spots train, the others are held out.

    Each section keeps at least one training spot and, below ``fraction=1``, at least one held-out spot.

    Parameters
    ----------
    {data}
    fraction
        Share of each section's spots that train, in ``(0, 1]`` (keyword-only; positional is deprecated).
    {seed}
    {library_key}
    {table_key}
    {key_added_overwrite_copy}

    Returns
    -------
    The boolean mask (``True``: training spot; ``(copy, mask)`` with ``copy=True``), also written to
    ``.obs[key_added]``.
    """
    start = logg.info(f"splitting the spots: {fraction:g} of each section train")
    data = writable(data, copy)
    _, table, _ = spot_table(data, table_key)
    check_key(table.obs, key_added, where=".obs", overwrite=overwrite)
    mask = split_mask(section_labels(table, library_key), fraction, seed)
    table.obs[key_added] = mask
    logg.info(f"    added .obs[{key_added!r}] ({int(mask.sum())} of {table.n_obs} spots train)", time=start)
    return returned(data, mask, copy)
