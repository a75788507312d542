"""Assemble a reader's ``SpatialData``: one image, one set of spot circles, one table (docs/design.md)."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _logging as logg
from .._utils import SPATIAL_UNS
from ._image import image_element, overview, shrink

if TYPE_CHECKING:
    import dask.array as da
    from anndata import AnnData
    from spatialdata import SpatialData
    from spatialdata.transformations import BaseTransformation

TABLE_KEY = "table"
HIRES_PX = 2000  # long side of the H&E copy in uns["spatial"][library_id]["images"]["hires"] (scanpy's convention)
REGION_KEY = "region"
INSTANCE_KEY = "spot_id"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def check_library_id(library_id: str) -> str:
    """Check that a library id is usable in element names (``"<library_id>_image"``)."""
    if not isinstance(library_id, str) or not _NAME.match(library_id):
        raise ValueError(f"library_id {library_id!r} is not a valid element name; pass `library_id=` made of "
                         "letters, digits, '_', '-' or '.'.")
    return library_id


def check_counts(x: np.ndarray | sp.spmatrix, *, what: str, integer: bool = True) -> sp.csr_matrix:
    """Validate raw counts (numeric, finite, non-negative, integer-valued) and return them as float32 CSR."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    if not np.issubdtype(data.dtype, np.number) or data.dtype == bool:
        raise ValueError(f"{what} are not numeric (dtype {data.dtype}); pass raw UMI counts.")
    if data.size and not np.isfinite(data).all():
        raise ValueError(f"{what} contain NaN or infinite values; pass complete raw UMI counts (fill or drop them).")
    if data.size and data.min() < 0:
        raise ValueError(f"{what} contain negative values; pass raw UMI counts, not scaled or log data.")
    if integer and data.size and not np.array_equal(data, np.round(data)):
        raise ValueError(f"{what} contain non-integer values; pass raw integer UMI counts, not normalised data.")
    return sp.csr_matrix(x, dtype=np.float32)


def table_parts(adata: AnnData, xy: np.ndarray, pitch_px: float, *, what: str) -> dict[str, Any]:
    """Return :func:`build_sdata`'s spot arguments from an AnnData of raw counts and its spot centres ``xy``.

    ``counts`` (checked; ``what`` names them in errors), ``obs_names``, ``var``, ``xy`` and the array positions:
    ``obs["array_col"/"array_row"]`` when present, else grid indices from ``xy`` and the pitch in pixels.
    """
    if {"array_col", "array_row"} <= set(adata.obs.columns):
        array_col, array_row = adata.obs["array_col"].to_numpy(np.int64), adata.obs["array_row"].to_numpy(np.int64)
    else:
        array_col, array_row = np.rint((xy - xy.min(0)) / pitch_px).astype(np.int64).T
    return {"counts": check_counts(adata.X, what=what), "obs_names": pd.Index(adata.obs_names), "var": adata.var,
            "array_col": array_col, "array_row": array_row, "xy": xy}


def median_nn_spacing(xy: np.ndarray) -> float:
    """Median distance from each spot centre to its nearest neighbour."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        raise ValueError("at least two spots are needed to infer microns per pixel from the spot pitch; pass more "
                         "spots or set the resolution explicitly.")
    dist = cKDTree(xy).query(xy, k=2)[0][:, 1]
    spacing = float(np.median(dist))
    if not spacing > 0:
        raise ValueError("spot centres coincide (median nearest-neighbour distance 0); check pixel_x/pixel_y.")
    return spacing


def spatial_uns(mpp: float, mpp_source: str, spot_diameter_um: float, pitch_um: float) -> dict[str, Any]:
    """Build the ``table.uns['c2lst']['spatial']`` record."""
    return {"mpp": float(mpp), "mpp_source": mpp_source, "spot_diameter_um": float(spot_diameter_um),
            "pitch_um": float(pitch_um)}


def scanpy_spatial(image: Any, transformation: BaseTransformation | None, radius: float, *,
                   hires: tuple[np.ndarray, float] | None = None, max_side: int = HIRES_PX) -> dict[str, Any] | None:
    """Build scanpy/squidpy's Visium record ``uns["spatial"][library_id]``.

    The spots' ``obsm["spatial"]`` are in the ``"global"`` units of the circles.
    ``images["hires"]`` is the image element reduced to at most ``max_side`` px; ``scalefactors`` holds
    ``tissue_hires_scalef`` (hires px per ``obsm["spatial"]`` unit) and ``spot_diameter_fullres`` (spot diameter
    in ``obsm["spatial"]`` units). ``hires`` is an overview already at hand (e.g. HEST's ``downscaled_fullres``)
    with its scale in px per level-0 image px, used instead of reading the image. ``None`` when the image is
    rotated, sheared, stretched or shifted against the spots (scanpy's convention has no offset or rotation).
    """
    scale = 1.0
    if transformation is not None:
        a = np.asarray(transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
        scale = float(a[0, 0])
        plain = np.isclose(a[1, 1], scale, rtol=1e-3) and np.allclose([a[0, 1], a[1, 0]], 0, atol=1e-9)
        if not (scale > 0 and plain and np.allclose(a[:2, 2], 0, atol=1e-3)):
            logg.info("    the image is not a plain rescaling of the spot coordinates: no uns['spatial'] for scanpy")
            return None
    if hires is None:
        small, factor = overview(image, max_side=max_side)
    else:
        small, reduced = shrink(hires[0], max_side=max_side)
        factor = hires[1] * reduced
    return {"images": {"hires": small},
            "scalefactors": {"tissue_hires_scalef": float(factor / scale), "spot_diameter_fullres": float(2 * radius)},
            "metadata": {"source": "c2lst"}}


def _check_inside(obs_names: pd.Index, xy_image: np.ndarray, height: int, width: int, *, what: str) -> None:
    outside = ~((xy_image[:, 0] >= 0) & (xy_image[:, 0] < width) & (xy_image[:, 1] >= 0) & (xy_image[:, 1] < height))
    if outside.any():
        names = list(obs_names[outside][:10])
        raise ValueError(f"{int(outside.sum())} spot centres lie outside the {width}x{height} px image "
                         f"(e.g. {names}); {what}")


def build_sdata(
    *,
    library_id: str,
    counts: sp.csr_matrix,
    obs_names: pd.Index,
    var: pd.DataFrame,
    array_col: np.ndarray,
    array_row: np.ndarray,
    xy: np.ndarray,
    radius: float,
    image: list[da.Array],
    image_transformation: BaseTransformation | None,
    spatial: dict[str, Any],
    outside_hint: str,
    hires: tuple[np.ndarray, float] | None = None,
) -> SpatialData:
    """Build the reader output of docs/design.md.

    ``xy`` are spot centres in the circles' coordinate system (identity to ``"global"``);
    ``image`` is level 0 of the image, optionally followed by precomputed 2x-halved levels;
    ``image_transformation`` maps image pixels to ``"global"`` (``None`` = identity);
    ``hires`` is an optional ready overview of the image for ``uns["spatial"]`` (see :func:`scanpy_spatial`).
    """
    import anndata as ad
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    image_key, shapes_key = f"{library_id}_image", f"{library_id}_spots"
    xy_image = xy
    if image_transformation is not None:
        to_image = image_transformation.inverse().to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
        xy_image = xy @ to_image[:2, :2].T + to_image[:2, 2]
    _check_inside(obs_names, xy_image, image[0].shape[1], image[0].shape[2], what=outside_hint)

    n = len(obs_names)
    spot_ids = np.arange(n)
    circles = ShapesModel.parse(
        np.asarray(xy, dtype=np.float64),
        geometry=0,
        radius=np.full(n, float(radius)),
        index=pd.Index(spot_ids, name=INSTANCE_KEY),
        transformations={"global": Identity()},
    )
    obs = pd.DataFrame(
        {
            "array_col": np.asarray(array_col, dtype=np.int64),
            "array_row": np.asarray(array_row, dtype=np.int64),
            REGION_KEY: pd.Categorical([shapes_key] * n),
            INSTANCE_KEY: spot_ids,
            "library_id": pd.Categorical([library_id] * n),
        },
        index=pd.Index([str(s) for s in obs_names]),
    )
    var = var.copy()
    var.index = pd.Index([str(g) for g in var.index])
    table = ad.AnnData(X=counts, obs=obs, var=var, obsm={"spatial": np.asarray(xy, dtype=np.float64)})
    table.uns[SPATIAL_UNS] = {"spatial": spatial}
    element = image_element(image, transformation=image_transformation)
    record = scanpy_spatial(element, image_transformation, radius, hires=hires)
    if record is not None:
        table.uns["spatial"] = {library_id: record}
    table = TableModel.parse(table, region=shapes_key, region_key=REGION_KEY, instance_key=INSTANCE_KEY)

    return SpatialData(
        images={image_key: element},
        shapes={shapes_key: circles},
        tables={TABLE_KEY: table},
    )
