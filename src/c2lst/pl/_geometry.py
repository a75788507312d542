"""Where the spots and the H&E image of one section are, for the plots and the napari viewer.

Spot circles and the image may carry different transformations to the shared coordinate system
(e.g. a downscaled image); everything here is composed with
``spatialdata.transformations.get_transformation_between_coordinate_systems``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .._utils import resolve_image, resolve_shapes, spot_table, table_region_attrs
from ..io._image import pyramid_levels

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@dataclass(frozen=True)
class SectionLayout:
    """Spots of one section in the pixel coordinates of its image (level 0).

    Attributes
    ----------
    table
        The full table the spots belong to.
    rows
        Integer positions of the section's spots in ``table``.
    xy
        ``(n, 2)`` spot centres (x, y), in level-0 image pixels (spot coordinates when there is no image).
    radius
        ``(n,)`` spot radii in the same unit.
    image
        ``(h, w, 3)`` uint8 image to draw under the spots (a coarse pyramid level), or ``None``.
    extent
        ``(left, right, bottom, top)`` of ``image`` in the coordinates of ``xy`` (matplotlib ``imshow``).
    """

    table: AnnData
    rows: np.ndarray
    xy: np.ndarray
    radius: np.ndarray
    image: np.ndarray | None
    extent: tuple[float, float, float, float] | None


def _to_hwc_uint8(level: object) -> np.ndarray:
    arr = np.asarray(level.transpose("y", "x", "c").data)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.dtype != np.uint8:
        hi = float(np.nanmax(arr)) if arr.size else 1.0
        arr = np.clip(arr.astype(np.float32) / (hi if hi > 0 else 1.0) * 255, 0, 255).astype(np.uint8)
    return arr[..., :3]


def coarse_level(image: object, *, min_side: int = 1000) -> tuple[np.ndarray, float, float]:
    """Return the coarsest pyramid level whose long side is at least ``min_side`` px (else the finest).

    Returns the level as ``(h, w, 3)`` uint8 and the level-0 width and height in pixels.
    """
    levels = pyramid_levels(image)
    h0, w0 = levels[0].sizes["y"], levels[0].sizes["x"]
    chosen = levels[0]
    for level in levels[1:]:
        if max(level.sizes["y"], level.sizes["x"]) >= min_side:
            chosen = level
    return _to_hwc_uint8(chosen), float(w0), float(h0)


def section_spots(
    sdata: SpatialData, table: AnnData, *, shapes_key: str | None = None, library_id: str | None = None
) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Match a table's rows to the spot circles of one section.

    Returns ``(shapes_key, rows, xy, radius)``: the circles' name, the positions of the table rows that
    annotate them, and the circles' centres (x, y) and radii in their intrinsic coordinates.
    """
    region_key, instance_key, region = table_region_attrs(table)
    regions = [region] if isinstance(region, str) else list(region)
    if shapes_key is None and library_id is not None and "library_id" in table.obs:
        in_lib = table.obs["library_id"].astype(str).to_numpy() == str(library_id)
        regions = list(table.obs.loc[in_lib, region_key].astype(str).unique())
        if not regions:
            raise ValueError(f"library_id {library_id!r} not found in table.obs['library_id'].")
    if shapes_key is None:
        if len(regions) > 1:
            raise ValueError(f"the table annotates several spot sets {regions}: choose one with `shapes_key=` "
                             "or `library_id=`.")
        shapes_key = regions[0]
    shapes_key = resolve_shapes(sdata, None, shapes_key)
    shapes = sdata.shapes[shapes_key]
    if "radius" not in shapes.columns:
        raise ValueError(f"shapes {shapes_key!r} are not circles (no 'radius' column); c2lst plots spot circles.")
    rows = np.flatnonzero(np.asarray(table.obs[region_key].astype(str) == shapes_key))
    if rows.size == 0:
        raise ValueError(f"no table row annotates shapes {shapes_key!r}; check table.obs[{region_key!r}].")
    ids = table.obs[instance_key].to_numpy()[rows]
    missing = ~np.isin(ids, shapes.index.to_numpy())
    if missing.any():
        raise ValueError(f"{int(missing.sum())} table rows point to spot ids absent from shapes {shapes_key!r}.")
    circles = shapes.loc[ids]
    xy = np.column_stack([circles.geometry.x.to_numpy(), circles.geometry.y.to_numpy()]).astype(float)
    return shapes_key, rows, xy, circles["radius"].to_numpy(dtype=float)


def section_image(sdata: SpatialData, shapes_key: str, image_key: str | None = None) -> str:
    """Name of the image of a section: ``image_key``, the only image, or ``<library_id>_image`` for ``<library_id>_spots``."""
    if image_key is None and len(sdata.images) > 1:
        guess = shapes_key.removesuffix("_spots") + "_image"  # the readers' naming convention
        image_key = guess if guess in sdata.images else None
    return resolve_image(sdata, image_key)


def affine_yx(sdata: SpatialData, source: object, target: object) -> np.ndarray:
    """3x3 affine (y, x order, napari convention) taking ``source`` coordinates to ``target``."""
    from spatialdata.transformations import get_transformation_between_coordinate_systems

    tr = get_transformation_between_coordinate_systems(sdata, source, target)
    return np.asarray(tr.to_affine_matrix(input_axes=("y", "x"), output_axes=("y", "x")), dtype=float)


def _apply_xy(affine: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, float]:
    yx1 = np.column_stack([xy[:, 1], xy[:, 0], np.ones(len(xy))])
    out = yx1 @ affine.T
    scale = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
    return np.column_stack([out[:, 1], out[:, 0]]), scale


def _anndata_layout(adata: AnnData, library_id: str | None) -> SectionLayout:
    if "spatial" not in adata.obsm:
        raise ValueError("the AnnData has no obsm['spatial'] spot coordinates; read it with c2lst.io or scanpy.")
    rows = np.arange(adata.n_obs)
    if "library_id" in adata.obs and adata.obs["library_id"].nunique() > 1:
        libs = list(adata.obs["library_id"].astype(str).unique())
        if library_id is None:
            raise ValueError(f"the table holds several sections {libs}: choose one with `library_id=`.")
        rows = np.flatnonzero(adata.obs["library_id"].astype(str).to_numpy() == library_id)
        if rows.size == 0:
            raise ValueError(f"library_id {library_id!r} not found; available: {libs}.")
    xy = np.asarray(adata.obsm["spatial"], dtype=float)[rows, :2]
    spatial = adata.uns.get("spatial", {})
    lib = library_id if library_id in spatial else (next(iter(spatial)) if len(spatial) == 1 else None)
    image, extent, radius = None, None, np.full(len(rows), np.nan)
    if lib is not None:
        entry = spatial[lib]
        scalef = entry.get("scalefactors", {})
        if "spot_diameter_fullres" in scalef:
            radius[:] = float(scalef["spot_diameter_fullres"]) / 2
        for res in ("hires", "lowres"):
            img = entry.get("images", {}).get(res)
            factor = scalef.get(f"tissue_{res}_scalef")
            if img is not None and factor:
                image = np.asarray(img)
                if image.dtype != np.uint8:
                    image = np.clip(image * (255 if image.max() <= 1 else 1), 0, 255).astype(np.uint8)
                h, w = image.shape[:2]
                extent = (0.0, w / factor, h / factor, 0.0)
                break
    if np.isnan(radius).all():
        radius[:] = _default_radius(xy)
    return SectionLayout(adata, rows, xy, radius, image, extent)


def _default_radius(xy: np.ndarray) -> float:
    if len(xy) < 2:
        return 1.0
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(xy).query(xy, k=2)
    return float(np.median(dist[:, 1])) / 4


def section_layout(
    data: SpatialData | AnnData,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    library_id: str | None = None,
) -> SectionLayout:
    """Spots and image of one section, in the image's level-0 pixel coordinates.

    For ``AnnData``, spots come from ``obsm['spatial']`` and the image from scanpy's Visium convention
    (``uns['spatial'][library_id]['images']`` and ``['scalefactors']``), when present.
    """
    sdata, table, _ = spot_table(data, table_key)
    if sdata is None:
        return _anndata_layout(table, library_id)
    shapes_name, rows, xy, radius = section_spots(sdata, table, shapes_key=shapes_key, library_id=library_id)
    if not sdata.images:
        return SectionLayout(table, rows, xy, radius, None, None)
    image_name = section_image(sdata, shapes_name, image_key)
    affine = affine_yx(sdata, sdata.shapes[shapes_name], sdata.images[image_name])
    xy, scale = _apply_xy(affine, xy)
    image, w0, h0 = coarse_level(sdata.images[image_name])
    return SectionLayout(table, rows, xy, radius * scale, image, (0.0, w0, h0, 0.0))
