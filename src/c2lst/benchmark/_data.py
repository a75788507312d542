"""Benchmark inputs: per-section arrays (patches, raw counts, array positions, tissue tiles), cached as ``.npz``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import _logging as logg
from ..io._histology import TISSUE_DETECTOR

CONDITIONS = ("handcrafted", "real", "augment", "c2l", "c2l_augment", "c2l_oracle", "local_only", "mixup", "spatial_mixup",
              "c2l_tissue", "local_only_tissue", "refined_tissue", "real_central", "real_adapted", "real_adapted_only")
# conditions whose extra rows are tiles of a diffusion generator (c2l_augment reuses its fold's c2l tiles)
DIFFUSION = ("c2l", "c2l_augment", "c2l_oracle", "local_only", "c2l_tissue", "local_only_tissue", "refined_tissue")
# real pairs read through a diffusion model's features: (feature model, handcrafted features appended)
FEATURE_CONDITIONS = {"real_central": ("central", True), "real_adapted": ("adapted", True),
                      "real_adapted_only": ("adapted", False)}
TISSUE_CONDITIONS = ("c2l_tissue", "local_only_tissue", "refined_tissue")  # conditions adapted on the training sections' tissue tiles
TISSUE_TILES = 2000  # tissue tiles per fold of those conditions (a seeded draw)
SECTIONS = ("C2", "C3", "C4", "C5", "C6")

PATCH_UM, PATCH_PX = 100.0, 64
# version of a cached section's arrays (a newer one is read again); its tissue tiles are used only when they come
# from this version of the tissue detector (io._histology.TISSUE_DETECTOR)
CACHE_FORMAT = 2


@dataclass(frozen=True)
class Section:
    """One section's arrays.

    ``patches`` (n, 3, 64, 64) uint8, raw ``counts`` (n, genes), ``library`` (total counts per spot over all
    measured genes), ``genes``, array positions ``xy`` and ``tissue``: every 100 µm tissue tile of the section's
    image at 64 px (:func:`c2lst.pp.tissue_tiles`; ``None`` when not loaded).
    """

    name: str
    patches: np.ndarray
    counts: np.ndarray
    library: np.ndarray
    genes: np.ndarray
    xy: np.ndarray
    tissue: np.ndarray | None = None

    def subset_genes(self, genes: np.ndarray) -> Section:
        """Return the same section restricted to ``genes`` (in that order); library sizes keep all genes."""
        idx = {g: i for i, g in enumerate(self.genes)}
        return Section(self.name, self.patches, self.counts[:, [idx[g] for g in genes]], self.library,
                       np.asarray(genes), self.xy, self.tissue)


def _read(name: str, root: Path) -> Section:
    import scipy.sparse as sp

    from .. import io, pp

    folder = root / name
    images = sorted(folder.glob("*.jpg"))
    if not images or not (folder / f"{name}.tsv.gz").exists():
        raise ValueError(f"section {name!r} not found under {root}: expected {name}.tsv.gz, {name}_selection.tsv and "
                         "one .jpg; pass `root=` (the her2st folder).")
    sdata = io.read_legacy_st(folder / f"{name}.tsv.gz", folder / f"{name}_selection.tsv", images[0])
    pp.extract_patches(sdata, patch_um=PATCH_UM, patch_px=PATCH_PX)
    # the section's own image, nothing excluded: a fold hands tl.adapt the tiles of its training sections only
    tissue = pp.tissue_tiles(sdata, tile_um=PATCH_UM, tile_px=PATCH_PX).tiles
    table = sdata.tables["table"]
    x = table.X.toarray() if sp.issparse(table.X) else np.asarray(table.X)
    return Section(name, np.asarray(table.obsm["c2lst_patch"]), x.astype(np.float32), x.sum(axis=1, dtype=np.float64),
                   np.asarray(table.var_names).astype(str), table.obs[["array_col", "array_row"]].to_numpy(dtype=np.float64),
                   tissue)


def _cached(path: Path, name: str, tissue: bool) -> Section | None:
    """Return the section cached at ``path``; ``None`` (logged) when it is unreadable or lacks the tiles needed.

    Tissue tiles of another version of the tissue detector are left out (the rest of the cache still holds).
    """
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            version = int(z["format"]) if "format" in z else 1
            detector = int(z["tissue_detector"]) if "tissue_detector" in z else 1
            if version > CACHE_FORMAT:
                logg.info(f"    {path} is a cache of a newer format ({version}): reading section {name} again")
                return None
            tiles = z["tissue"] if "tissue" in z and detector == TISSUE_DETECTOR else None
            if tissue and tiles is None:
                logg.info(f"    {path} holds no tissue tiles of tissue detector {TISSUE_DETECTOR}: reading section "
                          f"{name} again")
                return None
            return Section(name, z["patches"], z["counts"], z["library"], z["genes"].astype(str), z["xy"], tiles)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:  # e.g. cut short by a crash
        logg.info(f"    {path} is unreadable ({type(err).__name__}): reading section {name} again")
        return None


def _write_cache(path: Path, sec: Section) -> None:
    """Write ``sec`` to ``path`` atomically (a temporary sibling, then renamed)."""
    from ..files import atomic_file

    arrays = {"patches": sec.patches, "counts": sec.counts, "library": sec.library, "genes": sec.genes, "xy": sec.xy,
              "format": np.int64(CACHE_FORMAT), "tissue_detector": np.int64(TISSUE_DETECTOR)}
    if sec.tissue is not None:
        arrays["tissue"] = sec.tissue
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:  # a file object: numpy appends no ".npz"
        np.savez_compressed(fh, **arrays)


def load_sections(names: tuple[str, ...], *, root: str | Path | None = None, cache_dir: str | Path | None = None,
                  tissue: bool = False) -> list[Section]:
    """Read her2st sections (100 µm patches at 64 px, tissue tiles), using ``cache_dir/<name>.npz`` when present.

    Genes are restricted to those measured in every section, in a common order. ``root`` defaults to
    ``$C2LST_DATA_DIR``, else ``../shared/data/her2st`` beside the working directory or the repository (as
    :func:`c2lst.datasets.her2st`). ``tissue``: the sections' tissue tiles are needed; a cache written before
    they were cached, or with tiles of another version of the tissue detector, or unreadable, is read again from
    ``root`` (and rewritten, atomically).
    """
    from ..datasets._her2st import her2st_root

    out = []
    for name in names:
        cached = Path(cache_dir) / f"{name}.npz" if cache_dir is not None else None
        sec = _cached(cached, name, tissue) if cached is not None and cached.exists() else None
        if sec is None:
            sec = _read(name, her2st_root(root))
            if cached is not None:
                _write_cache(cached, sec)
        out.append(sec)
    common = sorted(set.intersection(*(set(s.genes) for s in out)))
    return [s.subset_genes(np.asarray(common)) for s in out]
