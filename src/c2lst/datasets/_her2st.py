"""Local copies of the her2st HER2-positive breast cancer sections (legacy ST)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..io import read_legacy_st

if TYPE_CHECKING:
    from spatialdata import SpatialData

ENV_VAR = "C2LST_DATA_DIR"
SOURCE = "GitHub almaan/her2st or Zenodo record 3957257 (Andersson et al. 2021, Nat Commun 12:6012)"


def her2st_root(root: str | Path | None) -> Path:
    """``root``, else ``$C2LST_DATA_DIR``, else ``../shared/data/her2st`` beside the working directory or the repo."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    repo = Path(__file__).resolve().parents[3]
    for base in (Path.cwd(), repo):
        candidate = base / ".." / "shared" / "data" / "her2st"
        if candidate.is_dir():
            return candidate.resolve()
    raise ValueError(f"her2st data not found: pass `root=` or set ${ENV_VAR} to a folder holding <section>/ subfolders "
                     f"(e.g. C2/ with C2.tsv.gz, C2_selection.tsv and the H&E .jpg). Public source: {SOURCE}.")


def her2st(section: str, root: str | Path | None = None) -> SpatialData:
    """Read one her2st section (e.g. ``"C2"``) from a local copy with :func:`c2lst.io.read_legacy_st`.

    Parameters
    ----------
    section
        Section name, the name of its folder (``"C2"`` ... ``"C6"`` for patient C).
    root
        Folder holding ``<section>/<section>.tsv.gz``, ``<section>/<section>_selection.tsv`` and one
        ``<section>/*.jpg``; default ``$C2LST_DATA_DIR``, else ``../shared/data/her2st`` relative to the
        working directory or the repository. Nothing is downloaded.

    Returns
    -------
    ``SpatialData`` as returned by :func:`c2lst.io.read_legacy_st`, ``library_id`` = ``section``.

    Raises
    ------
    ValueError
        When the data folder or one of the section's files is missing (says where to put them).
    """
    folder = her2st_root(root) / section
    counts, spots = folder / f"{section}.tsv.gz", folder / f"{section}_selection.tsv"
    images = sorted(folder.glob("*.jpg"))
    if not (counts.is_file() and spots.is_file() and len(images) == 1):
        raise ValueError(f"section {section!r} incomplete in {folder}: expected {counts.name}, {spots.name} and exactly "
                         f"one .jpg H&E image (found {[p.name for p in images]}). Public source: {SOURCE}.")
    return read_legacy_st(counts, spots, images[0], library_id=section)
