"""Reader for an H&E slide without spots (a new slide to map genes on with :func:`c2lst.tl.predict_slide`)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .._logging import info
from ._build import check_library_id
from ._image import image_element, read_rgb

if TYPE_CHECKING:
    from spatialdata import SpatialData

SLIDE_ATTRS = "c2lst"  # SpatialData.attrs key: {"images": {image_key: {"mpp", "mpp_source", "path"}}}


def recorded_mpp(sdata: SpatialData, image_key: str) -> float | None:
    """µm per pixel that :func:`read_slide` recorded for ``image_key``, else ``None``."""
    record = sdata.attrs.get(SLIDE_ATTRS, {}).get("images", {}).get(image_key, {})
    return float(record["mpp"]) if "mpp" in record else None


def read_slide(image: str | Path, *, mpp: float | None = None, library_id: str | None = None,
               force_mpp: bool = False) -> SpatialData:
    """Read an H&E image with no spots as ``SpatialData``, recording its microns per pixel.

    The image stays lazy (dask; a pyramid when the long side exceeds 4096 px), as in
    :func:`read_legacy_st`. :func:`c2lst.tl.predict_slide` reads the recorded resolution, so a fitted
    predictor maps expression onto the slide without further arguments.

    Parameters
    ----------
    image
        The H&E image file (JPEG, PNG, TIFF or SVS; 8-bit RGB).
    mpp
        Microns per full-resolution pixel. Default: the file's metadata (OpenSlide/Aperio MPP, TIFF or PNG
        resolution within 0.05-50 µm/px); a ``ValueError`` asks for it when the file records none, and refuses
        a given value more than 25% away from the file's own (see ``force_mpp``).
    library_id
        Slide name, used in the element name; default: the file name without extensions.
    force_mpp
        Use the given ``mpp`` even where the file's metadata records another resolution.

    Returns
    -------
    ``SpatialData`` with

    - ``images["<library_id>_image"]``: the H&E image, ``(c, y, x)`` uint8, dask-backed, identity to ``"global"``;
    - ``attrs["c2lst"]["images"]["<library_id>_image"]``: ``mpp``, ``mpp_source`` (``"given"`` or
      ``"file metadata"``) and ``path`` (saved with the store by ``SpatialData.write``).
    """
    from spatialdata import SpatialData

    from ._histology import _resolve_mpp

    path = Path(image)
    start = info(f"reading H&E slide {path.name}")
    levels = read_rgb(path)  # checks that the file exists and is 8-bit RGB
    ((mpp, source),) = _resolve_mpp([(path, path.name)], mpp, force_mpp=force_mpp)  # given (> 0), else the file's metadata
    name = library_id if library_id is not None else path.name.split(".")[0]
    image_key = f"{check_library_id(name)}_image"
    sdata = SpatialData(images={image_key: image_element(levels)},
                        attrs={SLIDE_ATTRS: {"images": {image_key: {"mpp": mpp, "mpp_source": source,
                                                                    "path": str(path)}}}})
    h, w = levels[0].shape[1:]
    info(f"    added .images[{image_key!r}] ({w} x {h} px, {mpp:.4g} µm/px, {source})", time=start)
    return sdata
