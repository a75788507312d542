"""10x Visium Space Ranger output -> c2lst's ``SpatialData`` layout (through ``spatialdata-io``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._logging import info
from ._build import check_library_id
from ._spatialdata import from_spatialdata

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
    readers (through :func:`c2lst.io.from_spatialdata`). Microns per full-resolution pixel come from
    ``spot_diameter_fullres`` (``spot_diameter_um``). To choose the image yourself, call
    ``c2lst.io.from_spatialdata(spatialdata_io.visium(path), image_key=...)``.

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
    ``obs["library_id"]``, ``uns["c2lst"]["spatial"]``, scanpy's ``uns["spatial"][library_id]``).

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
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a folder; pass the Space Ranger output folder of one Visium section.")
    library_id = check_library_id(library_id if library_id is not None else path.name)
    start = info(f"reading Visium section {library_id}")
    raw = visium(path, dataset_id=library_id, **kwargs)
    image_key, _ = _pick_image(raw, library_id)
    sdata = from_spatialdata(raw, image_key=image_key, shapes_key=library_id, table_key="table", library_id=library_id,
                             spot_diameter_um=spot_diameter_um, pitch_um=pitch_um)
    table = sdata.tables["table"]
    info(f"read {library_id}: {table.n_obs} spots x {table.n_vars} genes, "
         f"{table.uns['c2lst']['spatial']['mpp']:.4f} µm/px", time=start)
    return sdata
