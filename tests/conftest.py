"""Shared fixtures: one torch thread, the shared data folder, a tiny synthetic legacy-ST section."""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# Figures are written to files, never shown: without this, matplotlib picks QtAgg from pytest-xvfb's DISPLAY
# and a test fails with "Invalid DISPLAY variable" whenever that Xvfb is not answering (seen on a loaded machine).
os.environ.setdefault("MPLBACKEND", "Agg")

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
HER2ST_SPOTS = {"C2": 187, "C3": 180, "C4": 184, "C5": 181, "C6": 178}

TINY_SIZE = 600  # image side (px)
TINY_GRID = 5  # spots per side
TINY_SPACING = 100.0  # px between spot centres: 200 µm pitch -> 2 µm/px
TINY_GENES = 30


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Keep torch to one thread (the test machine's cores are shared); torch is imported only if installed."""
    try:
        import torch
    except ImportError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_progress_bar():
    """No tqdm bars in this test (restored after it)."""
    import c2lst

    before = c2lst.settings.progress_bar
    c2lst.settings.progress_bar = False
    yield
    c2lst.settings.progress_bar = before


def shared_path(*parts: str) -> Path:
    """A path under ``../shared/data``; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@pytest.fixture
def shared_data() -> Path:
    """The ``../shared/data`` folder (the test is skipped when it is absent)."""
    return shared_path()


def _her2st_files(section: str) -> tuple[Path, Path, Path]:
    folder = shared_path("her2st", section)
    return folder / f"{section}.tsv.gz", folder / f"{section}_selection.tsv", next(folder.glob("*.jpg"))


@pytest.fixture
def her2st_files():
    """``her2st_files("C2") -> (counts, spots, image)`` paths of a shared her2st section (skips when absent)."""
    return _her2st_files


@functools.lru_cache(maxsize=4)
def _texture(size: int, seed: int) -> np.ndarray:
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(size, size, 3))
    img = sum(ndimage.gaussian_filter(noise, sigma=(s, s, 0)) * s for s in (2, 6, 18))
    img = (img - img.min()) / (img.max() - img.min())
    return (40 + 200 * img).astype(np.uint8)


def tiny_image(size: int = TINY_SIZE, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture ``(size, size, 3)`` uint8: structure at every scale, no flat regions."""
    return _texture(size, seed).copy()


def write_tiny_section(folder: Path, *, seed: int = 0, image_format: str = "png") -> tuple[Path, Path, Path]:
    """Write a synthetic legacy-ST section (5x5 spots, 30 genes, 600x600 px image); return its three paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ax, ay = np.meshgrid(np.arange(TINY_GRID) + 3, np.arange(TINY_GRID) + 2, indexing="ij")
    ax, ay = ax.ravel(), ay.ravel()
    px = 100.0 + (ax - 3) * TINY_SPACING + rng.uniform(-2, 2, ax.size)
    py = 100.0 + (ay - 2) * TINY_SPACING + rng.uniform(-2, 2, ay.size)
    spots = pd.DataFrame({"x": ax, "y": ay, "new_x": ax + 0.0, "new_y": ay + 0.0, "pixel_x": px, "pixel_y": py,
                          "selected": 1})
    counts = pd.DataFrame(rng.poisson(rng.gamma(1.0, 4.0, size=(ax.size, TINY_GENES))),
                          index=[f"{a}x{b}" for a, b in zip(ax, ay, strict=True)],
                          columns=[f"gene{i}" for i in range(TINY_GENES)])
    counts_path, spots_path = folder / "tiny.tsv.gz", folder / "tiny_selection.tsv"
    with gzip.open(counts_path, "wt") as fh:
        counts.to_csv(fh, sep="\t")
    spots.to_csv(spots_path, sep="\t", index=False)
    from PIL import Image

    image_path = folder / f"tiny_HE.{image_format}"
    Image.fromarray(tiny_image(seed=seed)).save(image_path)
    return counts_path, spots_path, image_path


@pytest.fixture
def tiny_writer():
    """``tiny_writer(folder, seed=0, image_format="png")`` writes a synthetic section and returns its paths."""
    return write_tiny_section


@pytest.fixture
def tiny_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Paths ``(counts, spots, image)`` of a synthetic legacy-ST section written to ``tmp_path``."""
    return write_tiny_section(tmp_path / "tiny")


@pytest.fixture
def tiny_sdata(tiny_files):
    """The synthetic section read with ``c2lst.io.read_legacy_st``: 25 spots, 30 genes, 2 µm/px, library ``"tiny"``."""
    import c2lst

    return c2lst.io.read_legacy_st(*tiny_files)


@pytest.fixture
def tiny_patched(tiny_sdata):
    """:func:`tiny_sdata` with 100 µm spot patches at 32 px in ``.obsm["c2lst_patch"]``."""
    import c2lst

    c2lst.pp.extract_patches(tiny_sdata, patch_um=100, patch_px=32)
    return tiny_sdata


@pytest.fixture(scope="module")
def tiny_central(tmp_path_factory):
    """A tiny central model pretrained for 8 steps on random tiles, saved under a temporary folder (one per module)."""
    import c2lst

    tiles = np.random.default_rng(0).integers(60, 230, size=(48, 3, 40, 40), dtype=np.uint8)
    return c2lst.tl.pretrain(tiles, config="tiny", steps=8, batch_size=8, seed=0,
                             out=tmp_path_factory.mktemp("central") / "model")
