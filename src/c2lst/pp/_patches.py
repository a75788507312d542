"""Cut one H&E patch per spot at a fixed physical size, lazily, honouring spatialdata transformations."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage

from .._docs import doc_params
from .._logging import info
from .._settings import settings
from .._utils import (
    check_key,
    element_affine,
    resolve_image,
    resolve_shapes,
    resolve_table,
    returned,
    spot_mpp,
    table_region_attrs,
    writable,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    import dask.array as da
    from anndata import AnnData
    from spatialdata import SpatialData


@dataclass(frozen=True)
class _Level:
    """One pyramid level: its ``(c, y, x)`` dask array and its downscale factors relative to level 0."""

    data: da.Array
    fy: float
    fx: float


def _derived(level: da.Array, base: da.Array) -> bool:
    """Whether ``level`` is computed from ``base`` in the task graph (a lazily derived pyramid level)."""
    return base.name in getattr(level.dask, "layers", {})


def _levels(image: Any, image_key: str) -> list[_Level]:
    """Level 0 and the stored (not lazily derived) pyramid levels of an image element."""
    from xarray import DataTree

    arrays = [next(iter(image[k].values())).data for k in image] if isinstance(image, DataTree) else [image.data]
    c, h0, w0 = arrays[0].shape
    if c != 3 or arrays[0].dtype != np.uint8:
        raise ValueError(f"image {image_key!r} has {c} channels of dtype {arrays[0].dtype}; patches need an 8-bit RGB "
                         "image (3 channels, uint8). Convert the image (e.g. rescale to 0..255, drop alpha) first.")
    # a level derived lazily from level 0 costs more to read than level 0 itself
    stored = [arrays[0]] + [a for a in arrays[1:] if not _derived(a, arrays[0])]
    return [_Level(a, h0 / a.shape[1], w0 / a.shape[2]) for a in stored]


def _spot_rows(sdata: SpatialData, table: AnnData, shapes_key: str) -> np.ndarray:
    """Row in the shapes element of each table row (table order), matched on the instance key."""
    region_key, instance_key, _ = table_region_attrs(table)
    regions = table.obs[region_key].astype(str).to_numpy()
    if (regions != shapes_key).any():
        other = sorted(set(regions) - {shapes_key})
        raise ValueError(f"the table also annotates regions {other}, not only the shapes {shapes_key!r}; one patch per "
                         "table row needs one region: subset the table to that region first.")
    rows = sdata.shapes[shapes_key].index.get_indexer(table.obs[instance_key].to_numpy())
    if (rows < 0).any():
        missing = list(table.obs_names[rows < 0][:10])
        raise ValueError(f"{int((rows < 0).sum())} table rows have no circle in {shapes_key!r} (e.g. {missing}); "
                         f"obs[{instance_key!r}] must match the shapes index.")
    return rows


def _shapes_to_image(sdata: SpatialData, shapes_key: str, image_key: str) -> np.ndarray:
    """3x3 affine from the circles' intrinsic ``(x, y)`` to level-0 image pixels ``(x, y)``."""
    return element_affine(sdata, sdata.shapes[shapes_key], sdata.images[image_key],
                          what=f"shapes {shapes_key!r} and image {image_key!r}")


def _validate(patch_um: float, patch_px: int, pad_value: int, batch_size: int, mpp: float | None) -> None:
    if not (isinstance(patch_px, int | np.integer) and 8 <= patch_px <= 1024):
        raise ValueError(f"patch_px={patch_px!r} must be an integer in [8, 1024] (64 is the default).")
    if not patch_um > 0:
        raise ValueError(f"patch_um={patch_um!r} must be a positive physical size in microns (100 µm = one ST spot).")
    if not (isinstance(pad_value, int | np.integer) and 0 <= pad_value <= 255):
        raise ValueError(f"pad_value={pad_value!r} must be an integer in [0, 255] (255 = white background).")
    if not (isinstance(batch_size, int | np.integer) and batch_size >= 1):
        raise ValueError(f"batch_size={batch_size!r} must be a positive integer.")
    if mpp is not None and not mpp > 0:
        raise ValueError(f"mpp={mpp!r} must be positive (microns per unit of the spot coordinates).")


MAX_BATCH_BYTES = 512 * 2**20  # image chunks held in memory at once


def _chunk_spans(lo: np.ndarray, hi: np.ndarray, edges: tuple[np.ndarray, np.ndarray],
                 shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """First and last chunk index ``(row, col)`` touched by each window ``[lo, hi)`` clipped to the image."""
    first = np.empty_like(lo)
    last = np.empty_like(hi)
    for axis in range(2):
        a = np.clip(lo[:, axis], 0, shape[axis] - 1)
        b = np.clip(hi[:, axis], 1, shape[axis]) - 1
        first[:, axis] = np.searchsorted(edges[axis], a, side="right") - 1
        last[:, axis] = np.searchsorted(edges[axis], b, side="right") - 1
    return first, last


def _batches(order: np.ndarray, first: np.ndarray, last: np.ndarray, batch_size: int,
             max_blocks: int) -> Iterator[tuple[list[int], list[tuple[int, int]]]]:
    """Yield consecutive spots (in ``order``) with the chunks their windows need.

    At most ``batch_size`` spots and, unless a single spot needs more, ``max_blocks`` chunks per batch.
    """
    batch: list[int] = []
    needed: set[tuple[int, int]] = set()
    for s in order:
        own = {(i, j) for i in range(first[s, 0], last[s, 0] + 1) for j in range(first[s, 1], last[s, 1] + 1)}
        if batch and (len(batch) == batch_size or len(needed | own) > max_blocks):
            yield batch, sorted(needed)
            batch, needed = [], set()
        batch.append(int(s))
        needed |= own
    if batch:
        yield batch, sorted(needed)


def _window(blocks: dict[tuple[int, int], np.ndarray], edges: tuple[np.ndarray, np.ndarray], lo: np.ndarray,
            hi: np.ndarray, first: np.ndarray, last: np.ndarray, pad_value: int) -> np.ndarray:
    """Assemble the ``(3, rows, cols)`` window ``[lo, hi)`` from image chunks, ``pad_value`` outside the image."""
    buf = np.full((3, hi[0] - lo[0], hi[1] - lo[1]), pad_value, dtype=np.uint8)
    for i in range(first[0], last[0] + 1):
        for j in range(first[1], last[1] + 1):
            block = blocks[(i, j)]
            r0, c0 = edges[0][i], edges[1][j]
            ra, rb = max(lo[0], r0), min(hi[0], r0 + block.shape[1])
            ca, cb = max(lo[1], c0), min(hi[1], c0 + block.shape[2])
            if ra < rb and ca < cb:
                buf[:, ra - lo[0] : rb - lo[0], ca - lo[1] : cb - lo[1]] = block[:, ra - r0 : rb - r0, ca - c0 : cb - c0]
    return buf


@dataclass(frozen=True)
class _Resampler:
    """Anti-aliased resampling of image windows to ``(3, patch_px, patch_px)`` uint8 patches.

    ``lin`` maps output ``(row, col)`` steps to window ``(row, col)`` steps. Downsampling by ``r`` along an
    axis first averages ``floor(r)`` x ``floor(r)`` pixel blocks (as PIL's reducing gap), then blurs with a
    Gaussian of sigma ``(r / floor(r) - 1) / 2`` before bilinear sampling.
    """

    lin: np.ndarray
    patch_px: int
    pad_value: int

    @property
    def block(self) -> tuple[int, int]:
        """Integer pre-reduction factor per axis."""
        return tuple(max(1, math.floor(float(np.hypot(*self.lin[a])) + 1e-9)) for a in range(2))  # type: ignore[return-value]

    @property
    def sigma(self) -> tuple[float, float]:
        """Gaussian sigma per axis, in reduced pixels."""
        return tuple(max(0.0, (float(np.hypot(*self.lin[a])) / self.block[a] - 1) / 2) for a in range(2))  # type: ignore[return-value]

    @property
    def margin(self) -> int:
        """Window pixels needed beyond the sampled area on each side."""
        k = max(self.block)
        return k * (math.ceil(3 * max(self.sigma)) + 2) + k

    def __call__(self, window: np.ndarray, offset: np.ndarray) -> np.ndarray:
        """Resample ``window`` where output pixel ``(i, j)`` lies at ``lin @ (i, j) + offset`` (window index coords)."""
        kr, kc = self.block
        if (kr, kc) == (1, 1):
            img = window.astype(np.float32)
        else:
            h, w = window.shape[1] // kr, window.shape[2] // kc
            img = np.zeros((3, h, w), dtype=np.float32)
            for a in range(kr):  # strided sums: much faster than a reshaped mean on small windows
                for b in range(kc):
                    img += window[:, a : h * kr : kr, b : w * kc : kc]
            img /= kr * kc
        k = np.array([kr, kc], dtype=np.float64)
        lin = self.lin / k[:, None]
        offset = (offset + 0.5) / k - 0.5
        if max(self.sigma) > 0:
            img = ndimage.gaussian_filter(img, sigma=(0.0, *self.sigma), mode="nearest")
        if lin[0, 1] == 0 and lin[1, 0] == 0:  # axis-aligned: scipy's fast separable path
            matrix = np.array([1.0, lin[0, 0], lin[1, 1]])
        else:
            matrix = np.eye(3)
            matrix[1:, 1:] = lin
        out = ndimage.affine_transform(img, matrix, offset=np.r_[0.0, offset], output_shape=(3, self.patch_px, self.patch_px),
                                       order=1, mode="constant", cval=float(self.pad_value))
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _cut(arr: da.Array, centres: np.ndarray, lin: np.ndarray, patch_px: int, pad_value: int,
         batch_size: int, progress: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Cut the patches and the fraction of each inside the image from a ``(3, y, x)`` dask array.

    ``centres`` are spot centres in the array's index coordinates ``(row, col)``; ``lin`` maps one output
    pixel step ``(di, dj)`` to array steps ``(drow, dcol)``. ``progress``: a tqdm bar advanced per patch cut.
    """
    import dask

    _, h, w = arr.shape
    half = 0.5 - patch_px / 2
    resample = _Resampler(lin, patch_px, pad_value)
    corners = np.array([[i, j] for i in (0, patch_px - 1) for j in (0, patch_px - 1)], dtype=np.float64) + half
    span = corners @ lin.T  # (4, 2) offsets (row, col) of the corner pixels from the centre
    lo = np.floor(centres + span.min(0)).astype(np.int64) - resample.margin  # (n, 2) window origin (row, col)
    hi = np.ceil(centres + span.max(0)).astype(np.int64) + resample.margin + 1
    grid = np.stack(np.meshgrid(np.arange(patch_px), np.arange(patch_px), indexing="ij"), -1).reshape(-1, 2) + half
    offsets = grid @ lin.T  # (P*P, 2) offsets (row, col) of every output pixel

    if len(arr.chunks[0]) > 1:
        arr = arr.rechunk({0: -1})
    edges = (np.r_[0, np.cumsum(arr.chunks[1])], np.r_[0, np.cumsum(arr.chunks[2])])
    first, last = _chunk_spans(lo, hi, edges, (h, w))
    order = np.lexsort((first[:, 1], first[:, 0]))  # spatially coherent batches
    n = len(centres)
    patches = np.empty((n, 3, patch_px, patch_px), dtype=np.uint8)
    inside = np.empty(n, dtype=np.float64)
    max_blocks = max(1, MAX_BATCH_BYTES // (3 * max(arr.chunks[1]) * max(arr.chunks[2])))
    for batch, needed in _batches(order, first, last, batch_size, max_blocks):
        blocks = dict(zip(needed, dask.compute(*[arr.blocks[:, i, j] for i, j in needed]), strict=True))
        for s in batch:
            window = _window(blocks, edges, lo[s], hi[s], first[s], last[s], pad_value)
            pos = centres[s] + offsets
            inside[s] = np.mean((pos[:, 0] >= -0.5) & (pos[:, 0] <= h - 0.5) & (pos[:, 1] >= -0.5) & (pos[:, 1] <= w - 0.5))
            patches[s] = resample(window, centres[s] + lin @ np.array([half, half]) - lo[s])
        if progress is not None:
            progress.update(len(batch))
    return patches, inside


@doc_params
def extract_patches(
    sdata: SpatialData,
    *,
    image_key: str | None = None,
    shapes_key: str | None = None,
    table_key: str | None = None,
    patch_um: float = 100.0,
    patch_px: int = 64,
    mpp: float | None = None,
    pad_value: int = 255,
    key_added: str = "c2lst_patch",
    overwrite: bool = False,
    copy: bool = False,
    batch_size: int = 256,
) -> SpatialData | None:
    """Cut one RGB patch of ``patch_um`` microns, resampled to ``patch_px`` pixels, centred on each spot.

    Patches follow the table rows (matched to the circles through the table's instance key). The circle
    centres are mapped into the image through the spatialdata transformations of both elements, the
    coarsest stored pyramid level that is still at least as fine as ``patch_um / patch_px`` µm/px is read
    (levels that spatialdata derives lazily from level 0 are skipped: they cost more than level 0), and
    only the image chunks under each spot's window are loaded, each once per batch of ``batch_size`` spots
    (batches are spatially coherent and hold at most ~512 MB of chunks), then anti-aliased (block mean
    by the integer part of the downsampling factor, Gaussian for the rest) and resampled bilinearly with
    sub-pixel centring. Parts of a patch outside the image are filled with ``pad_value``.

    Parameters
    ----------
    {sdata}
        It holds an RGB uint8 image, spot shapes and a table annotating them.
    image_key, shapes_key
        Elements to use; default: the only one (the shapes: the region the table annotates).
    {table_key}
    patch_um
        Physical side of a patch in microns (100 µm = one legacy ST spot).
    patch_px
        Side of a patch in pixels (8 to 1024).
    mpp
        Microns per unit of the circles' coordinates; default ``table.uns["c2lst"]["spatial"]["mpp"]``.
    pad_value
        Fill value (0..255) for the parts of edge patches outside the image.
    {key_added_overwrite_copy}
    batch_size
        Spots whose image chunks are read in one ``dask.compute``.

    Returns
    -------
    ``None`` (the copy with ``copy=True``); writes to the table:

    - ``obsm[key_added]``: uint8 ``(n_spots, 3, patch_px, patch_px)``;
    - ``obs[f"{key_added}_padded"]``: bool, the patch extends beyond the image;
    - ``obs[f"{key_added}_inside"]``: float, fraction of the patch inside the image;
    - ``uns[key_added]["params"]``: the arguments, the image level read and its µm/px.

    Raises
    ------
    ValueError
        For bad sizes, a non-RGB/non-uint8 image, unresolvable elements, a table row without a circle, or
        spots whose centre lies outside the image (named).
    """
    _validate(patch_um, patch_px, pad_value, batch_size, mpp)
    start = info(f"extracting {patch_um:g} µm patches at {patch_px} px")
    sd, table, table_key = resolve_table(writable(sdata, copy), table_key)
    if sd is None:
        raise ValueError("extract_patches needs a SpatialData object with an image, spot shapes and a table; read the "
                         "data with c2lst.io (an AnnData has no image element).")
    check_key(table.obsm, key_added, where="table.obsm", overwrite=overwrite)
    image_key = resolve_image(sd, image_key)
    shapes_key = resolve_shapes(sd, table, shapes_key)
    unit_um = float(mpp) if mpp is not None else spot_mpp(table)
    levels = _levels(sd.images[image_key], image_key)
    rows = _spot_rows(sd, table, shapes_key)

    centres = sd.shapes[shapes_key].geometry.iloc[rows].centroid
    xy = np.c_[centres.x.to_numpy(), centres.y.to_numpy()]
    affine = _shapes_to_image(sd, shapes_key, image_key)
    lin0 = affine[:2, :2]
    xy_img = xy @ lin0.T + affine[:2, 2]  # level-0 continuous pixel coordinates (x, y)
    h0, w0 = levels[0].data.shape[1:]
    outside = ~((xy_img[:, 0] >= 0) & (xy_img[:, 0] <= w0) & (xy_img[:, 1] >= 0) & (xy_img[:, 1] <= h0))
    if outside.any():
        names = list(table.obs_names[outside][:10])
        raise ValueError(f"{int(outside.sum())} spot centres lie outside the {w0}x{h0} px image {image_key!r} (e.g. "
                         f"{names}); check the spot coordinates and the transformations, or drop those spots.")

    # µm per level-0 image pixel along x and y: lengths of the image pixel axes in circle units
    px_um0 = np.linalg.norm(np.linalg.inv(lin0), axis=0) * unit_um
    target_um = patch_um / patch_px
    fine = [k for k, lv in enumerate(levels) if max(px_um0[0] * lv.fx, px_um0[1] * lv.fy) <= target_um * (1 + 1e-6)]
    level_idx = fine[-1] if fine else 0
    level = levels[level_idx]

    # output (col j, row i) -> level index coordinates (col, row): centre + lin_xy @ (j + half, i + half)
    to_level = np.diag([1 / level.fx, 1 / level.fy])
    lin_xy = to_level @ lin0 * (target_um / unit_um)  # maps (dj, di) -> (dcol, drow)
    centres_rc = (xy_img @ to_level.T - 0.5)[:, ::-1]  # spot centres in level index coordinates (row, col)
    from tqdm.auto import tqdm

    with tqdm(total=len(rows), desc="patches", unit="spot",
              disable=not settings.progress_bar or len(rows) <= batch_size) as progress:
        patches, inside = _cut(level.data, centres_rc, lin_xy[::-1, ::-1], patch_px, pad_value, batch_size, progress)
    n = len(rows)

    table.obsm[key_added] = patches
    table.obs[f"{key_added}_padded"] = pd.Series(inside < 1, index=table.obs_names)
    table.obs[f"{key_added}_inside"] = pd.Series(inside, index=table.obs_names)
    table.uns[key_added] = {
        "params": {
            "image_key": image_key, "shapes_key": shapes_key, "patch_um": float(patch_um), "patch_px": int(patch_px),
            "mpp": unit_um, "pad_value": int(pad_value), "level": int(level_idx),
            "level_um_per_px": float(max(px_um0[0] * level.fx, px_um0[1] * level.fy)),
        }
    }
    info(f"added .obsm[{key_added!r}], .obs['{key_added}_padded'], .obs['{key_added}_inside'] "
         f"({n} patches, {int((inside < 1).sum())} padded)", time=start)
    return returned(sd, None, copy)
