"""Map genes on an H&E slide without spots: tile the tissue into pseudo-spots and run a fitted predictor."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._docs import doc_params
from .._utils import SPATIAL_UNS, check_key, resolve_image, returned, writable
from ..core.predictor import Predictor
from ..io._build import scanpy_spatial

if TYPE_CHECKING:
    from spatialdata import SpatialData

_MASK_PX = 1024  # long side of the image level used for the tissue mask (at most; a stored level is used)


def _tissue_mask(image: Any) -> tuple[np.ndarray, float, float]:
    """Boolean tissue mask on a coarse stored level, and its downscale factors (y, x) to level 0."""
    from skimage.color import rgb2gray, rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import binary_closing, binary_opening, disk
    from xarray import DataTree

    arrays = [next(iter(image[k].values())).data for k in image] if isinstance(image, DataTree) else [image.data]
    h0, w0 = arrays[0].shape[1:]
    coarse = [a for a in arrays if max(a.shape[1:]) <= _MASK_PX]
    level = coarse[0] if coarse else arrays[-1]
    rgb = np.moveaxis(np.asarray(level.compute() if hasattr(level, "compute") else level), 0, -1)
    if rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError("predict_slide needs an 8-bit RGB image (3 channels, uint8).")
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / _MASK_PX)))
    rgb = rgb[::step, ::step]
    sat = rgb2hsv(rgb)[..., 1]
    dark = 1.0 - rgb2gray(rgb)
    score = sat + dark
    thr = threshold_otsu(score) if np.ptp(score) > 0 else np.inf
    mask = binary_opening(binary_closing(score > thr, disk(2)), disk(2))
    return mask, h0 / mask.shape[0], w0 / mask.shape[1]


def _lattice(width: float, height: float, pitch: float, lattice: str) -> tuple[np.ndarray, ...]:
    """Grid points ``pitch`` apart over a ``width`` x ``height`` image: centres x, y and array column, row.

    ``"square"``: rows and columns ``pitch`` apart (legacy ST). ``"hex"``: rows ``pitch * sqrt(3) / 2`` apart, odd
    rows shifted by half a pitch, so each point has six neighbours ``pitch`` away; the array column follows
    Visium's convention (``2 * column + row % 2``). Every centre is at least half a pitch from the image's edges.
    """
    hex_ = lattice == "hex"
    dy = pitch * np.sqrt(3) / 2 if hex_ else pitch
    rows = np.arange(int((height - pitch) // dy) + 1 if height >= pitch else 0)
    cols = np.arange(int(width // pitch))
    col, row = (a.ravel() for a in np.meshgrid(cols, rows))
    shift = (row % 2) * 0.5 * hex_
    cx, cy = (col + 0.5 + shift) * pitch, pitch / 2 + row * dy
    inside = cx + pitch / 2 <= width
    array_col = 2 * col + row % 2 if hex_ else col
    return cx[inside], cy[inside], array_col[inside], row[inside]


def _image_mpp(sdata: SpatialData, image_key: str) -> float:
    """µm per level-0 image pixel: from :func:`c2lst.io.read_slide`'s record, else from a table on the same image."""
    from spatialdata.transformations import get_transformation

    from ..io._slide import recorded_mpp

    recorded = recorded_mpp(sdata, image_key)
    if recorded is not None:
        return recorded
    t_img = get_transformation(sdata.images[image_key], get_all=True)
    for table in sdata.tables.values():
        attrs = table.uns.get("spatialdata_attrs", {})
        region, spatial = attrs.get("region"), table.uns.get(SPATIAL_UNS, {}).get("spatial", {})
        if isinstance(region, str) and region in sdata.shapes and "mpp" in spatial:
            t_spots = get_transformation(sdata.shapes[region], get_all=True)
            same = t_img.keys() == t_spots.keys() and all(
                np.allclose(t_img[k].to_affine_matrix(("x", "y"), ("x", "y")),
                            t_spots[k].to_affine_matrix(("x", "y"), ("x", "y"))) for k in t_img)
            if same:
                return float(spatial["mpp"])
    raise ValueError("microns per image pixel unknown: the image was not read with c2lst.io.read_slide and no table "
                     "with .uns['c2lst']['spatial']['mpp'] shares its coordinates; pass `mpp=` (µm per "
                     "full-resolution pixel).")


@doc_params
def predict_slide(
    sdata: SpatialData,
    model: Predictor | str | Path,
    *,
    image_key: str | None = None,
    mpp: float | None = None,
    grid_um: float = 200.0,
    spot_um: float = 100.0,
    lattice: Literal["square", "hex"] = "square",
    min_tissue: float = 0.5,
    central: Any = None,
    batch_size: int = 256,
    key_added: str = "c2lst_slide",
    overwrite: bool = False,
    copy: bool = False,
) -> SpatialData | None:
    """Predict expression on a grid of pseudo-spots covering the tissue of an H&E image.

    The tissue is found with an Otsu threshold on saturation + darkness of a coarse image level; grid points
    (``grid_um`` apart) whose ``spot_um`` disk is at least ``min_tissue`` tissue become pseudo-spots. Their
    patches are cut with :func:`c2lst.pp.extract_patches` at the predictor's patch size and scored with the
    fitted predictor (what :func:`c2lst.tl.predict` returns, or ``Predictor.load``).

    Parameters
    ----------
    {sdata}
        It holds the H&E image (spots and tables are not needed), e.g. from :func:`c2lst.io.read_slide`.
    model
        A fitted :class:`~c2lst.core.predictor.Predictor` or the directory it was saved to.
    image_key
        Image element to tile when there are several.
    mpp
        µm per full-resolution image pixel; default: recorded by :func:`c2lst.io.read_slide`, else from a c2lst
        table whose circles share the image's coordinates.
    grid_um
        Distance between neighbouring pseudo-spots (µm).
    spot_um
        Pseudo-spot (and patch) diameter in µm; use the patch size the predictor was trained with.
    lattice
        ``"square"`` (rows and columns ``grid_um`` apart, as legacy ST) or ``"hex"`` (six neighbours ``grid_um``
        away, odd rows shifted by half a step, as Visium; ``array_col`` in Visium's doubled convention, so
        ``squidpy.gr.spatial_neighbors(..., coord_type="grid", n_neighs=6)`` applies).
    min_tissue
        Minimum tissue fraction of a pseudo-spot.
    central
        Central model needed to load a saved predictor that uses ``encoder="central"``.
    batch_size
        Patches read per batch.
    {key_added_overwrite_copy}

    Returns
    -------
    ``None`` (the copy with ``copy=True``). Writes to ``sdata``:

    - ``.shapes[f"{key_added}_spots"]``: pseudo-spot circles (in image pixels, with the image's
      transformations).
    - ``.tables[key_added]``: ``X`` = predicted log-normalised expression (pseudo-spots x panel genes),
      ``obs`` grid position (``array_col``, ``array_row``), ``region``/``spot_id``/``library_id``,
      ``obsm["spatial"]`` (centres in image pixels), ``obsm["c2lst_patch"]``, ``uns["c2lst"]["spatial"]``, scanpy's
      ``uns["spatial"][key_added]`` (a 2,000 px copy of the image: ``sc.pl.spatial`` works on the table) and
      ``uns[key_added]["params"]``.
    """
    import anndata as ad
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    from ..pp import extract_patches

    start = logg.info("predicting expression on a grid over the tissue")
    if not hasattr(sdata, "images"):
        raise ValueError("predict_slide needs a SpatialData object with an H&E image (read it with c2lst.io).")
    if not isinstance(model, Predictor):
        model = Predictor.load(model, central=central)
    if not model.genes or "patch_px" not in model.fit_info:
        raise ValueError("the predictor has no gene names or patch size; fit it with c2lst.tl.predict (it returns "
                         "the fitted predictor).")
    if not (grid_um > 0 and spot_um > 0 and 0 <= min_tissue <= 1):
        raise ValueError(f"need grid_um > 0, spot_um > 0 and min_tissue in [0, 1]; got {grid_um}, {spot_um}, {min_tissue}.")
    if lattice not in ("square", "hex"):
        raise ValueError(f"`lattice` must be 'square' or 'hex', got {lattice!r}.")
    shapes_key = f"{key_added}_spots"
    sdata = writable(sdata, copy)
    check_key(sdata.tables, key_added, where="sdata.tables", overwrite=overwrite)
    check_key(sdata.shapes, shapes_key, where="sdata.shapes", overwrite=overwrite)
    image_key = resolve_image(sdata, image_key)
    mpp = float(mpp) if mpp is not None else _image_mpp(sdata, image_key)
    if not mpp > 0:
        raise ValueError(f"`mpp` must be positive, got {mpp}.")

    mask, fy, fx = _tissue_mask(sdata.images[image_key])
    h0, w0 = mask.shape[0] * fy, mask.shape[1] * fx
    pitch, radius = grid_um / mpp, spot_um / 2 / mpp
    cx, cy, cols, rows = _lattice(w0, h0, pitch, lattice)
    yy, xx = np.mgrid[-1:1:9j, -1:1:9j]
    inside = (xx**2 + yy**2) <= 1
    sx = np.clip(((cx[:, None] + xx[inside] * radius) / fx).astype(int), 0, mask.shape[1] - 1)
    sy = np.clip(((cy[:, None] + yy[inside] * radius) / fy).astype(int), 0, mask.shape[0] - 1)
    keep = mask[sy, sx].mean(axis=1) >= min_tissue
    if not keep.any():
        raise ValueError("no grid point lies on tissue; lower `min_tissue` or `grid_um`, or check the image.")
    xy = np.c_[cx[keep], cy[keep]]
    n = len(xy)
    ids = np.arange(n)
    circles = ShapesModel.parse(xy, geometry=0, radius=np.full(n, radius), index=pd.Index(ids, name="spot_id"),
                                transformations=get_transformation(sdata.images[image_key], get_all=True))
    obs = pd.DataFrame({"array_col": cols[keep].astype(np.int64), "array_row": rows[keep].astype(np.int64),
                        "region": pd.Categorical([shapes_key] * n), "spot_id": ids,
                        "library_id": pd.Categorical([key_added] * n)},
                       index=pd.Index([f"{c}x{r}" for c, r in zip(cols[keep], rows[keep], strict=True)]))
    table = ad.AnnData(X=np.zeros((n, len(model.genes)), dtype=np.float32), obs=obs,
                       var=pd.DataFrame(index=pd.Index(model.genes)), obsm={"spatial": xy})
    table.uns[SPATIAL_UNS] = {"spatial": {"mpp": mpp, "mpp_source": "predict_slide grid", "spot_diameter_um": spot_um,
                                          "pitch_um": grid_um, "lattice": lattice}}
    record = scanpy_spatial(sdata.images[image_key], None, radius)  # circles share the image's pixel coordinates
    if record is not None:
        table.uns["spatial"] = {key_added: record}
    table = TableModel.parse(table, region=shapes_key, region_key="region", instance_key="spot_id")
    if shapes_key in sdata.shapes:
        del sdata.shapes[shapes_key]
    if key_added in sdata.tables:
        del sdata.tables[key_added]
    sdata.shapes[shapes_key] = circles
    sdata.tables[key_added] = table
    extract_patches(sdata, image_key=image_key, shapes_key=shapes_key, table_key=key_added, patch_um=spot_um,
                    patch_px=int(model.fit_info["patch_px"]), batch_size=batch_size)
    table = sdata.tables[key_added]
    table.X = model.predict(np.asarray(table.obsm["c2lst_patch"]))
    table.uns[key_added] = {"params": {"grid_um": float(grid_um), "spot_um": float(spot_um), "mpp": mpp,
                                       "min_tissue": float(min_tissue), "lattice": lattice, "image_key": image_key,
                                       "encoder": model.encoder_kind, "head": model.head_kind, "n_spots": n}}
    logg.info(f"    added .shapes[{shapes_key!r}] and .tables[{key_added!r}] ({n} pseudo-spots x {len(model.genes)} "
              "genes)", time=start)
    return returned(sdata, None, copy)
