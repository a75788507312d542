"""Scanpy's Visium-style ``AnnData`` (``obsm["spatial"]`` + ``uns["spatial"]``) -> ``SpatialData``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._logging import info
from ._build import build_sdata, check_library_id, median_nn_spacing, spatial_uns, table_parts
from ._image import in_memory_levels, rgb_hwc

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

SCALEFACTOR = {"hires": "tissue_hires_scalef", "lowres": "tissue_lowres_scalef"}


def _library(adata: AnnData, library_id: str | None) -> tuple[str, dict]:
    spatial = adata.uns.get("spatial")
    if not isinstance(spatial, dict) or not spatial:
        raise ValueError("adata.uns['spatial'] is missing; expected scanpy's Visium layout "
                         "uns['spatial'][library_id] = {'images': {...}, 'scalefactors': {...}} (sc.read_visium).")
    if library_id is None:
        if len(spatial) > 1:
            raise ValueError(f"adata.uns['spatial'] holds several libraries {list(spatial)}; choose one with `library_id=`.")
        library_id = next(iter(spatial))
    if library_id not in spatial:
        raise ValueError(f"library {library_id!r} not in adata.uns['spatial'] ({list(spatial)}); pass an existing `library_id`.")
    return library_id, spatial[library_id]


def _image_uint8(img: np.ndarray, *, what: str) -> np.ndarray:
    img = np.asarray(img)
    if np.issubdtype(img.dtype, np.floating):
        if img.size and (np.nanmin(img) < 0 or np.nanmax(img) > 1):
            raise ValueError(f"{what} is float with values outside [0, 1]; pass a float image in [0, 1] or uint8 RGB.")
        img = np.rint(np.nan_to_num(img) * 255).astype(np.uint8)
    return np.ascontiguousarray(rgb_hwc(img, what=what))


def from_anndata(
    adata: AnnData,
    library_id: str | None = None,
    *,
    spot_diameter_um: float = 55.0,
    pitch_um: float = 100.0,
) -> SpatialData:
    """Convert a scanpy Visium-style ``AnnData`` into c2lst's ``SpatialData`` layout.

    The spots are circles in full-resolution pixels (``obsm["spatial"]``); the stored ``hires`` (else
    ``lowres``) image becomes the image element with a ``Scale`` transformation to full resolution.
    Microns per full-resolution pixel come from ``scalefactors["spot_diameter_fullres"]`` and
    ``spot_diameter_um``.

    Parameters
    ----------
    adata
        ``AnnData`` with raw counts in ``X``, ``obsm["spatial"]`` (full-resolution pixels, x then y) and
        ``uns["spatial"][library_id]`` holding ``"images"`` (``"hires"`` or ``"lowres"``, float in [0, 1]
        or uint8 RGB) and ``"scalefactors"`` (``tissue_hires_scalef``/``tissue_lowres_scalef``,
        ``spot_diameter_fullres``). Not modified.
    library_id
        Library in ``uns["spatial"]``; default: the only one.
    spot_diameter_um
        Physical spot diameter (55 µm for Visium).
    pitch_um
        Physical centre-to-centre distance of neighbouring spots (100 µm for Visium).

    Returns
    -------
    ``SpatialData`` with ``images["<library_id>_image"]`` (``Scale`` to full-resolution pixels),
    ``shapes["<library_id>_spots"]`` (circles in full-resolution pixels) and ``tables["table"]``
    (``X`` raw counts, ``obs_names`` barcodes, ``obs["array_col"]``, ``obs["array_row"]`` (from
    ``adata.obs`` or, when absent, grid indices derived from the coordinates), ``obs["region"]``,
    ``obs["spot_id"]``, ``obs["library_id"]``, ``uns["c2lst"]["spatial"]``, scanpy's ``uns["spatial"][library_id]``).

    Raises
    ------
    ValueError
        When the Visium layout is missing or incomplete, counts are not raw counts or the image not RGB.
    """
    from spatialdata.transformations import Scale

    start = info("converting AnnData")
    library_id, lib = _library(adata, library_id)
    check_library_id(library_id)
    if "spatial" not in adata.obsm:
        raise ValueError("adata.obsm['spatial'] (spot centres in full-resolution pixels, x then y) is missing.")
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    scalefactors, images = lib.get("scalefactors", {}), lib.get("images", {})
    res = next((r for r in ("hires", "lowres") if r in images), None)
    if res is None or SCALEFACTOR[res] not in scalefactors or "spot_diameter_fullres" not in scalefactors:
        raise ValueError(f"uns['spatial'][{library_id!r}] needs images['hires'] (or ['lowres']) with scalefactors "
                         f"'{SCALEFACTOR.get(res or 'hires')}' and 'spot_diameter_fullres'; found images {list(images)} "
                         f"and scalefactors {list(scalefactors)}.")
    scale = float(scalefactors[SCALEFACTOR[res]])
    diameter_px = float(scalefactors["spot_diameter_fullres"])
    if not (scale > 0 and diameter_px > 0):
        raise ValueError(f"scalefactors {SCALEFACTOR[res]}={scale} and spot_diameter_fullres={diameter_px} must be positive.")
    img = _image_uint8(images[res], what=f"uns['spatial'][{library_id!r}]['images'][{res!r}]")
    mpp = spot_diameter_um / diameter_px
    source = f"Visium scalefactors: spot_diameter_fullres {diameter_px:.2f} px = {spot_diameter_um:g} µm spot"
    if len(xy) > 1:
        source += f" (median nearest-neighbour spacing {median_nn_spacing(xy) * mpp:.1f} µm)"
    sdata = build_sdata(
        library_id=library_id,
        **table_parts(adata, xy, pitch_um / mpp, what="adata.X counts"),
        radius=diameter_px / 2,
        image=in_memory_levels(img),
        image_transformation=Scale([1 / scale, 1 / scale], axes=("y", "x")),
        spatial=spatial_uns(mpp, source, spot_diameter_um, pitch_um),
        outside_hint="obsm['spatial'] must be full-resolution pixels (x, y) and the scalefactor must match the image.",
    )
    info(f"converted {library_id}: {adata.n_obs} spots x {adata.n_vars} genes, {mpp:.4f} µm/px", time=start)
    return sdata
