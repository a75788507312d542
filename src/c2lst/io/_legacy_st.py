"""Reader for legacy Spatial Transcriptomics (ST) sections: counts + spot table + H&E image."""
from __future__ import annotations

import re
import warnings
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._logging import info
from ._build import build_sdata, check_counts, check_library_id, median_nn_spacing, spatial_uns
from ._image import read_rgb

if TYPE_CHECKING:
    from spatialdata import SpatialData

MAX_UNMATCHED = 0.10  # refuse to join counts and spots when more than this fraction of either side is unmatched
_POSITION = re.compile(r"^\s*(-?\d+(?:\.0+)?)x(-?\d+(?:\.0+)?)\s*$")
SPOT_COLUMNS = ("x", "y", "pixel_x", "pixel_y")


def _sep(path: Path) -> str:
    """Tab or comma, from the first line of a (possibly gzipped) text table."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as fh:
        first = fh.readline()
    return "\t" if "\t" in first else ","


def _read_table(path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` of a (gzipped) tab/comma table; an empty, corrupt or non-gzip file is a clear ``ValueError``."""
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path.name} is empty (0 bytes): copy or download the file again.")
    try:
        return pd.read_csv(path, sep=_sep(path), **kwargs)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        gz = " gzip-compressed" if path.suffix == ".gz" else ""
        raise ValueError(f"cannot read {what} {path.name} ({type(e).__name__}: {e}): expected a{gz} tab- or "
                         "comma-separated text table. Check the file (a .gz name must hold gzip data; an empty or cut "
                         "short file must be copied again).") from None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".tsv", ".csv", ".txt"):
        name = name.removesuffix(suffix)
    return name


def _read_counts(path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """Read the counts table (spots x genes) and the integer ``(x, y)`` array position of each row."""
    if not path.is_file():
        raise ValueError(f"counts file {str(path)!r} does not exist; pass the spots x genes counts table.")
    df = _read_table(path, "counts file", index_col=0)
    if df.shape[0] == 0 or df.shape[1] == 0:
        raise ValueError(f"counts file {path.name} has shape {df.shape}; expected spots as rows and genes as columns.")
    bad = [c for c, t in df.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if bad:
        raise ValueError(f"counts file {path.name} has non-numeric values in columns {bad[:5]}; every column "
                         "except the first (row names) must hold raw integer UMI counts.")
    positions = [_POSITION.match(str(name)) for name in df.index]
    unparsed = [str(name) for name, m in zip(df.index, positions, strict=True) if m is None]
    if unparsed:
        raise ValueError(f"counts rows must be named by array position 'XxY' (e.g. '10x21'); got {unparsed[:5]}. "
                         "Transpose the table if genes are rows, or rename the rows.")
    xy = np.array([[int(float(m.group(1))), int(float(m.group(2)))] for m in positions], dtype=np.int64)
    if len({tuple(p) for p in xy}) != len(xy):
        raise ValueError(f"counts file {path.name} has duplicate array positions in its row names; keep one row per spot.")
    return df, xy


def _read_spots(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise ValueError(f"spot file {str(path)!r} does not exist; pass the spot table with columns {list(SPOT_COLUMNS)}.")
    spots = _read_table(path, "spot file")
    missing = [c for c in SPOT_COLUMNS if c not in spots.columns]
    if missing:
        raise ValueError(f"spot file {path.name} lacks columns {missing} (has {list(spots.columns)}); it needs x, y "
                         "(array position, as in the count row names 'XxY') and pixel_x, pixel_y (spot centre in "
                         "full-resolution image pixels: column, row).")
    values = spots[list(SPOT_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    if values.isna().any().any():
        raise ValueError(f"spot file {path.name} has missing or non-numeric values in {list(SPOT_COLUMNS)}; fix or drop "
                         "those rows.")
    if not np.array_equal(values[["x", "y"]], np.round(values[["x", "y"]])):
        raise ValueError(f"spot file {path.name}: columns x, y must be integer array positions (the count row names "
                         "'XxY'); use the unrefined positions, not new_x/new_y.")
    spots = values.astype({"x": np.int64, "y": np.int64})
    if spots.duplicated(["x", "y"]).any():
        raise ValueError(f"spot file {path.name} lists some array positions (x, y) twice; keep one row per spot.")
    return spots


def _join(counts_xy: np.ndarray, spots: pd.DataFrame, counts_path: Path, spots_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Match count rows to spot rows on ``(x, y)``; return both index arrays, in count-row order."""
    spot_row = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(spots["x"], spots["y"], strict=True))}
    counts_keys = [(int(x), int(y)) for x, y in counts_xy]
    keep = [i for i, k in enumerate(counts_keys) if k in spot_row]
    no_spot = [f"{x}x{y}" for x, y in counts_keys if (x, y) not in spot_row]
    matched = {counts_keys[i] for i in keep}
    no_counts = [f"{x}x{y}" for x, y in spot_row if (x, y) not in matched]
    n_counts, n_spots = len(counts_keys), len(spot_row)
    if len(no_spot) > MAX_UNMATCHED * n_counts or len(no_counts) > MAX_UNMATCHED * n_spots:
        raise ValueError(
            f"counts ({counts_path.name}) and spots ({spots_path.name}) do not belong together: only {len(keep)} of "
            f"{n_counts} count rows and of {n_spots} spots share an array position (x, y) (more than "
            f"{MAX_UNMATCHED:.0%} unmatched). Pass the counts and spot table of the same section."
        )
    if no_spot or no_counts:
        warnings.warn(
            f"dropped {len(no_spot)} count rows without a spot position ({no_spot}) and {len(no_counts)} spots without "
            f"counts ({no_counts}); {len(keep)} spots kept.",
            UserWarning,
            stacklevel=3,
        )
    return np.asarray(keep, dtype=np.int64), np.asarray([spot_row[counts_keys[i]] for i in keep], dtype=np.int64)


def read_legacy_st(
    counts: str | Path,
    spots: str | Path,
    image: str | Path,
    *,
    spot_diameter_um: float = 100.0,
    pitch_um: float = 200.0,
    library_id: str | None = None,
) -> SpatialData:
    """Read a legacy Spatial Transcriptomics section (counts, spot table, H&E image) as ``SpatialData``.

    Counts are joined to spot positions on the array position ``(x, y)``; a few unmatched rows on either side
    are dropped with a warning. Microns per pixel are inferred from the median nearest-neighbour spacing of
    the spot centres, which lie ``pitch_um`` apart on the array.

    Parameters
    ----------
    counts
        Tab- (or comma-) separated table, optionally gzipped: spots x genes raw integer UMI counts, first
        column the row names ``"{x}x{y}"`` (array position).
    spots
        Spot table with columns ``x``, ``y`` (array position) and ``pixel_x``, ``pixel_y`` (spot centre in
        full-resolution image pixels: column, row), e.g. the ST spot detector's ``*_selection.tsv``.
    image
        The H&E image (JPEG, PNG or TIFF; 8-bit RGB) the pixel positions refer to.
    spot_diameter_um
        Physical spot diameter (100 µm for legacy ST).
    pitch_um
        Physical centre-to-centre distance of neighbouring spots (200 µm for legacy ST).
    library_id
        Section name, used in element names and ``obs["library_id"]``; default: the counts file name
        without extensions (``"C2"`` for ``C2.tsv.gz``).

    Returns
    -------
    ``SpatialData`` with

    - ``images["<library_id>_image"]``: the H&E image, ``(c, y, x)`` uint8, dask-backed (a pyramid when the
      long side exceeds 4096 px);
    - ``shapes["<library_id>_spots"]``: spot circles in full-resolution pixels (``radius`` column);
    - ``tables["table"]``: raw counts in ``X`` (float32 CSR), ``obs_names`` ``"{x}x{y}"``,
      ``obs["array_col"]``, ``obs["array_row"]``, ``obs["region"]``, ``obs["spot_id"]``,
      ``obs["library_id"]``; ``uns["c2lst"]["spatial"]`` with ``mpp``, ``mpp_source``,
      ``spot_diameter_um``, ``pitch_um``; scanpy's ``uns["spatial"][library_id]`` (a 2,000 px copy of the image and
      its scalefactors, so ``sc.pl.spatial`` and ``sq.pl.spatial_scatter`` work with their defaults).

    Raises
    ------
    ValueError
        For missing files or columns, non-numeric/NaN/negative/non-integer counts, counts and spots of
        different sections (more than 10% unmatched), spots outside the image or a non-RGB image.
    """
    start = info("reading legacy ST section")
    counts, spots, image = Path(counts), Path(spots), Path(image)
    if not (spot_diameter_um > 0 and pitch_um > 0):
        raise ValueError(f"spot_diameter_um={spot_diameter_um} and pitch_um={pitch_um} must be positive (legacy ST: 100 and 200).")
    library_id = check_library_id(library_id if library_id is not None else _stem(counts))
    df, counts_xy = _read_counts(counts)
    spot_table = _read_spots(spots)
    rows, spot_rows = _join(counts_xy, spot_table, counts, spots)
    x = check_counts(df.to_numpy()[rows], what=f"counts in {counts.name}")

    spacing = median_nn_spacing(spot_table[["pixel_x", "pixel_y"]].to_numpy(np.float64))
    mpp = pitch_um / spacing
    source = f"median nearest-neighbour spacing {spacing:.1f} px = {pitch_um:g} µm pitch"
    matched = spot_table.iloc[spot_rows]
    sdata = build_sdata(
        library_id=library_id,
        counts=x,
        obs_names=pd.Index([f"{a}x{b}" for a, b in counts_xy[rows]]),
        var=pd.DataFrame(index=df.columns),
        array_col=matched["x"].to_numpy(),
        array_row=matched["y"].to_numpy(),
        xy=matched[["pixel_x", "pixel_y"]].to_numpy(np.float64),
        radius=spot_diameter_um / 2 / mpp,
        image=read_rgb(image),
        image_transformation=None,
        spatial=spatial_uns(mpp, source, spot_diameter_um, pitch_um),
        outside_hint="pixel_x/pixel_y must be full-resolution pixel positions (column, row) in this image: check that "
        "the spot table belongs to this image and was not made for a downscaled copy.",
    )
    info(f"read {library_id}: {len(rows)} spots x {x.shape[1]} genes, {mpp:.4f} µm/px ({source})", time=start)
    return sdata
