"""Histology-only images (no genes) -> tissue tiles of a fixed physical size, for central pretraining."""
from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import info
from ._image import TIFF_SUFFIXES, check_pixels, decode_pil, open_pil, readable, rgb_hwc

SUFFIXES = {".tif", ".tiff", ".png", ".jpg", ".jpeg", ".svs"}
SATURATION_MIN = 0.08  # HSV saturation of stained tissue; white/grey background lies below
BRIGHTNESS_MIN = 0.1  # near-black pixels (scanner borders, pen) are not tissue
# Flat glass is not tissue, even where the stain tints it: on the her2st sections (HER2+ breast, 1.56 µm/px) the grey
# level of background tiles varies by 1-2 (of 255) within a tile, that of spot patches by 25 or more; every spot patch
# keeps at least half of its pixels above TEXTURE_MIN in a TEXTURE_UM window, while pink glass keeps almost none
# (the same tiles for thresholds from 2 to 6).
TEXTURE_MIN = 2.5  # standard deviation of the grey level (0-255) around a tissue pixel
TEXTURE_UM = 14.0  # side of that window in microns
TISSUE_DETECTOR = 2  # version of tissue_mask (1: colour only, to 2026-12-06; 2: colour and texture)
SHORTFALL = 0.1  # an image at least 90% of a tile wide still gives one tile (rescaled by at most 1/0.9)
_APERIO_MPP = re.compile(r"\|\s*MPP\s*=\s*([0-9.]+)")  # "...|MPP = 0.4990|..." in Aperio SVS descriptions
MPP_RANGE = (0.05, 50.0)  # plausible microscope resolutions; 72 dpi "resolutions" of plain images fall outside
MPP_TOLERANCE = 0.25  # a given mpp further than this (relative) from the file's metadata is refused (force_mpp=True)
MAX_UPSCALE = 4.0  # refuse tiles cut from fewer than tile_px / MAX_UPSCALE source pixels (a wrong mpp, most likely)


@dataclass(frozen=True)
class HistologyTiles:
    """Tissue tiles cut from histology-only images at a fixed physical resolution.

    Attributes
    ----------
    tiles
        uint8 ``(n, 3, tile_px, tile_px)`` RGB tiles, or (``lazy=True``) a :class:`TileStream` reading them
        from disk on demand.
    source
        ``(n,)`` file of each tile (relative to the folder it was found in).
    mpp
        Microns per pixel of the tiles (``tile_um / tile_px``).
    tile_um
        Physical side of a tile in microns.
    source_mpp
        Microns per pixel of each source file and how it was known.
    params
        The arguments of :func:`~c2lst.io.read_histology`.
    """

    tiles: np.ndarray | TileStream
    source: np.ndarray
    mpp: float
    tile_um: float
    source_mpp: dict[str, tuple[float, str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def tile_px(self) -> int:
        """Side of a tile in pixels."""
        return int(self.tiles.shape[-1])

    def __len__(self) -> int:
        return int(self.tiles.shape[0])

    def __repr__(self) -> str:
        return (f"HistologyTiles({len(self)} tiles of {self.tile_um:g} µm at {self.tile_px} px ({self.mpp:.4g} µm/px) "
                f"from {len(self.source_mpp)} files)")


def _collect(paths: str | Path | Sequence[str | Path]) -> list[tuple[Path, str]]:
    """``(file, display name)`` for every image file given directly or found (recursively) in a folder."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise ValueError("`paths` is empty; pass image files or a folder of histology images.")
    found: list[tuple[Path, str]] = []
    for item in map(Path, items):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            found += [(p, p.relative_to(item).as_posix()) for p in files]
        elif item.is_file():
            if item.suffix.lower() not in SUFFIXES:
                raise ValueError(f"{item.name}: unsupported image type; use one of {sorted(SUFFIXES)}.")
            found.append((item, item.name))
        else:
            raise ValueError(f"{str(item)!r} does not exist; pass existing image files or folders.")
    if not found:
        raise ValueError(f"no image files ({sorted(SUFFIXES)}) found in {[str(p) for p in items]}.")
    return found


def _plausible(mpp: float | None) -> float | None:
    return mpp if mpp is not None and MPP_RANGE[0] <= mpp <= MPP_RANGE[1] else None


def _tiff_mpp(path: Path) -> float | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        aperio = _APERIO_MPP.search(page.description or "")
        if aperio:
            return _plausible(float(aperio.group(1)))
        tags = page.tags
        if "XResolution" not in tags or "ResolutionUnit" not in tags:
            return None
        num, den = tags["XResolution"].value
        unit = {2: 25_400.0, 3: 10_000.0}.get(int(tags["ResolutionUnit"].value))
        return _plausible(unit * den / num) if unit and num else None


def _openslide() -> Any:
    """Return the ``openslide`` module when installed (extra ``c2lst[wsi]``), else ``None`` (tifffile is used)."""
    try:
        import openslide
    except ImportError:
        return None
    return openslide


def _metadata_mpp(path: Path) -> float | None:
    """Microns per pixel recorded in the file (OpenSlide/Aperio/TIFF/PNG metadata), when plausible."""
    suffix = path.suffix.lower()
    if suffix == ".svs":
        openslide = _openslide()
        if openslide is not None:
            with openslide.OpenSlide(str(path)) as slide:
                value = slide.properties.get(openslide.PROPERTY_NAME_MPP_X)
            return _plausible(float(value)) if value else None
    if suffix in TIFF_SUFFIXES:
        return _tiff_mpp(path)
    with open_pil(path) as im:
        dpi = im.info.get("dpi")
    return _plausible(25_400.0 / float(dpi[0])) if dpi and float(dpi[0]) > 0 else None


def _as_mpp(value: Any, name: str) -> float:
    """Return a user-given µm/px as a positive float; anything else is a ``ValueError`` naming the file."""
    try:
        mpp = float(value)
        ok = not isinstance(value, bool) and math.isfinite(mpp) and mpp > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"mpp={value!r} for {name} must be positive (a number of microns per pixel); pass e.g. "
                         "`mpp=0.5` (20x scan) or `mpp=0.25` (40x).")
    return mpp


def _file_mpp(path: Path, name: str) -> float | None:
    """:func:`_metadata_mpp`, with unreadable files as a ``ValueError`` naming the file."""
    return readable(lambda: _metadata_mpp(path), name)


def _resolve_mpp(files: list[tuple[Path, str]], mpp: float | Mapping[str, float] | None, *,
                 force_mpp: bool = False) -> list[tuple[float, str]]:
    """Microns per pixel of each file and where it came from; a ``ValueError`` lists the unknown ones.

    A given value that differs from the file's own metadata by more than ``MPP_TOLERANCE`` is refused unless
    ``force_mpp``.
    """
    out: list[tuple[float, str] | None] = []
    for path, name in files:
        given = None
        if isinstance(mpp, Mapping):
            given = next((mpp[k] for k in (name, str(path), path.name, path.stem) if k in mpp), None)
        elif mpp is not None:
            given = mpp
        found = _file_mpp(path, name)
        if given is not None:
            value = _as_mpp(given, name)
            if found is not None and abs(value / found - 1) > MPP_TOLERANCE and not force_mpp:
                raise ValueError(f"mpp={value:g} for {name} disagrees with the file's metadata ({found:.4g} µm/px) by "
                                 f"more than {MPP_TOLERANCE:.0%}; leave `mpp` unset to use the metadata, or pass "
                                 "`force_mpp=True` (CLI: --force-mpp) if the metadata is wrong.")
            out.append((value, "given"))
        else:
            out.append((found, "file metadata") if found is not None else None)
    unknown = [name for (_, name), m in zip(files, out, strict=True) if m is None]
    if unknown:
        raise ValueError(f"microns per pixel unknown for {len(unknown)} files (e.g. {unknown[:5]}): their metadata "
                         "records no resolution. Pass `mpp=` (one float, or a dict from file name to µm/px).")
    return out  # type: ignore[return-value]


def _check_upscale(name: str, mpp: float, source: str, tile_um: float, tile_px: int) -> None:
    """Refuse a resolution that would cut each tile from a handful of source pixels blown up to ``tile_px``."""
    side = tile_um / mpp
    if tile_px / side > MAX_UPSCALE:
        raise ValueError(f"{name}: at {mpp:g} µm/px ({source}) a {tile_um:g} µm tile spans {side:.1f} source pixels, "
                         f"which would be upscaled {tile_px / side:.1f}x to {tile_px} px (at most {MAX_UPSCALE:g}x). "
                         "Check `mpp` (microns per pixel: about 0.25 at 40x, 0.5 at 20x), or lower `tile_px` / raise "
                         "`tile_um`.")


def _read_rgb(path: Path, mpp: float, target_mpp: float) -> tuple[np.ndarray, float]:
    """RGB pixels ``(y, x, 3)`` of the coarsest pyramid level still at least as fine as ``target_mpp``."""
    suffix = path.suffix.lower()
    if suffix == ".svs":
        openslide = _openslide()
        if openslide is not None:
            with openslide.OpenSlide(str(path)) as slide:
                fine = [k for k, d in enumerate(slide.level_downsamples) if mpp * d <= target_mpp * (1 + 1e-6)]
                level = fine[-1] if fine else 0
                region = slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB")
                return np.asarray(region), mpp * float(slide.level_downsamples[level])
    if suffix in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            levels = tif.series[0].levels
            width0 = levels[0].shape[levels[0].axes.index("X")]
            best, best_mpp = levels[0], mpp
            for lv in levels[1:]:
                lv_mpp = mpp * width0 / lv.shape[lv.axes.index("X")]
                if lv_mpp <= target_mpp * (1 + 1e-6):
                    best, best_mpp = lv, lv_mpp
            check_pixels(best.shape[best.axes.index("Y")], best.shape[best.axes.index("X")], what=f"image {path.name}")
            arr = best.asarray()
            if best.axes.startswith("S"):
                arr = np.moveaxis(arr, 0, -1)
            return np.asarray(rgb_hwc(arr, what=f"image {path.name}")), best_mpp
    with open_pil(path) as im:  # RGB after conversion of RGBA/P/CMYK; grayscale is refused by rgb_hwc
        arr = decode_pil(im, path) if im.mode in ("RGB", "RGBA", "P", "CMYK") else np.asarray(im)
        return np.asarray(rgb_hwc(arr, what=f"image {path.name}")), mpp


def tissue_mask(rgb: np.ndarray, *, mpp: float) -> np.ndarray:
    """Stained, textured tissue in ``rgb`` (``(..., h, w, 3)`` uint8 at ``mpp`` µm per pixel).

    A pixel is tissue when its HSV saturation is at least ``SATURATION_MIN`` (white or grey glass lies below), it is
    not near-black (``BRIGHTNESS_MIN``: scanner borders, pen) and the grey level varies by at least ``TEXTURE_MIN``
    (standard deviation, of 255) in the window of about ``TEXTURE_UM`` around it (an odd number of pixels, at least
    3: wider than ``TEXTURE_UM`` above 4.7 µm/px; the threshold was set at 1.56 µm/px): glass is flat even where the
    stain tints it pink. Each image of a stack is filtered on its own (edges mirrored).
    """
    from scipy.ndimage import uniform_filter

    top, bottom = rgb.max(-1).astype(np.float32), rgb.min(-1).astype(np.float32)
    np.subtract(top, bottom, out=bottom)
    saturation = np.divide(bottom, top, out=np.zeros_like(top), where=top > 0)
    stained = (saturation >= SATURATION_MIN) & (top >= BRIGHTNESS_MIN * 255)
    del top, bottom, saturation
    grey = rgb @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)
    side = max(3, 2 * int(TEXTURE_UM / mpp // 2) + 1)  # odd, in pixels
    size = (1,) * (grey.ndim - 2) + (side, side)
    mean = uniform_filter(grey, size, mode="reflect")
    np.multiply(grey, grey, out=grey)
    square = uniform_filter(grey, size, mode="reflect")
    del grey
    np.multiply(mean, mean, out=mean)
    np.subtract(square, mean, out=square)  # the local variance
    return stained & (square >= TEXTURE_MIN**2)


def _tiles_of(rgb: np.ndarray, mpp: float, tile_um: float, tile_px: int, min_tissue: float) -> np.ndarray:
    """Non-overlapping, centred tissue tiles ``(k, 3, tile_px, tile_px)`` of one image."""
    from PIL import Image

    h, w = rgb.shape[:2]
    side = tile_um / mpp  # source pixels per tile
    nh, nw = math.floor(h / side + SHORTFALL), math.floor(w / side + SHORTFALL)
    if nh < 1 or nw < 1:
        return np.empty((0, 3, tile_px, tile_px), dtype=np.uint8)
    side = min(side, h / nh, w / nw)
    factor = tile_px / side
    hs, ws = max(nh * tile_px, round(h * factor)), max(nw * tile_px, round(w * factor))
    # PIL's bicubic resize widens its kernel when shrinking: anti-aliased
    small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((ws, hs), Image.Resampling.BICUBIC))
    tissue = tissue_mask(small, mpp=tile_um / tile_px)
    r0, c0 = (hs - nh * tile_px) // 2, (ws - nw * tile_px) // 2
    out = []
    for i in range(nh):
        for j in range(nw):
            rs, cs = slice(r0 + i * tile_px, r0 + (i + 1) * tile_px), slice(c0 + j * tile_px, c0 + (j + 1) * tile_px)
            if tissue[rs, cs].mean() >= min_tissue:
                out.append(small[rs, cs].transpose(2, 0, 1))
    return np.stack(out) if out else np.empty((0, 3, tile_px, tile_px), dtype=np.uint8)


def _remove_store(directory: str, owner: int) -> None:
    if os.getpid() == owner:  # not in forked data-loader workers, which share the store
        shutil.rmtree(directory, ignore_errors=True)


class TileStream:
    """Tiles kept on disk and read on demand: a map-style dataset of uint8 ``(3, px, px)`` tiles.

    ``torch``'s ``DataLoader`` reads it (``__getitems__`` serves a batch).

    :func:`read_histology` with ``lazy=True`` writes each image's tiles, as it cuts them, to a raw tile
    store in a temporary directory (``TMPDIR``; 12 KiB per 64 px tile), removed when the stream that
    created it is garbage collected or the process exits. Reading a tile is one 12 KiB read, so memory
    stays bounded by the batches in flight whatever the number of tiles, and data-loader workers share
    the store.

    Attributes
    ----------
    path
        The tile store (``n_stored`` tiles, C order).
    index
        ``(n,)`` position in the store of each tile of the stream.
    fingerprint
        sha256 of the tiles' shape and bytes, equal to that of the same tiles in memory (what resuming a
        pretraining run checks).
    """

    dtype = np.dtype(np.uint8)

    def __init__(self, path: str | Path, index: np.ndarray, *, tile_px: int, fingerprint: str) -> None:
        self.path, self.index = Path(path), np.asarray(index, dtype=np.int64).reshape(-1)
        self.tile_px, self.fingerprint = int(tile_px), fingerprint
        self._nbytes = 3 * self.tile_px * self.tile_px

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(n, 3, tile_px, tile_px)``."""
        return (len(self.index), 3, self.tile_px, self.tile_px)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int | np.integer | Sequence[int] | np.ndarray) -> np.ndarray:
        """One tile ``(3, tile_px, tile_px)``, or ``(k, 3, tile_px, tile_px)`` for a sequence of indices."""
        if not isinstance(i, int | np.integer):
            return np.stack(self.__getitems__(np.asarray(i, dtype=np.int64).reshape(-1))).reshape(-1, *self.shape[1:])
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[np.ndarray]:
        """Tiles of ``indices`` (what ``torch`` data loaders call for a batch)."""
        where = self.index[np.asarray(indices, dtype=np.int64)]
        out: list[np.ndarray] = [np.empty(0, np.uint8)] * len(where)
        with open(self.path, "rb", buffering=0) as fh:
            for j in np.argsort(where, kind="stable"):
                fh.seek(int(where[j]) * self._nbytes)
                buf = fh.read(self._nbytes)
                if len(buf) != self._nbytes:
                    raise ValueError(f"the tile store {self.path} is truncated; read the images again.")
                out[j] = np.frombuffer(buf, dtype=np.uint8).reshape(self.shape[1:]).copy()
        return out

    def __repr__(self) -> str:
        return f"TileStream({len(self)} tiles of {self.tile_px} px on disk, read on demand)"


def _write_store(tiles: Sequence[np.ndarray], fh: Any) -> int:
    for t in tiles:
        fh.write(np.ascontiguousarray(t).tobytes())
    return sum(len(t) for t in tiles)


def _stream(directory: str, store: Path, keep: np.ndarray, tile_px: int) -> TileStream:
    """Stream the stored tiles ``keep`` (owning ``directory``), fingerprinted as the same tiles in memory."""
    h = hashlib.sha256(str((len(keep), 3, tile_px, tile_px)).encode())
    reader = TileStream(store, keep, tile_px=tile_px, fingerprint="")
    for i in range(0, len(keep), 4096):
        h.update(np.stack(reader.__getitems__(range(i, min(i + 4096, len(keep))))).tobytes())
    stream = TileStream(store, keep, tile_px=tile_px, fingerprint=h.hexdigest())
    weakref.finalize(stream, _remove_store, directory, os.getpid())
    return stream


def read_histology(
    paths: str | Path | Sequence[str | Path],
    *,
    mpp: float | Mapping[str, float] | None = None,
    tile_um: float = 100.0,
    tile_px: int = 64,
    min_tissue: float = 0.5,
    max_tiles: int | None = None,
    seed: int = 0,
    lazy: bool = False,
    force_mpp: bool = False,
) -> HistologyTiles:
    """Cut histology-only images into tissue tiles of ``tile_um`` microns at ``tile_px`` pixels.

    Each image is resampled (anti-aliased) so that ``tile_um`` µm span ``tile_px`` px, cut into a centred
    grid of non-overlapping tiles (an image at least 90% of a tile wide still gives one, slightly
    rescaled), and tiles with less than ``min_tissue`` stained tissue are dropped. A tissue pixel has an HSV
    saturation of at least ``SATURATION_MIN`` (0.08), is not near-black and is textured: its grey level varies
    by at least ``TEXTURE_MIN`` (2.5 of 255, standard deviation) within about ``TEXTURE_UM`` (14 µm), so that
    glass is not tissue even where the stain tints it pink. For pyramidal TIFF/SVS files the coarsest level
    still at least as fine as the target resolution is read.

    Parameters
    ----------
    paths
        Image files (TIFF, PNG, JPEG, SVS) and/or folders searched recursively for them.
    mpp
        Microns per pixel of the images: one float, or a dict from file name (or relative path, path or
        stem) to float. Files not covered use their metadata (OpenSlide/Aperio MPP, TIFF or PNG resolution
        within 0.05-50 µm/px). A given value more than 25% away from the file's metadata is refused (see
        ``force_mpp``), and so is one at which a tile would be cut from fewer than ``tile_px / 4`` source pixels.
    tile_um
        Physical side of a tile in microns (100 µm = one legacy ST spot).
    tile_px
        Side of a tile in pixels (8 to 1024).
    min_tissue
        Minimum fraction of tissue pixels for a tile to be kept (0 to 1).
    max_tiles
        Keep at most this many tiles, drawn at random without replacement (in file order).
    seed
        Seed of that random draw.
    lazy
        Keep the tiles on disk, not in memory: ``tiles`` is a :class:`TileStream` (same tiles, read on
        demand; bounded memory for pretraining on many slides, see :func:`c2lst.tl.pretrain`). Images are
        still read one at a time here.
    force_mpp
        Use the given ``mpp`` even where the file's metadata records another resolution.

    Returns
    -------
    :class:`HistologyTiles` with ``tiles`` uint8 ``(n, 3, tile_px, tile_px)`` (a :class:`TileStream` when
    ``lazy``), ``source`` per tile, ``mpp`` (µm per tile pixel), ``tile_um``, ``source_mpp`` and ``params``.

    Raises
    ------
    ValueError
        For missing, unreadable or truncated files, unknown or implausible resolution (``mpp`` not a positive
        number, against the metadata, or upscaling tiles more than 4x), non-RGB images, images above
        ``c2lst.settings.max_image_pixels``, bad sizes, or when no tile passes the tissue filter.
    """
    if not tile_um > 0:
        raise ValueError(f"tile_um={tile_um!r} must be positive (microns).")
    if not (isinstance(tile_px, int | np.integer) and 8 <= tile_px <= 1024):
        raise ValueError(f"tile_px={tile_px!r} must be an integer in [8, 1024].")
    if not 0 <= min_tissue <= 1:
        raise ValueError(f"min_tissue={min_tissue!r} must be a fraction in [0, 1].")
    if max_tiles is not None and not (isinstance(max_tiles, int | np.integer) and max_tiles >= 1):
        raise ValueError(f"max_tiles={max_tiles!r} must be a positive integer or None.")
    start = info("tiling histology images")
    files = _collect(paths)
    mpps = _resolve_mpp(files, mpp, force_mpp=force_mpp)
    for (_, name), (file_mpp, how) in zip(files, mpps, strict=True):
        _check_upscale(name, file_mpp, how, tile_um, tile_px)
    target = tile_um / tile_px
    tiles, sources = [], []
    directory = tempfile.mkdtemp(prefix="c2lst-tiles-") if lazy else None
    store = None if directory is None else Path(directory) / "tiles.u8"
    try:
        with open(os.devnull if store is None else store, "wb") as fh:
            for (path, name), (file_mpp, _) in zip(files, mpps, strict=True):
                rgb, level_mpp = readable(lambda p=path, m=file_mpp: _read_rgb(p, m, target), name)
                t = _tiles_of(rgb, level_mpp, tile_um, tile_px, min_tissue)
                del rgb
                tiles.append(_write_store([t], fh) if lazy else t)
                sources += [name] * len(t)
        n_all = len(sources)
        source = np.asarray(sources, dtype=object)
        if n_all == 0:
            raise ValueError(f"no tile of {tile_um:g} µm with at least {min_tissue:.0%} tissue in {len(files)} files; "
                             "check `mpp` (images smaller than a tile give none) or lower `min_tissue`.")
        keep = np.arange(n_all)
        if max_tiles is not None and n_all > max_tiles:
            keep = np.sort(np.random.default_rng(seed).choice(n_all, size=max_tiles, replace=False))
        source = source[keep]
        if directory is not None:
            all_tiles = _stream(directory, store, keep, tile_px)
        else:
            all_tiles = np.concatenate(tiles)
            all_tiles = all_tiles[keep] if len(keep) < n_all else all_tiles
    except BaseException:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    params = {"tile_um": float(tile_um), "tile_px": int(tile_px), "min_tissue": float(min_tissue),
              "max_tiles": max_tiles, "seed": int(seed), "n_files": len(files), "n_tiles_before_max": n_all,
              "lazy": bool(lazy), "force_mpp": bool(force_mpp)}
    out = HistologyTiles(tiles=all_tiles, source=source, mpp=target, tile_um=float(tile_um),
                         source_mpp={name: m for (_, name), m in zip(files, mpps, strict=True)}, params=params)
    info(f"cut {out!r}", time=start)
    return out
