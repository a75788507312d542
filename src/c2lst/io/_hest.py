"""One HEST-1k sample on disk (``st/<id>.h5ad``, ``wsis/<id>.tif``, ``metadata/<id>.json``) -> ``SpatialData``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import info, warning
from ._anndata import _image_uint8
from ._build import build_sdata, check_library_id, median_nn_spacing, spatial_uns, table_parts
from ._image import read_rgb

if TYPE_CHECKING:
    from spatialdata import SpatialData

HEST_LIBRARY = "ST"  # HEST writes its downscaled WSI under uns["spatial"]["ST"]
MPP_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded")  # in that order: HEST's own estimate first


def _hest_files(root: Path, sample_id: str) -> tuple[Path, Path, Path]:
    files = (root / "st" / f"{sample_id}.h5ad", root / "wsis" / f"{sample_id}.tif", root / "metadata" / f"{sample_id}.json")
    missing = [str(p.relative_to(root)) for p in files if not p.is_file()]
    if missing:
        have = sorted(p.stem for p in (root / "st").glob("*.h5ad")) if (root / "st").is_dir() else []
        raise ValueError(f"HEST sample {sample_id!r} is incomplete under {str(root)!r}: missing {missing}. The HEST-1k "
                         "layout is st/<id>.h5ad, wsis/<id>.tif and metadata/<id>.json"
                         + (f"; samples with an h5ad here: {have[:10]}" if have else "") + ".")
    return files


def _positive(meta: dict[str, Any], key: str, given: float | None, what: str) -> float:
    value = given if given is not None else meta.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = float("nan")
    if not value > 0:
        raise ValueError(f"the HEST metadata has no usable {key!r} ({meta.get(key)!r}); pass `{what}=` (in µm).")
    return value


def _overview(adata: Any) -> tuple[np.ndarray, float] | None:
    """HEST's ``downscaled_fullres`` image and its scale (downscaled px per full-resolution px), when stored."""
    lib = adata.uns.get("spatial", {}).get(HEST_LIBRARY, {})
    img = lib.get("images", {}).get("downscaled_fullres")
    scalef = lib.get("scalefactors", {}).get("tissue_downscaled_fullres_scalef")
    if img is None or not scalef or float(scalef) <= 0:
        return None
    return _image_uint8(img, what="uns['spatial']['ST']['images']['downscaled_fullres']"), float(scalef)


def read_hest(
    root: str | Path,
    sample_id: str,
    *,
    library_id: str | None = None,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
    pitch_um: float | None = None,
) -> SpatialData:
    """Read one HEST-1k sample from its on-disk layout into c2lst's ``SpatialData`` layout.

    HEST-1k (Jaume et al. 2024) stores each sample as ``st/<id>.h5ad`` (raw counts, spot centres in
    ``obsm["spatial"]`` in full-resolution pixels of the WSI, optionally ``uns["spatial"]["ST"]`` with a
    ``downscaled_fullres`` image), ``wsis/<id>.tif`` (the pyramidal H&E whole-slide image, read lazily) and
    ``metadata/<id>.json``. Microns per pixel come from the metadata's ``pixel_size_um_estimated`` (else
    ``pixel_size_um_embedded``), the spot size from ``spot_diameter`` and the pitch from ``inter_spot_dist``
    (both in µm). A sample whose spot spacing disagrees with its pitch by more than 25% is read with a warning.

    Parameters
    ----------
    root
        Folder holding ``st/``, ``wsis/`` and ``metadata/`` (a HEST-1k download or a subset of it).
    sample_id
        HEST sample id, e.g. ``"TENX95"`` or ``"SPA154"``.
    library_id
        Section name used in element names and ``obs["library_id"]``; default: ``sample_id``.
    mpp
        Microns per full-resolution pixel, overriding the metadata.
    spot_diameter_um
        Spot diameter in µm, overriding the metadata's ``spot_diameter``.
    pitch_um
        Centre-to-centre spot distance in µm, overriding the metadata's ``inter_spot_dist``.

    Returns
    -------
    ``SpatialData`` with ``images["<library_id>_image"]`` (the WSI, full-resolution pixels),
    ``shapes["<library_id>_spots"]`` (circles in full-resolution pixels) and ``tables["table"]`` (raw counts
    in ``X``, the h5ad's ``obs_names`` and ``var``, ``obs["array_col"]``, ``obs["array_row"]``,
    ``obs["region"]``, ``obs["spot_id"]``, ``obs["library_id"]``, ``obsm["spatial"]``,
    ``uns["c2lst"]["spatial"]`` and scanpy's ``uns["spatial"][library_id]`` made from HEST's
    ``downscaled_fullres`` image when present).

    Raises
    ------
    ValueError
        When a file of the layout is missing, the metadata lacks the pixel size or spot geometry (pass it),
        counts are not raw counts, or spots lie outside the WSI.
    """
    import anndata as ad

    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a folder; pass the HEST-1k root holding st/, wsis/ and metadata/.")
    h5ad, wsi, meta_path = _hest_files(root, str(sample_id))
    library_id = check_library_id(library_id if library_id is not None else str(sample_id))
    start = info(f"reading HEST sample {sample_id}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path} is not valid JSON ({e}); restore the HEST metadata file.") from None
    if mpp is None:
        key = next((k for k in MPP_KEYS if meta.get(k) is not None), MPP_KEYS[0])
    else:
        key = "mpp"
    mpp = _positive(meta, key, mpp, "mpp")
    spot_diameter_um = _positive(meta, "spot_diameter", spot_diameter_um, "spot_diameter_um")
    pitch_um = _positive(meta, "inter_spot_dist", pitch_um, "pitch_um")

    adata = ad.read_h5ad(h5ad)
    if "spatial" not in adata.obsm:
        raise ValueError(f"{h5ad.name} has no obsm['spatial'] (spot centres in full-resolution pixels, x then y).")
    xy = np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2]
    spacing_um = median_nn_spacing(xy) * mpp
    source = (f"HEST metadata {key} = {mpp:.4g} µm/px" if key != "mpp" else f"mpp={mpp:.4g} given") + \
        f" (median nearest-neighbour spacing {spacing_um:.1f} µm)"
    if abs(spacing_um / pitch_um - 1) > 0.25:
        warning(f"HEST sample {sample_id}: spots are {spacing_um:.1f} µm apart at {mpp:.4g} µm/px, but the pitch is "
                f"{pitch_um:g} µm; check the pixel size (pass `mpp=`) or `pitch_um=`.")
    sdata = build_sdata(
        library_id=library_id,
        **table_parts(adata, xy, pitch_um / mpp, what=f"counts in {h5ad.name}"),
        radius=spot_diameter_um / 2 / mpp,
        image=read_rgb(wsi),
        image_transformation=None,
        spatial=spatial_uns(mpp, source, spot_diameter_um, pitch_um),
        outside_hint=f"obsm['spatial'] of {h5ad.name} must be full-resolution pixels (x, y) of {wsi.name}.",
        hires=_overview(adata),
    )
    info(f"read {library_id}: {adata.n_obs} spots x {adata.n_vars} genes, {mpp:.4f} µm/px", time=start)
    return sdata
