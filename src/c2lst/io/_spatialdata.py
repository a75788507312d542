"""A ``SpatialData`` made elsewhere (``spatialdata_io.visium``, ``visium_hd``...) -> c2lst's layout."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import info
from .._utils import element_affine, table_region_attrs
from ._build import build_sdata, check_library_id, median_nn_spacing, spatial_uns, table_parts

if TYPE_CHECKING:
    from spatialdata import SpatialData


def _choose(kind: str, available: list[str], key: str | None, arg: str) -> str:
    """``key`` when given and present, else the only element; a ValueError listing the options otherwise."""
    if key is not None:
        if key not in available:
            raise ValueError(f"{kind} {key!r} not found; the SpatialData holds {kind}s {available}: pass one as `{arg}=`.")
        return key
    if len(available) == 1:
        return available[0]
    if not available:
        raise ValueError(f"the SpatialData holds no {kind}; c2lst needs an H&E image, spot shapes and a count table.")
    raise ValueError(f"the SpatialData holds several {kind}s {available}: choose one with `{arg}=` (e.g. "
                     f"{arg}={available[0]!r}).")


def _centres(shapes: Any) -> tuple[np.ndarray, np.ndarray, str]:
    """Centres ``(n, 2)`` and radii of circles or polygons (Visium HD bins: the radius of a disc of equal area)."""
    geom = shapes.geometry
    if "radius" in shapes.columns:
        return np.c_[geom.x.to_numpy(), geom.y.to_numpy()], shapes["radius"].to_numpy(dtype=np.float64), "circles"
    if not geom.geom_type.isin(["Polygon", "MultiPolygon"]).all():
        raise ValueError("the spot shapes are neither circles (with a 'radius' column) nor polygons; c2lst needs spots.")
    centroid = geom.centroid
    return (np.c_[centroid.x.to_numpy(), centroid.y.to_numpy()], np.sqrt(geom.area.to_numpy() / np.pi), "bins")


def from_spatialdata(
    sdata: SpatialData,
    *,
    image_key: str | None = None,
    shapes_key: str | None = None,
    table_key: str | None = None,
    library_id: str | None = None,
    spot_diameter_um: float = 55.0,
    pitch_um: float | None = 100.0,
) -> SpatialData:
    """Convert a ``SpatialData`` written by another reader into c2lst's layout (one image, spot circles, one table).

    Made for :func:`spatialdata_io.visium` (several images: full resolution, hires, lowres) and
    :func:`spatialdata_io.visium_hd` (one shapes element and one table per bin size), whose elements live in
    their own coordinate systems. The chosen image and spots are placed through the spatialdata
    transformation between them; microns per spot unit come from the spot size (``spot_diameter_um`` over
    the circles' diameter; for Visium HD square bins, the bin side in µm over the square's side).

    Parameters
    ----------
    sdata
        The source ``SpatialData``; not modified (the image is shared, not copied).
    image_key
        Image to use, required when there are several (e.g. ``"<id>_hires_image"`` or ``"<id>_full_image"``).
    shapes_key
        Spot shapes to use; default: the region the table annotates, else the only one (for Visium HD, e.g.
        ``"<id>_square_016um"``: the bin size).
    table_key
        Count table; default: the one annotating ``shapes_key``, else the only one (Visium HD: ``"square_016um"``).
    library_id
        Section name used in element names and ``obs["library_id"]``; default: the table's ``library_id`` when
        it has a single one, else the shapes' name.
    spot_diameter_um
        Spot diameter in µm (55 for Visium); for square bins, the bin side (e.g. 16 for ``square_016um``).
    pitch_um
        Centre-to-centre spot distance in µm (100 for Visium; for square bins, the bin side).

    Returns
    -------
    ``SpatialData`` in c2lst's layout, as :func:`c2lst.io.read_visium` returns it: ``images["<library_id>_image"]``,
    ``shapes["<library_id>_spots"]`` (circles in the source spots' units), ``tables["table"]`` (raw counts in
    ``X``, ``obs["array_col"]``, ``obs["array_row"]``, ``obs["region"]``, ``obs["spot_id"]``,
    ``obs["library_id"]``, ``obsm["spatial"]``, ``uns["c2lst"]["spatial"]``, ``uns["spatial"]``).

    Raises
    ------
    ValueError
        When an element choice is ambiguous (the message lists the options), the table does not annotate the
        chosen shapes, the image and the spots share no coordinate system, or the counts are not raw counts.
    """
    from spatialdata import SpatialData
    from spatialdata.transformations import Affine, Scale

    if not isinstance(sdata, SpatialData):
        raise ValueError(f"expected a SpatialData object, got {type(sdata).__name__}; for an AnnData use "
                         "c2lst.io.from_anndata.")
    tables = list(sdata.tables)
    if table_key is None and shapes_key is not None:
        annotating = [k for k in tables if shapes_key in np.atleast_1d(sdata.tables[k].uns.get(
            "spatialdata_attrs", {}).get("region", [])).astype(str)]
        table_key = annotating[0] if len(annotating) == 1 else None
    table_key = _choose("table", tables, table_key, "table_key")
    table = sdata.tables[table_key]
    region_key, instance_key, region = table_region_attrs(table)
    regions = [str(r) for r in np.atleast_1d(region)]
    if shapes_key is None:
        shapes_key = _choose("spot shapes annotated by the table", [r for r in regions if r in sdata.shapes], None,
                             "shapes_key")
    shapes_key = _choose("shapes", list(sdata.shapes), shapes_key, "shapes_key")
    image_key = _choose("image", list(sdata.images), image_key, "image_key")
    rows = np.flatnonzero(table.obs[region_key].astype(str).to_numpy() == shapes_key)
    if rows.size == 0:
        raise ValueError(f"table {table_key!r} annotates {regions}, not the shapes {shapes_key!r}; pass the matching "
                         "`table_key=` and `shapes_key=`.")
    sub = table[rows]
    shapes = sdata.shapes[shapes_key]
    where = shapes.index.get_indexer(sub.obs[instance_key].to_numpy())
    if (where < 0).any():
        raise ValueError(f"{int((where < 0).sum())} rows of table {table_key!r} point to spots absent from shapes "
                         f"{shapes_key!r}; check obs[{instance_key!r}].")
    xy, radius, kind = _centres(shapes.iloc[where])
    inv = element_affine(sdata, sdata.images[image_key], shapes, what=f"image {image_key!r} and shapes {shapes_key!r}")
    if np.allclose([inv[0, 1], inv[1, 0], inv[0, 2], inv[1, 2]], 0, atol=1e-9):
        image_transformation = Scale([inv[1, 1], inv[0, 0]], axes=("y", "x"))
    else:
        image_transformation = Affine(inv, input_axes=("x", "y"), output_axes=("x", "y"))

    diameter = 2 * float(np.median(radius))
    if kind == "bins":
        diameter = float(np.sqrt(np.pi) * np.median(radius))  # the side of the square of the same area
    mpp = spot_diameter_um / diameter
    pitch_um = pitch_um if pitch_um is not None else spot_diameter_um
    spacing = median_nn_spacing(xy) * mpp if len(xy) > 1 else float("nan")
    what = "bin side" if kind == "bins" else "spot"
    source = (f"{what} {diameter:.2f} px = {spot_diameter_um:g} µm (median nearest-neighbour spacing {spacing:.1f} µm)")
    if library_id is None:
        libs = sub.obs["library_id"].astype(str).unique() if "library_id" in sub.obs else []
        library_id = str(libs[0]) if len(libs) == 1 else shapes_key
    library_id = check_library_id(library_id)
    element = sdata.images[image_key]
    level0 = element if not hasattr(element, "keys") else next(iter(element["scale0"].values()))
    cyx = level0.data
    if cyx.shape[0] not in (3, 4) or cyx.dtype != np.uint8:
        raise ValueError(f"image {image_key!r} has {cyx.shape[0]} channels of dtype {cyx.dtype}; c2lst needs 8-bit RGB.")
    start = info(f"converting SpatialData elements {image_key!r}, {shapes_key!r}, {table_key!r}")
    out = build_sdata(
        library_id=library_id,
        **table_parts(sub, xy, pitch_um / mpp, what=f"counts of table {table_key!r}"),
        radius=diameter / 2 if kind == "circles" else float(np.median(radius)),
        image=[cyx[:3]],
        image_transformation=image_transformation,
        spatial=spatial_uns(mpp, source, spot_diameter_um, pitch_um),
        outside_hint=f"the spots of {shapes_key!r} fall outside image {image_key!r}; choose the image of this section.",
    )
    info(f"converted {library_id}: {sub.n_obs} spots x {sub.n_vars} genes, {mpp:.4f} µm per spot unit", time=start)
    return out
