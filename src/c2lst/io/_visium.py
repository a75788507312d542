"""10x Visium Space Ranger output -> c2lst's ``SpatialData`` layout (through ``spatialdata-io``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._logging import info
from ._build import build_sdata, check_counts, check_library_id, median_nn_spacing, spatial_uns

if TYPE_CHECKING:
    from spatialdata import SpatialData


def _pick_image(raw: SpatialData, library_id: str) -> tuple[str, Any]:
    """Pick the full-resolution image when read, else the hires, else the lowres one."""
    for suffix in ("_full_image", "_hires_image", "_lowres_image"):
        if f"{library_id}{suffix}" in raw.images:
            return f"{library_id}{suffix}", raw.images[f"{library_id}{suffix}"]
    raise ValueError(f"no image found for Visium library {library_id!r} (images: {list(raw.images)}); the Space Ranger "
                     "'spatial/' folder needs tissue_hires_image.png, or pass `fullres_image_file=`.")


def read_visium(
    path: str | Path,
    *,
    library_id: str | None = None,
    spot_diameter_um: float = 55.0,
    pitch_um: float = 100.0,
    **kwargs: Any,
) -> SpatialData:
    """Read a 10x Visium Space Ranger output folder into c2lst's ``SpatialData`` layout.

    Uses :func:`spatialdata_io.visium` (``pip install c2lst[visium]``), then keeps one image (the
    full-resolution one when ``fullres_image_file`` is given, else the hires one, with its transformation
    to full-resolution pixels), the spot circles and the table, renamed and annotated as for the other
    readers. Microns per full-resolution pixel come from ``spot_diameter_fullres`` (``spot_diameter_um``).

    Parameters
    ----------
    path
        Space Ranger output folder (``filtered_feature_bc_matrix.h5`` and ``spatial/``).
    library_id
        Section name used in element names and ``obs["library_id"]``; default: the folder name.
    spot_diameter_um
        Physical spot diameter (55 µm for Visium).
    pitch_um
        Physical centre-to-centre distance of neighbouring spots (100 µm for Visium).
    **kwargs
        Passed to :func:`spatialdata_io.visium` (e.g. ``fullres_image_file``, ``counts_file``).

    Returns
    -------
    ``SpatialData`` with ``images["<library_id>_image"]``, ``shapes["<library_id>_spots"]`` (circles in
    full-resolution pixels) and ``tables["table"]`` (raw counts in ``X``, barcodes as ``obs_names``,
    ``obs["array_col"]``, ``obs["array_row"]``, ``obs["region"]``, ``obs["spot_id"]``,
    ``obs["library_id"]``, ``uns["c2lst"]["spatial"]``).

    Raises
    ------
    ImportError
        When ``spatialdata-io`` is not installed.
    ValueError
        When the folder lacks the expected files or holds no usable image.
    """
    try:
        from spatialdata_io import visium
    except ImportError as e:
        raise ImportError("reading Visium needs spatialdata-io: `pip install c2lst[visium]` "
                          "(or `pip install spatialdata-io`).") from e
    from spatialdata.transformations import get_transformation
    from xarray import DataTree

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder; pass the Space Ranger output folder of one Visium section.")
    library_id = check_library_id(library_id if library_id is not None else path.name)
    start = info(f"reading Visium section {library_id}")
    raw = visium(path, dataset_id=library_id, **kwargs)
    table = raw.tables["table"]
    _, image = _pick_image(raw, library_id)
    level0 = next(iter(image["scale0"].values())) if isinstance(image, DataTree) else image
    cyx = level0.data
    if cyx.shape[0] not in (3, 4) or cyx.dtype != np.uint8:
        raise ValueError(f"the Visium image has {cyx.shape[0]} channels of dtype {cyx.dtype}; c2lst needs 8-bit RGB.")
    circles = raw.shapes[library_id]
    diameter_px = 2 * float(np.median(circles["radius"]))
    mpp = spot_diameter_um / diameter_px
    xy = np.asarray(table.obsm["spatial"], dtype=np.float64)
    source = (f"Visium scalefactors: spot_diameter_fullres {diameter_px:.2f} px = {spot_diameter_um:g} µm spot "
              f"(median nearest-neighbour spacing {median_nn_spacing(xy) * mpp:.1f} µm)")
    sdata = build_sdata(
        library_id=library_id,
        counts=check_counts(table.X, what="Visium counts"),
        obs_names=pd.Index(table.obs_names),
        var=table.var,
        array_col=table.obs["array_col"].to_numpy(),
        array_row=table.obs["array_row"].to_numpy(),
        xy=xy,
        radius=diameter_px / 2,
        image=[cyx[:3]],
        image_transformation=get_transformation(image, library_id),
        spatial=spatial_uns(mpp, source, spot_diameter_um, pitch_um),
        outside_hint="some Visium spots fall outside the image; check `fullres_image_file`.",
    )
    info(f"read {library_id}: {table.n_obs} spots x {table.n_vars} genes, {mpp:.4f} µm/px", time=start)
    return sdata
