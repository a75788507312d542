"""Shared validation and element resolution for ``io``, ``pp``, ``tl``, ``pl`` and the command line.

One place for: accepting ``SpatialData`` or ``AnnData``, picking the table / image / shapes element
(squidpy ``gr/_build.py`` style), the spot table and the recorded training split (public as :mod:`c2lst.get`),
boolean training masks, and the "never overwrite unless asked" rule. ``core``/``metrics`` never import this.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

SPATIAL_UNS = "c2lst"  # table.uns[SPATIAL_UNS]["spatial"] holds mpp and how it was derived


def _pick(kind: str, available: list[str], key: str | None, arg: str) -> str:
    if key is not None:
        if key not in available:
            raise ValueError(f"{kind} {key!r} not found; available {kind}s: {available}. Pass an existing `{arg}`.")
        return key
    if not available:
        raise ValueError(f"no {kind} element in the SpatialData object; add one or read the data with `c2lst.io`.")
    if len(available) > 1:
        raise ValueError(f"several {kind} elements {available}: choose one with `{arg}=`.")
    return available[0]


def resolve_table(data: SpatialData | AnnData, table_key: str | None = None) -> tuple[SpatialData | None, AnnData, str | None]:
    """Return ``(sdata or None, table, table_key)`` for a ``SpatialData`` or an ``AnnData`` input."""
    from anndata import AnnData
    from spatialdata import SpatialData

    if isinstance(data, AnnData):
        return None, data, None
    if not isinstance(data, SpatialData):
        raise ValueError(f"expected a SpatialData or AnnData object, got {type(data).__name__}.")
    keys = list(data.tables.keys())
    if table_key is None and len(keys) > 1:
        # tables written by tl.generate hold synthetic spots: never the default measured table
        measured = [k for k in keys if not is_synthetic(data.tables[k])]
        keys = measured or keys
    key = _pick("table", keys, table_key, "table_key")
    return data, data.tables[key], key


def is_synthetic(table: AnnData) -> bool:
    """Whether ``table`` was written by :func:`c2lst.tl.generate` (it carries ``uns["c2lst"]["synthetic"]``)."""
    ns = table.uns.get(SPATIAL_UNS)
    return bool(isinstance(ns, dict) and ns.get("synthetic", False))


def spot_table(data: SpatialData | AnnData, table_key: str | None = None) -> tuple[SpatialData | None, AnnData, str | None]:
    """``(sdata or None, table, table_key)`` of the spot table, skipping tables written by ``tl.generate``.

    With several remaining tables, ``"table"`` (the readers' name) is used unless ``table_key`` is given.
    """
    from spatialdata import SpatialData

    if table_key is None and isinstance(data, SpatialData) and len(data.tables) > 1:
        real = [k for k, t in data.tables.items() if not is_synthetic(t)]
        table_key = real[0] if len(real) == 1 else ("table" if "table" in real else None)
    return resolve_table(data, table_key)


def resolve_image(sdata: SpatialData, image_key: str | None = None) -> str:
    """Name of the image element to use (the only one, or ``image_key``)."""
    return _pick("image", list(sdata.images.keys()), image_key, "image_key")


def resolve_shapes(sdata: SpatialData, table: AnnData | None = None, shapes_key: str | None = None) -> str:
    """Name of the spot shapes element: ``shapes_key``, else the region the table annotates, else the only one."""
    if shapes_key is None and table is not None:
        attrs = table.uns.get("spatialdata_attrs", {})
        region = attrs.get("region")
        if isinstance(region, str) and region in sdata.shapes:
            return region
    return _pick("shapes", list(sdata.shapes.keys()), shapes_key, "shapes_key")


def element_affine(sdata: SpatialData, source: Any, target: Any, *, what: str) -> np.ndarray:
    """3x3 affine ``(x, y)`` from ``source``'s intrinsic coordinates to ``target``'s (e.g. spot circles to image pixels).

    Composed through a coordinate system both elements share (the first one, in ``source``'s order: with
    spatialdata-io's Visium the spots and the hires image share ``<id>`` and ``<id>_downscaled_hires``, which agree),
    else through spatialdata's graph of coordinate systems. ``what`` names the two elements in the error.
    """
    from spatialdata.transformations import get_transformation, get_transformation_between_coordinate_systems

    def affine(t: Any) -> np.ndarray:
        return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=np.float64)

    of_source, of_target = get_transformation(source, get_all=True), get_transformation(target, get_all=True)
    shared = [cs for cs in of_source if cs in of_target]
    if shared:
        return np.linalg.inv(affine(of_target[shared[0]])) @ affine(of_source[shared[0]])
    try:
        return affine(get_transformation_between_coordinate_systems(sdata, source, target))
    except Exception as e:  # noqa: BLE001  (spatialdata raises several types when no path exists)
        raise ValueError(f"no transformation links {what} ({e}); put both in a common coordinate system "
                         "(spatialdata.transformations.set_transformation).") from None


def table_region_attrs(table: AnnData) -> tuple[str, str, str | list[str]]:
    """``(region_key, instance_key, region)`` of a spatialdata table, with a clear error when missing."""
    attrs = table.uns.get("spatialdata_attrs")
    if not attrs:
        raise ValueError("the table does not annotate any shapes (no .uns['spatialdata_attrs']); parse it with "
                         "spatialdata.models.TableModel.parse(region=..., region_key=..., instance_key=...).")
    return attrs["region_key"], attrs["instance_key"], attrs["region"]


def spot_positions(table: AnnData, sdata: SpatialData | None = None) -> np.ndarray | None:
    """Spot centres for neighbour graphs (k-NN, mixup partners), ``(n, 2)``, or ``None`` when there are none.

    In order: ``obsm["spatial"]`` (what the readers write: the circles' coordinates), the centres of the circles
    the table annotates in ``sdata``, the array grid (``obs["array_col"/"array_row"]``). The grid comes last
    because its distances are not the spots' distances on Visium (``array_col`` counts half steps).
    """
    if "spatial" in table.obsm:
        return np.asarray(table.obsm["spatial"], dtype=np.float64)[:, :2]
    if sdata is not None and table.uns.get("spatialdata_attrs"):
        try:
            shapes = resolve_shapes(sdata, table)
            _, instance_key, _ = table_region_attrs(table)
            centres = sdata.shapes[shapes].loc[table.obs[instance_key].to_numpy()].geometry.centroid
            return np.c_[centres.x.to_numpy(), centres.y.to_numpy()]
        except (ValueError, KeyError):
            pass
    if {"array_col", "array_row"} <= set(table.obs.columns):
        return table.obs[["array_col", "array_row"]].to_numpy(dtype=np.float64)
    return None


def as_mask(mask: Any, n: int, *, name: str = "train_mask") -> np.ndarray:
    """Validate a boolean mask over ``n`` spots (an array, a Series or a list of booleans); return a copy.

    Integer arrays are refused, 0/1 ones included: reading them as indices or as a mask would silently
    guess (a 0/1 mask read as indices selects spots 0 and 1). The error names both fixes.
    """
    if mask is None:
        return np.ones(n, dtype=bool)
    arr = np.asarray(mask)
    if arr.dtype == object and arr.size and all(isinstance(v, bool | np.bool_) for v in arr.ravel()):
        arr = arr.astype(bool)
    if arr.dtype != bool:
        kind = "integer" if np.issubdtype(arr.dtype, np.integer) else str(arr.dtype)
        raise ValueError(f"`{name}` must hold booleans (True = selected spot), one per spot; got {kind} values. "
                         f"For a 0/1 array pass `{name}=np.asarray(mask).astype(bool)`; for spot indices pass "
                         f"`m = np.zeros({n}, bool); m[indices] = True` as `{name}=m`.")
    if arr.shape != (n,):
        raise ValueError(f"`{name}` has shape {arr.shape}, expected ({n},) booleans, one per spot.")
    out = arr.copy()
    if not out.any():
        raise ValueError(f"`{name}` selects no spot: the set is empty. Select at least one spot.")
    return out


def as_names(values: Any) -> list[str]:
    """Return names stored in ``.uns`` (a list, or an object/``<U``/``StringDType`` array read back) as ``str``."""
    return [str(v) for v in np.asarray(values, dtype=object).ravel()] if values is not None else []


def recorded_train_mask(table: AnnData, key: str) -> np.ndarray | None:
    """Training spots of the step that wrote ``key`` (e.g. ``tl.predict``'s layer), or ``None`` when not recorded.

    Read from ``obs[f"{key}_split"]`` (``"train"``/``"held_out"``), else from ``uns[key]["params"]["train_spots"]``.
    """
    split = f"{key}_split"
    if split in table.obs:
        return np.asarray(table.obs[split].astype(str) == "train")
    entry = table.uns.get(key)
    params = entry.get("params", {}) if isinstance(entry, Mapping) else {}
    if "train_spots" not in params:
        return None
    return np.asarray(table.obs_names.isin(as_names(params["train_spots"])))


def check_optimizer_args(batch_size: Any, lr: Any) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is a positive integer and ``lr`` is positive."""
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if not lr > 0:
        raise ValueError(f"`lr` must be positive, got {lr!r}.")


def check_key(container: Mapping[str, Any], key: str, *, where: str, overwrite: bool) -> None:
    """Refuse to overwrite ``container[key]`` unless ``overwrite=True``."""
    if key in container and not overwrite:
        raise ValueError(f"{where}[{key!r}] already exists; pass `overwrite=True` to replace it or choose another `key_added`.")


LIBRARY_KEY = "library_id"  # the default section column (c2lst.io, squidpy)
ONE_SECTION = "all"  # the section name of spots in a table without sections


def section_labels(table: AnnData, library_key: str | None) -> np.ndarray:
    """Each spot's section as ``str``: ``obs[library_key]``; one section ``"all"`` for ``None`` or a missing default.

    A ``library_key`` other than the default that is not an ``.obs`` column is a ``ValueError`` listing the columns.
    """
    if library_key is None or (library_key == LIBRARY_KEY and library_key not in table.obs):
        return np.full(table.n_obs, ONE_SECTION)
    if library_key not in table.obs:
        raise ValueError(f"`library_key` {library_key!r} is not an .obs column of the spots (columns: "
                         f"{list(table.obs.columns)[:8]}); pass the column naming each spot's section, or None.")
    return table.obs[library_key].astype(str).to_numpy()


def writable(data: Any, copy: bool) -> Any:
    """Return ``data``, or with ``copy`` a copy to write into (``AnnData.copy()``, or a ``SpatialData`` with copied tables).

    The ``SpatialData`` copy shares the images, labels, points and shapes (c2lst never changes them in place; it
    only adds elements), so copying a slide-sized image is never needed.
    """
    if not copy:
        return data
    import copy as _copy

    from spatialdata import SpatialData

    if isinstance(data, SpatialData):
        return SpatialData(images=dict(data.images), labels=dict(data.labels), points=dict(data.points),
                           shapes=dict(data.shapes), tables={k: t.copy() for k, t in data.tables.items()},
                           attrs=_copy.deepcopy(dict(data.attrs)))
    return data.copy()


def returned(data: Any, result: Any, copy: bool) -> Any:
    """Return what a writer returns: ``result``; with ``copy``, the copy, or ``(copy, result)`` when there is one.

    ``result`` is the function's product (a model, a panel, a mask, scores) or ``None`` when it only writes slots.
    """
    if not copy:
        return result
    return data if result is None else (data, result)


def spot_mpp(table: AnnData) -> float:
    """Microns per unit of the spot shapes' intrinsic coordinates, as recorded by the readers."""
    try:
        return float(table.uns[SPATIAL_UNS]["spatial"]["mpp"])
    except KeyError:
        raise ValueError("microns per pixel unknown: the table has no .uns['c2lst']['spatial']['mpp']. Read the "
                         "data with c2lst.io (a SpatialData from spatialdata-io: convert it with "
                         "c2lst.io.from_spatialdata(sdata, image_key=...)), or pass `mpp=` explicitly.") from None
