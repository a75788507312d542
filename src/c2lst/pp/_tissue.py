"""Unlabelled tissue tiles on a grid over the H&E image of each section, read lazily, spot footprints excluded."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import info
from .._settings import settings
from .._utils import resolve_table, spot_mpp, table_region_attrs
from ..io._histology import HistologyTiles, tissue_mask
from ._patches import _cut, _Level, _levels, _shapes_to_image

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

CANDIDATES_PER_READ = 4096  # grid positions cut per read when a budget stops the scan early
FOOTPRINT_MARGIN_PX = 2  # tile pixels added around a spot's footprint: the reach of the resampling kernels


@dataclass(frozen=True)
class _Grid:
    """The tile grid of one section: centres in the read level's index coordinates and the cutting map."""

    name: str
    level: _Level
    centres: np.ndarray  # (k, 2) row, col in the level's index coordinates
    lin: np.ndarray  # output (di, dj) -> level (drow, dcol)


def _section_rows(table: AnnData, library_ids: Sequence[str] | None) -> dict[str, np.ndarray]:
    """Table rows of each section (``obs["library_id"]``), or of the only section when there is no such column."""
    if "library_id" not in table.obs:
        if library_ids is not None:
            raise ValueError("`library_ids` given but the table has no obs['library_id'] column; leave it unset "
                             "(one section) or add the column.")
        return {"": np.arange(table.n_obs)}
    libs = table.obs["library_id"].astype(str).to_numpy()
    known = list(dict.fromkeys(libs))
    if library_ids is None:
        library_ids = known
    elif isinstance(library_ids, str) or not all(isinstance(x, str) for x in library_ids):
        raise ValueError(f"`library_ids` must be a list of section names, got {library_ids!r}.")
    unknown = [x for x in library_ids if x not in known]
    if unknown:
        raise ValueError(f"library ids {unknown} not in table.obs['library_id'] (sections: {known}).")
    if not library_ids:
        raise ValueError("`library_ids` is empty; name at least one section.")
    return {x: np.flatnonzero(libs == x) for x in dict.fromkeys(library_ids)}


def _section_elements(sdata: SpatialData, table: AnnData, lib: str, rows: np.ndarray,
                      image_key: str | Mapping[str, str] | None) -> tuple[str, str]:
    """``(shapes_key, image_key)`` of one section."""
    region_key, _, _ = table_region_attrs(table)
    regions = list(dict.fromkeys(table.obs[region_key].astype(str).to_numpy()[rows]))
    if len(regions) != 1:
        raise ValueError(f"section {lib!r} spans the spot sets {regions}; one section needs one set of circles.")
    shapes_key = regions[0]
    if isinstance(image_key, Mapping):
        key = image_key.get(lib)
    elif image_key is not None:
        key = image_key
    elif len(sdata.images) == 1:
        key = next(iter(sdata.images))
    else:  # the readers' naming: <library_id>_spots and <library_id>_image
        guesses = [f"{lib}_image", shapes_key.removesuffix("_spots") + "_image"]
        key = next((g for g in guesses if g in sdata.images), None)
    if key is None or key not in sdata.images:
        raise ValueError(f"no image for library id {lib!r} (images: {list(sdata.images)}); pass "
                         f"`image_key={{{lib!r}: <image element>}}`.")
    return shapes_key, key


def _grid(n_px: float, side: float, stride: float) -> np.ndarray:
    """Return the starts of the tiles of a centred grid along one axis of ``n_px`` pixels (tiles fully inside)."""
    if n_px < side:
        return np.empty(0)
    k = math.floor((n_px - side) / stride + 1e-9) + 1
    return (n_px - ((k - 1) * stride + side)) / 2 + stride * np.arange(k)


def _overlapping(x0: np.ndarray, y0: np.ndarray, side: tuple[float, float], centres: np.ndarray,
                 half: tuple[float, float], radius: float) -> np.ndarray:
    """Which tiles ``[x0, x0 + side_x) x [y0, y0 + side_y)`` touch a spot footprint around any of ``centres``.

    A footprint is the box of half-sides ``half`` (x, y) and the disc of ``radius`` centred on the spot.
    """
    from scipy.spatial import cKDTree

    hit = np.zeros(len(x0), dtype=bool)
    if not len(centres) or not len(x0):
        return hit
    mid = np.c_[x0 + side[0] / 2, y0 + side[1] / 2]
    reach = max(radius, math.hypot(*half)) + math.hypot(*side) / 2
    for (cx, cy), near in zip(centres, cKDTree(mid).query_ball_point(centres, r=reach), strict=True):
        t = np.asarray(near, dtype=np.int64)
        if t.size:
            box = (np.abs(mid[t, 0] - cx) < half[0] + side[0] / 2) & (np.abs(mid[t, 1] - cy) < half[1] + side[1] / 2)
            dx = cx - np.clip(cx, x0[t], x0[t] + side[0])
            dy = cy - np.clip(cy, y0[t], y0[t] + side[1])
            hit[t[box | (dx * dx + dy * dy < radius * radius)]] = True
    return hit


def _section_grid(sdata: SpatialData, table: AnnData, lib: str, rows: np.ndarray, exclude: np.ndarray,
                  image_key: str | Mapping[str, str] | None, unit_um: float, tile_um: float, tile_px: int,
                  stride_um: float) -> tuple[_Grid, int]:
    """Build the grid of one section without the tiles touching its excluded spots; also how many were dropped."""
    shapes_key, key = _section_elements(sdata, table, lib, rows, image_key)
    levels = _levels(sdata.images[key], key)
    affine = _shapes_to_image(sdata, shapes_key, key)
    lin0 = affine[:2, :2]
    px_um0 = np.linalg.norm(np.linalg.inv(lin0), axis=0) * unit_um  # µm per level-0 pixel along x, y
    h0, w0 = levels[0].data.shape[1:]
    side = (tile_um / px_um0[0], tile_um / px_um0[1])
    xs, ys = _grid(w0, side[0], stride_um / px_um0[0]), _grid(h0, side[1], stride_um / px_um0[1])
    x0, y0 = (a.ravel() for a in np.meshgrid(xs, ys))
    dropped = np.zeros(len(x0), dtype=bool)
    if exclude[rows].any():
        _, instance_key, _ = table_region_attrs(table)
        shapes = sdata.shapes[shapes_key]
        where = shapes.index.get_indexer(table.obs[instance_key].to_numpy()[rows[exclude[rows]]])
        if (where < 0).any():
            raise ValueError(f"{int((where < 0).sum())} excluded spots have no circle in {shapes_key!r}; "
                             f"obs[{instance_key!r}] must match the shapes index.")
        circles = shapes.iloc[where]
        xy = np.c_[circles.geometry.centroid.x.to_numpy(), circles.geometry.centroid.y.to_numpy()]
        # the spot's circle and the tile_um patch extract_patches cuts around it (square in the circles'
        # coordinates: its bounding box in the image), widened by what the resampling kernels reach
        margin = FOOTPRINT_MARGIN_PX * tile_um / tile_px / float(px_um0.min())
        r_px = float(circles["radius"].max()) * unit_um / float(px_um0.min()) if "radius" in circles.columns else 0.0
        half = np.abs(lin0) @ np.full(2, tile_um / 2 / unit_um) + margin
        dropped = _overlapping(x0, y0, side, xy @ lin0.T + affine[:2, 2], (float(half[0]), float(half[1])),
                               r_px + margin)
    x0, y0 = x0[~dropped], y0[~dropped]
    target = tile_um / tile_px
    fine = [k for k, lv in enumerate(levels) if max(px_um0[0] * lv.fx, px_um0[1] * lv.fy) <= target * (1 + 1e-6)]
    level = levels[fine[-1] if fine else 0]
    centres = np.c_[(y0 + side[1] / 2) / level.fy - 0.5, (x0 + side[0] / 2) / level.fx - 0.5]
    lin = np.diag([target / (px_um0[1] * level.fy), target / (px_um0[0] * level.fx)])
    return _Grid(lib, level, centres, lin), int(dropped.sum())


def _check(tile_um: float, tile_px: int, stride_um: float, min_tissue: float, max_tiles: int | None,
           mpp: float | None) -> None:
    if not (isinstance(tile_px, int | np.integer) and 8 <= tile_px <= 1024):
        raise ValueError(f"tile_px={tile_px!r} must be an integer in [8, 1024] (64 is the default).")
    if not tile_um > 0:
        raise ValueError(f"tile_um={tile_um!r} must be a positive physical size in microns (100 µm = one ST spot).")
    if not stride_um > 0:
        raise ValueError(f"stride_um={stride_um!r} must be positive (microns between tile origins; default tile_um).")
    if not 0 <= min_tissue <= 1:
        raise ValueError(f"min_tissue={min_tissue!r} must be a fraction in [0, 1].")
    if max_tiles is not None and not (isinstance(max_tiles, int | np.integer) and max_tiles >= 1):
        raise ValueError(f"max_tiles={max_tiles!r} must be a positive integer or None (all tiles).")
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp={mpp!r} must be positive (microns per unit of the spot coordinates).")


def _exclude_mask(exclude_spots: Any, n: int) -> np.ndarray:
    if exclude_spots is None:
        return np.zeros(n, dtype=bool)
    arr = np.asarray(exclude_spots)
    if arr.dtype != bool or arr.shape != (n,):
        raise ValueError(f"`exclude_spots` must be a boolean mask with one value per spot ({n},), got "
                         f"{arr.dtype} values of shape {arr.shape}; e.g. `exclude_spots=~train_mask`.")
    return arr


def tissue_tiles(
    sdata: SpatialData,
    *,
    library_ids: Sequence[str] | None = None,
    image_key: str | Mapping[str, str] | None = None,
    table_key: str | None = None,
    tile_um: float = 100.0,
    tile_px: int = 64,
    stride_um: float | None = None,
    min_tissue: float = 0.5,
    exclude_spots: Any = None,
    max_tiles: int | None = None,
    seed: int = 0,
    mpp: float | None = None,
) -> HistologyTiles:
    """Cut unlabelled tissue tiles on a grid over the H&E image of each section.

    Between and around its spots a section's image holds hundreds of tiles of the lab's own morphology,
    stain and scanner; :func:`c2lst.tl.adapt` (``tissue=``) trains the local stage on them. Tiles of
    ``tile_um`` microns lie on a grid ``stride_um`` apart, aligned with the image axes and centred on the
    image; each is read window by window from the (multiscale, dask) image at the coarsest stored level
    still at least as fine as ``tile_um / tile_px`` µm/px (the same anti-aliased resampling as
    :func:`extract_patches`; a slide is never loaded whole), and kept when at least ``min_tissue`` of its
    pixels are stained tissue (the tissue detector of :func:`c2lst.io.read_histology`). Tiles touching the
    footprint of an ``exclude_spots`` spot are dropped before any pixel is read, so that the pixels of held-out
    spots never enter training: the footprint is the spot's circle and the ``tile_um`` patch
    :func:`extract_patches` cuts around it (its bounding box in the image), widened by two tile pixels (what the
    anti-aliasing kernels reach).

    Parameters
    ----------
    sdata
        ``SpatialData`` with the H&E image(s), the spot circles and a table annotating them (as read by
        :mod:`c2lst.io`).
    library_ids
        Sections to tile (values of ``table.obs["library_id"]``); default: every section of the table.
    image_key
        Image of the section: one name (one section), or a dict from library id to image name; default: the
        only image, else ``"<library_id>_image"`` (the readers' naming).
    table_key
        Table to use when ``sdata`` has several.
    tile_um
        Physical side of a tile in microns (use the ``patch_um`` of the spot patches; 100 µm = one ST spot).
    tile_px
        Side of a tile in pixels (8 to 1024).
    stride_um
        Distance between neighbouring tiles in microns; default ``tile_um`` (non-overlapping tiles).
    min_tissue
        Minimum fraction of tissue pixels for a tile to be kept (0 to 1).
    exclude_spots
        Boolean mask over the table's spots (one per row): tiles overlapping these spots' footprints are dropped
        (e.g. ``~train_mask``, the held-out spots). Default: none.
    max_tiles
        Keep at most this many tiles: a uniform seeded draw among all tissue tiles of the sections (grid
        positions are scanned in a seeded order and the scan stops once enough tissue tiles are found).
    seed
        Seed of that draw.
    mpp
        Microns per unit of the circles' coordinates; default ``table.uns["c2lst"]["spatial"]["mpp"]``.

    Returns
    -------
    :class:`~c2lst.io.HistologyTiles`, the container of :func:`c2lst.io.read_histology`: ``.tiles``, uint8
    ``(n, 3, tile_px, tile_px)`` (the layout of :func:`extract_patches`' ``.obsm`` patches), ordered by section
    and grid position; ``.source``, the section (library id) of each tile; ``.mpp``, ``.tile_um`` and
    ``.params`` (the arguments). Pass it to :func:`c2lst.tl.adapt` (``tissue=``) or :func:`c2lst.tl.pretrain`.
    Nothing is written to ``sdata``.

    Raises
    ------
    ValueError
        For bad sizes or fractions, an AnnData input, an unknown library id, a section without an image, a
        non-RGB image, an ``exclude_spots`` that is not a boolean mask over the spots, or when no tile passes
        the tissue filter.
    """
    began = info(f"cutting {tile_um:g} µm tissue tiles at {tile_px} px")
    stride_um = tile_um if stride_um is None else stride_um
    _check(tile_um, tile_px, stride_um, min_tissue, max_tiles, mpp)
    sd, table, _ = resolve_table(sdata, table_key)
    if sd is None:
        raise ValueError("tissue_tiles needs a SpatialData object with the H&E image and the spot circles; read the "
                         "data with c2lst.io (an AnnData has no image element).")
    exclude = _exclude_mask(exclude_spots, table.n_obs)
    unit_um = float(mpp) if mpp is not None else spot_mpp(table)
    sections = _section_rows(table, library_ids)
    if isinstance(image_key, str) and len(sections) > 1:
        raise ValueError(f"image_key={image_key!r} names one image but {len(sections)} sections are tiled; pass a "
                         "dict {library_id: image_key} or leave it unset (the readers' '<library_id>_image').")
    grids, n_dropped = [], 0
    for lib, rows in sections.items():
        grid, dropped = _section_grid(sd, table, lib, rows, exclude, image_key, unit_um, tile_um, tile_px, stride_um)
        grids.append(grid)
        n_dropped += dropped
    # candidates (section, grid position), scanned in a seeded order under a budget: the first max_tiles tissue
    # tiles of that order are a uniform draw among all tissue tiles, whatever the read chunks
    which = np.concatenate([np.full(len(g.centres), i) for i, g in enumerate(grids)]).astype(np.int64)
    where = np.concatenate([np.arange(len(g.centres)) for g in grids]).astype(np.int64)
    order = np.arange(len(which)) if max_tiles is None else np.random.default_rng(seed).permutation(len(which))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    found: list[np.ndarray] = []  # candidates kept, per read
    kept: list[np.ndarray] = []  # their tiles (copies: the rest of a read is freed)
    from tqdm.auto import tqdm

    with tqdm(total=len(order), desc="tissue tiles", unit="tile", disable=not settings.progress_bar) as bar:
        for start in range(0, len(order), CANDIDATES_PER_READ):
            chunk = order[start:start + CANDIDATES_PER_READ]
            for i, g in enumerate(grids):
                sel = chunk[which[chunk] == i]
                if len(sel):
                    tiles, _ = _cut(g.level.data, g.centres[where[sel]], g.lin, tile_px, 255, 256, bar)
                    mask = tissue_mask(tiles.transpose(0, 2, 3, 1), mpp=tile_um / tile_px)
                    tissue = mask.mean(axis=(1, 2)) >= min_tissue
                    found.append(sel[tissue])
                    kept.append(tiles[tissue])
            if max_tiles is not None and sum(map(len, found)) >= max_tiles:
                break
    if not found or not sum(map(len, found)):
        raise ValueError(f"no {tile_um:g} µm tile with at least {min_tissue:.0%} tissue in sections {list(sections)} "
                         f"({n_dropped} tiles dropped for touching excluded spots); lower `min_tissue` or check "
                         "`mpp`.")
    cand, tiles = np.concatenate(found), np.concatenate(kept)
    if max_tiles is not None:  # the first max_tiles of the seeded order
        first = np.argsort(rank[cand], kind="stable")[:max_tiles]
        cand, tiles = cand[first], tiles[first]
    by_position = np.argsort(cand, kind="stable")  # by section, then grid position
    source = np.asarray([str(grids[which[c]].name) for c in cand[by_position]], dtype=object)
    counts = {str(k): int(v) for k, v in zip(*np.unique(source.astype(str), return_counts=True), strict=True)}
    info(f"    {len(cand)} tissue tiles ({counts})", time=began)
    params = {"library_ids": None if library_ids is None else list(library_ids), "tile_um": tile_um,
              "tile_px": tile_px, "stride_um": stride_um, "min_tissue": min_tissue, "max_tiles": max_tiles,
              "seed": seed, "n_excluded_spots": int(exclude.sum())}  # recorded once every argument is validated
    return HistologyTiles(tiles=tiles[by_position], source=source, mpp=tile_um / tile_px, tile_um=float(tile_um),
                          params=params)
