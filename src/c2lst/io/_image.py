"""H&E images on disk -> lazy ``(c, y, x)`` uint8 dask arrays -> spatialdata image elements."""
from __future__ import annotations

import re
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import dask.array as da
import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from spatialdata.transformations import BaseTransformation
    from xarray import DataArray, DataTree

T = TypeVar("T")
CHUNK_PX = 1024  # spatial chunk side of image elements
PYRAMID_ABOVE_PX = 4096  # build a multiscale pyramid when the long side exceeds this
PYRAMID_SMALLEST_PX = 1024  # halve until the long side is at most this
TIFF_SUFFIXES = {".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff"}


def check_pixels(height: int, width: int, *, what: str) -> None:
    """Refuse to decode an image above ``c2lst.settings.max_image_pixels`` (the decompression-bomb guard)."""
    if int(height) * int(width) > (_budget() or np.inf):
        _too_large(f"{what} has {width} x {height} = {int(height) * int(width):,} pixels", int(height) * int(width))


def _budget() -> int | None:
    from .._settings import settings

    return settings.max_image_pixels


def _too_large(what: str, n_pixels: int | None) -> None:
    raise ValueError(f"{what}, above c2lst.settings.max_image_pixels ({_budget():,}), the guard against "
                     "decompression bombs. If you trust the file, raise it: `c2lst.settings.max_image_pixels = "
                     f"{n_pixels or 'N'}`.")


@contextmanager
def open_pil(path: Path) -> Iterator[Any]:
    """``PIL.Image.open`` (header only) under c2lst's pixel budget; unreadable files give a ``ValueError``."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = _budget()  # PIL warns above it and refuses above twice it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # check_pixels below says it better
            try:
                im = Image.open(path)
            except Image.DecompressionBombError as e:  # above twice the budget: PIL refuses before we can look
                found = re.search(r"\((\d+) pixels\)", str(e))
                n = int(found.group(1)) if found else None
                _too_large(f"image {path.name} has {n:,} pixels" if n else f"image {path.name} is too large", n)
            except (OSError, SyntaxError) as e:  # PIL.UnidentifiedImageError is an OSError
                raise ValueError(f"cannot read image {path.name} ({e}): not a readable image file. Check the file "
                                 "or convert it to an RGB JPEG, PNG or TIFF.") from None
        with im:
            check_pixels(im.height, im.width, what=f"image {path.name}")
            yield im
    finally:
        Image.MAX_IMAGE_PIXELS = old


def decode_pil(im: Any, path: Path) -> np.ndarray:
    """Decode an opened PIL image to an RGB ``(y, x, 3)`` array; a truncated or corrupt file is a ``ValueError``."""
    try:
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"image {path.name} is truncated or corrupt ({e}); copy or export the file again.") from None


def readable(read: Callable[[], T], name: str) -> T:
    """Call ``read()``; an error of the image libraries (PIL, tifffile) becomes a ``ValueError`` naming the file."""
    try:
        return read()
    except MemoryError:
        raise
    except Exception as e:
        if type(e) is ValueError:  # c2lst's own messages name the file and the fix already
            raise
        raise ValueError(f"cannot read image {name} ({type(e).__name__}: {e}); check the file or convert it to an "
                         "RGB JPEG, PNG or TIFF.") from None


def _check_jpeg_complete(path: Path) -> None:
    """Refuse a JPEG without its end-of-image marker ``FFD9`` (a file cut short), before any decoding."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
    if b"\xff\xd9" not in tail:
        raise ValueError(f"image {path.name} is a truncated JPEG (no end-of-image marker): the file was cut short. "
                         "Copy or download it again.")


def rgb_hwc(arr: Any, *, what: str) -> Any:
    """Validate an ``(y, x, 3|4)`` array (numpy or dask) as 8-bit RGB and drop an alpha channel."""
    if arr.ndim == 2:
        raise ValueError(f"{what} is a single-channel (grayscale) image of shape {arr.shape}; c2lst needs an RGB "
                         "H&E image: convert it to 8-bit RGB first.")
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"{what} has shape {arr.shape}; expected (height, width, 3) RGB. Convert it to 8-bit RGB "
                         "(channels last) first.")
    if arr.dtype != np.uint8:
        raise ValueError(f"{what} has dtype {arr.dtype}; c2lst needs 8-bit RGB (uint8). Rescale it to 0..255 and "
                         "cast to uint8 first.")
    return arr[..., :3]


PIL_TO_RGB = ("RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV")  # PIL modes converted to RGB; other non-RGB modes refused


def _pil_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of a JPEG/PNG from its header, refusing non-RGB modes (nothing is decoded)."""
    with open_pil(path) as im:
        mode, (width, height), fmt = im.mode, im.size, im.format
    if fmt == "JPEG":
        _check_jpeg_complete(path)
    if mode != "RGB" and mode not in PIL_TO_RGB:
        raise ValueError(f"image {path.name} has PIL mode {mode!r} (not RGB); c2lst needs an RGB H&E image: "
                         "convert it to 8-bit RGB first.")
    return height, width


def _read_pil(path: Path) -> np.ndarray:
    with open_pil(path) as im:
        return decode_pil(im, path)


class _DecodedPyramid:
    """A JPEG/PNG decoded on first access (once, thread-safe), with its 2x-halved levels, then kept in memory."""

    def __init__(self, path: Path, n_levels: int) -> None:
        self.path, self.n_levels = path, n_levels
        self._lock = threading.Lock()
        self._levels: list[np.ndarray] | None = None

    def level(self, k: int) -> np.ndarray:
        with self._lock:
            if self._levels is None:
                levels = [_read_pil(self.path)]
                for _ in range(self.n_levels - 1):
                    levels.append(_halve(levels[-1]))
                self._levels = levels
        return self._levels[k]


class _LevelArray:
    """Array-like ``(y, x, 3)`` view of one level of a :class:`_DecodedPyramid`, for ``dask.array.from_array``."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, pyramid: _DecodedPyramid, k: int, shape: tuple[int, int, int]) -> None:
        self.pyramid, self.k, self.shape = pyramid, k, shape

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.pyramid.level(self.k)[key]


def _tiff_level0(path: Path) -> da.Array:
    """Full-resolution level of a (possibly tiled, pyramidal) TIFF as a lazy ``(y, x, c)`` dask array."""
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    z = zarr.open(store, mode="r")
    if isinstance(z, zarr.Group):
        z = z[sorted(z.array_keys())[0]]
    arr = da.from_zarr(z)
    with tifffile.TiffFile(path) as tif:
        axes = tif.series[0].axes
    if axes.endswith("SYX") or axes == "CYX":  # planar RGB
        arr = arr.transpose(*range(arr.ndim - 3), arr.ndim - 2, arr.ndim - 1, arr.ndim - 3)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    return arr


def _halve(hwc: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded) of a ``(y, x, 3)`` uint8 array, trimming an odd last row/column (as dask coarsen)."""
    h, w = hwc.shape[0] // 2, hwc.shape[1] // 2
    out = np.empty((h, w, hwc.shape[2]), dtype=np.uint8)
    for r in range(0, h, CHUNK_PX):  # row blocks keep the uint16 temporaries small
        block = hwc[2 * r : 2 * min(r + CHUNK_PX, h), : 2 * w].astype(np.uint16)
        summed = block[0::2, 0::2] + block[1::2, 0::2] + block[0::2, 1::2] + block[1::2, 1::2]
        out[r : r + len(summed)] = (summed + 2) // 4
    return out


def _as_dask(hwc: np.ndarray | _LevelArray) -> da.Array:
    # name=False: no hashing of the whole image
    meta = np.empty((0, 0, 0), dtype=np.uint8)
    return da.from_array(hwc, chunks=(CHUNK_PX, CHUNK_PX, 3), name=False, meta=meta).transpose(2, 0, 1)


def read_rgb(path: str | Path) -> list[da.Array]:
    """Read an RGB image file as lazy ``(3, y, x)`` uint8 dask arrays: level 0 and, for a decoded image, its pyramid.

    TIFF/SVS files are read lazily through ``tifffile``'s zarr store (one level; a pyramid, if needed, is
    derived lazily by :func:`image_element`). JPEG/PNG must be decoded whole; when large, their 2x pyramid
    is computed right away in memory (cheap next to decoding) so that reading a coarse level costs nothing.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} does not exist; pass the path of the H&E image.")
    suffix = "".join(path.suffixes[-2:]).lower() if path.name.lower().endswith((".ome.tif", ".ome.tiff")) else path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        hwc = rgb_hwc(readable(lambda: _tiff_level0(path), path.name), what=f"image {path.name}")
        return [hwc.transpose(2, 0, 1).rechunk((3, CHUNK_PX, CHUNK_PX))]
    shape = _pil_size(path)
    shapes = [shape]
    for _ in pyramid_factors(shape) or []:
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    pyramid = _DecodedPyramid(path, len(shapes))
    return [_as_dask(_LevelArray(pyramid, k, (h, w, 3))) for k, (h, w) in enumerate(shapes)]


def in_memory_levels(hwc: np.ndarray) -> list[da.Array]:
    """Level 0 of an in-memory ``(y, x, 3)`` image and, when it needs a pyramid, its halved levels, as dask arrays."""
    levels = [hwc]
    for _ in pyramid_factors(hwc.shape[:2]) or []:
        levels.append(_halve(levels[-1]))
    return [_as_dask(lv) for lv in levels]


def pyramid_factors(shape: tuple[int, ...]) -> list[int] | None:
    """Scale factors ``[2, 2, ...]`` of a pyramid for an image of ``shape`` (``None`` when small enough)."""
    long_side = max(shape[-2:])
    if long_side <= PYRAMID_ABOVE_PX:
        return None
    factors = []
    while long_side > PYRAMID_SMALLEST_PX:
        factors.append(2)
        long_side = -(-long_side // 2)
    return factors


def pyramid_levels(image: object) -> list[object]:
    """Levels (``xarray.DataArray``, dims ``c, y, x``) of a single- or multiscale image element, finest first."""
    from xarray import DataArray

    if isinstance(image, DataArray):
        return [image]
    return [image[name].ds["image"] for name in sorted(image.keys(), key=lambda s: int(s.replace("scale", "")))]


def overview(image: object, *, max_side: int) -> tuple[np.ndarray, float]:
    """Return a ``(h, w, 3)`` uint8 copy of an image element at most ``max_side`` px on its long side, and its scale.

    Read from the coarsest pyramid level that is still at least ``max_side`` px (so a large slide is never
    decoded whole at level 0 when a pyramid exists), then reduced with a box filter. The scale is the
    overview's width over the level-0 width.
    """
    levels = pyramid_levels(image)
    w0 = levels[0].sizes["x"]
    chosen = levels[0]
    for level in levels[1:]:
        if max(level.sizes["y"], level.sizes["x"]) >= max_side:
            chosen = level
    small, factor = shrink(np.asarray(chosen.transpose("y", "x", "c").data[..., :3]), max_side=max_side)
    return small, factor * chosen.sizes["x"] / w0


def shrink(hwc: np.ndarray, *, max_side: int) -> tuple[np.ndarray, float]:
    """Reduce a ``(h, w, 3)`` uint8 image to at most ``max_side`` px on its long side (box filter).

    Returns the image and its scale (new width over old width; 1 when it was small enough).
    """
    from PIL import Image

    long_side = max(hwc.shape[:2])
    if long_side > max_side:
        size = (max(1, round(hwc.shape[1] * max_side / long_side)), max(1, round(hwc.shape[0] * max_side / long_side)))
        small = np.asarray(Image.fromarray(np.ascontiguousarray(hwc)).resize(size, Image.Resampling.BOX))
        return np.ascontiguousarray(small, dtype=np.uint8), size[0] / hwc.shape[1]
    return np.ascontiguousarray(hwc, dtype=np.uint8), 1.0


def image_element(levels: list[da.Array], *, transformation: BaseTransformation | None = None) -> DataArray | DataTree:
    """``Image2DModel`` element in the ``"global"`` coordinate system (a pyramid for large images).

    ``levels`` holds level 0 and optionally precomputed 2x-halved levels; missing levels of a large image
    are derived lazily by spatialdata.
    """
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    factors = pyramid_factors(levels[0].shape[1:])
    element = Image2DModel.parse(
        levels[0],
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        transformations={"global": transformation if transformation is not None else Identity()},
        scale_factors=factors,
        chunks=(3, CHUNK_PX, CHUNK_PX),
    )
    if factors is not None and len(levels) == len(factors) + 1:
        for name, level in zip(list(element)[1:], levels[1:], strict=True):
            lazy = element[name]["image"]
            if lazy.shape != level.shape:
                raise RuntimeError(f"pyramid level {name} has shape {level.shape}, expected {lazy.shape}")
            element[name]["image"] = lazy.copy(data=level)
    return element
