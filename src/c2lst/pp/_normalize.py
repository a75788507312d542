"""Library-size normalisation + log1p with a training-spot target sum."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import _logging as logg
from .._docs import doc_params
from .._utils import as_mask, check_key, resolve_table, returned, writable
from ._counts import library_sizes, lognorm, median_library_size, raw_counts

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@doc_params
def normalize(
    data: SpatialData | AnnData,
    *,
    train_mask: Any = None,
    target_sum: float | None = None,
    layer_counts: str | None = None,
    table_key: str | None = None,
    key_added: str = "lognorm",
    overwrite: bool = False,
    copy: bool = False,
) -> SpatialData | AnnData | None:
    """Normalise each spot to a common library size and log-transform.

    ``lognorm = log1p(counts / library_size * target_sum)``. Library-size scaling is per spot, so the only
    fitted statistic is ``target_sum``; it is the median library size of the *training* spots, so test spots
    never influence it.

    Parameters
    ----------
    {data}
    {train_mask}
        ``None`` uses every spot.
    target_sum
        Counts per spot after scaling. ``None``: median library size of the training spots.
    {layer_counts}
    {table_key}
    {key_added_overwrite_copy}

    Returns
    -------
    ``None`` (the copy with ``copy=True``). Writes to the table:

    - ``.layers[key_added]``: float32 log-normalised expression, spots x genes.
    - ``.uns[key_added]["params"]``: ``target_sum``, ``n_train``, ``layer_counts``.
    """
    start = logg.info("normalizing counts")
    data = writable(data, copy)
    _, table, _ = resolve_table(data, table_key)
    check_key(table.layers, key_added, where=".layers", overwrite=overwrite)
    mask = as_mask(train_mask, table.n_obs)
    counts = raw_counts(table, layer=layer_counts)
    if target_sum is None:
        target_sum = median_library_size(library_sizes(counts)[mask])
    elif not target_sum > 0:
        raise ValueError(f"`target_sum` must be positive, got {target_sum}.")
    table.layers[key_added] = lognorm(counts, library_sizes(counts), float(target_sum))
    table.uns[key_added] = {
        "params": {"target_sum": float(target_sum), "n_train": int(mask.sum()), "layer_counts": layer_counts or "X"}
    }
    logg.info(f"    added .layers[{key_added!r}] (target_sum={target_sum:.0f})", time=start)
    return returned(data, None, copy)
