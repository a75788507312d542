"""pp.tissue_tiles and tl.adapt(tissue=...): unlabelled tiles of the lab's own images train the local stage."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import c2lst
from c2lst.core.models import LocalModel

pytestmark = pytest.mark.usefixtures("no_progress_bar")

GREEN = (0, 255, 0)


def _tiles(sdata, **kw) -> np.ndarray:
    """The tile array of pp.tissue_tiles (a HistologyTiles whose .source names each tile's section)."""
    res = c2lst.pp.tissue_tiles(sdata, **kw)
    assert isinstance(res, c2lst.io.HistologyTiles) and len(res.source) == len(res.tiles)
    assert res.tile_um == kw.get("tile_um", 100.0) and res.mpp == res.tile_um / res.tiles.shape[-1]
    return res.tiles


def _keys(tiles: np.ndarray) -> set[bytes]:
    return {t.tobytes() for t in tiles}


def _section(tiny_writer, folder, library_id: str, seed: int, paint: np.ndarray | None = None):
    """A tiny section (25 spots) read with its patches; ``paint``: spots whose circles are painted pure green."""
    from PIL import Image

    counts, spots, image = tiny_writer(folder, seed=seed)
    if paint is not None:
        import pandas as pd

        table = pd.read_csv(spots, sep="\t")
        rgb = np.asarray(Image.open(image)).copy()
        yy, xx = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
        for x, y in table[["pixel_x", "pixel_y"]].to_numpy()[paint]:
            rgb[(xx - x) ** 2 + (yy - y) ** 2 <= 25**2] = GREEN  # the 100 µm spot (about 49 px across)
        Image.fromarray(rgb).save(image)
    sdata = c2lst.io.read_legacy_st(counts, spots, image, library_id=library_id)
    c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=32)
    return sdata


@pytest.fixture
def two_sections(tiny_writer, tmp_path):
    """Sections A and B (different images) in one SpatialData, one table with obs['library_id']."""
    import spatialdata as sd

    a = _section(tiny_writer, tmp_path / "A", "A", 0)
    b = _section(tiny_writer, tmp_path / "B", "B", 1)
    uns = dict(a.tables["table"].uns["c2lst"])
    with warnings.catch_warnings():  # duplicate obs names, made unique below
        warnings.simplefilter("ignore", UserWarning)
        both = sd.concatenate([a, b], concatenate_tables=True)
    table = both.tables["table"]
    table.obs_names = [f"{lib}-{name}" for lib, name in zip(table.obs["library_id"], table.obs_names, strict=True)]
    table.uns["c2lst"] = uns
    assert table.obsm["c2lst_patch"].shape == (50, 3, 32, 32)
    return both


@pytest.fixture(scope="module")
def central():
    rng = np.random.default_rng(0)
    return c2lst.tl.pretrain(rng.integers(60, 230, size=(48, 3, 40, 40), dtype=np.uint8), config="tiny", steps=8,
                             batch_size=8, seed=0)


def test_tissue_tiles_grid_budget_and_seed(tiny_sdata, monkeypatch):
    from c2lst.pp import _tissue

    tiles = _tiles(tiny_sdata, tile_px=32)
    # 600 px at 2.03 µm/px: 1215 µm, 12 x 12 tiles of 100 µm, all tissue (the texture has no background)
    assert tiles.shape == (144, 3, 32, 32) and tiles.dtype == np.uint8
    assert _tiles(tiny_sdata, tile_px=32, stride_um=50).shape[0] == 23 * 23
    some = _tiles(tiny_sdata, tile_px=32, max_tiles=20, seed=1)
    assert len(some) == 20 and _keys(some) <= _keys(tiles)
    assert np.array_equal(some, _tiles(tiny_sdata, tile_px=32, max_tiles=20, seed=1))
    assert not np.array_equal(some, _tiles(tiny_sdata, tile_px=32, max_tiles=20, seed=2))
    monkeypatch.setattr(_tissue, "CANDIDATES_PER_READ", 7)  # the draw does not depend on how the image is read
    assert np.array_equal(some, _tiles(tiny_sdata, tile_px=32, max_tiles=20, seed=1))
    assert np.array_equal(tiles, _tiles(tiny_sdata, tile_px=32))


def test_white_background_is_not_tissue(tiny_writer, tmp_path):
    from PIL import Image

    counts, spots, image = tiny_writer(tmp_path / "white")
    rgb = np.asarray(Image.open(image)).copy()
    rgb[:, :300] = 255  # the left half is background
    Image.fromarray(rgb).save(image)
    sdata = c2lst.io.read_legacy_st(counts, spots, image)
    tiles = _tiles(sdata, tile_px=32)
    assert len(tiles) == 12 * 6  # the right half's 6 of 12 columns (300 px = 608 µm: the 7th column is half white)
    rgb[:] = 255
    Image.fromarray(rgb).save(image)
    with pytest.raises(ValueError, match="no 100 µm tile"):
        c2lst.pp.tissue_tiles(c2lst.io.read_legacy_st(counts, spots, image), tile_px=32)


def test_stain_tinted_glass_is_not_tissue(tiny_writer, tmp_path):
    """Flat glass tinted pink by eosin is saturated enough for a colour rule: the detector also asks for texture."""
    from PIL import Image

    from c2lst.io._histology import SATURATION_MIN

    counts, spots, image = tiny_writer(tmp_path / "pink")
    rgb = np.asarray(Image.open(image)).copy()
    pink = np.array([236, 214, 232])
    assert (pink.max() - pink.min()) / pink.max() > SATURATION_MIN  # stained by the colour rule alone
    noise = np.random.default_rng(0).integers(-1, 2, size=(600, 300, 3))  # the scanner's noise on glass
    rgb[:, :300] = np.clip(pink + noise, 0, 255)
    Image.fromarray(rgb).save(image)
    tiles = _tiles(c2lst.io.read_legacy_st(counts, spots, image), tile_px=32)
    assert len(tiles) == 12 * 6  # the right half only, as with white glass
    assert not (np.abs(tiles.astype(int) - pink[:, None, None]).max(axis=1) <= 2).all(axis=(1, 2)).any()


def test_tiles_touching_excluded_spots_are_dropped(tiny_writer, tmp_path):
    paint = np.zeros(25, bool)
    paint[[0, 7, 12, 18, 24]] = True
    sdata = _section(tiny_writer, tmp_path / "painted", "tiny", 0, paint=paint)
    table = sdata.tables["table"]
    rows = sdata.shapes["tiny_spots"].index.get_indexer(table.obs["spot_id"])
    exclude = paint[rows]  # the same spots, in table order

    def green(tiles: np.ndarray) -> np.ndarray:
        t = tiles.astype(int)
        return ((t[:, 1] > 200) & (t[:, 0] < 60) & (t[:, 2] < 60)).any(axis=(1, 2))

    every = _tiles(sdata, tile_px=32)
    assert green(every).sum() >= 5  # the painted spots are in some tiles...
    kept = _tiles(sdata, tile_px=32, exclude_spots=exclude)
    assert not green(kept).any()  # ...and in none once their spots are excluded
    assert _keys(kept) <= _keys(every) and 5 <= len(every) - len(kept) <= 5 * 9  # at most 3 x 3 tiles a spot


def test_tissue_tiles_bad_input(tiny_sdata, two_sections):
    with pytest.raises(ValueError, match="exclude_spots"):
        c2lst.pp.tissue_tiles(tiny_sdata, exclude_spots=np.zeros(25, int))
    with pytest.raises(ValueError, match="exclude_spots"):
        c2lst.pp.tissue_tiles(tiny_sdata, exclude_spots=np.zeros(24, bool))
    with pytest.raises(ValueError, match="not in table.obs"):
        c2lst.pp.tissue_tiles(tiny_sdata, library_ids=["C9"])
    with pytest.raises(ValueError, match="list of section names"):
        c2lst.pp.tissue_tiles(tiny_sdata, library_ids="tiny")
    with pytest.raises(ValueError, match="no image for library id 'tiny'"):
        c2lst.pp.tissue_tiles(tiny_sdata, image_key={"other": "tiny_image"})
    with pytest.raises(ValueError, match="names one image"):
        c2lst.pp.tissue_tiles(two_sections, image_key="A_image")
    with pytest.raises(ValueError, match="SpatialData"):
        c2lst.pp.tissue_tiles(tiny_sdata.tables["table"])
    for bad, match in (({"tile_px": 4}, "tile_px"), ({"tile_um": 0}, "tile_um"), ({"stride_um": -1}, "stride_um"),
                       ({"min_tissue": 1.5}, "min_tissue"), ({"max_tiles": 0}, "max_tiles"), ({"mpp": 0}, "mpp")):
        with pytest.raises(ValueError, match=match):
            c2lst.pp.tissue_tiles(tiny_sdata, **bad)


def _captured(monkeypatch) -> dict:
    """Record the tissue tiles tl.adapt hands to the core adaptation."""
    from c2lst.tl import _adapt

    seen: dict = {}
    real = _adapt.adapt_local

    def spy(*args, **kwargs):
        seen["tissue"] = kwargs.get("tissue")
        return real(*args, **kwargs)

    monkeypatch.setattr(_adapt, "adapt_local", spy)
    return seen


def test_held_out_section_gives_no_tile_unless_transductive(two_sections, central, monkeypatch):
    seen = _captured(monkeypatch)
    table = two_sections.tables["table"]
    px = central.config.tile_px
    in_a = (table.obs["library_id"] == "A").to_numpy()
    mask = in_a.copy()
    mask[np.flatnonzero(in_a)[::2]] = False  # A partly paired; B held out
    tiles_a = _keys(_tiles(two_sections, library_ids=["A"], tile_px=px))
    tiles_b = _keys(_tiles(two_sections, library_ids=["B"], tile_px=px))
    kw = {"train_mask": mask, "steps": 2, "batch_size": 4, "seed": 0, "overwrite": True}

    c2lst.tl.adapt(two_sections, central, tissue=500, **kw)
    rec = table.uns["c2lst_adapt"]
    got = _keys(seen["tissue"])
    assert got and got <= tiles_a and not got & tiles_b
    # every tile overlapping an unpaired spot of A is gone
    assert len(got) < len(tiles_a) == 144
    assert rec["tissue_sections"] == ["A"] and rec["n_tissue_tiles"] == len(got) and rec["transductive"] == []

    c2lst.tl.adapt(two_sections, central, tissue=500, transductive=["B"], **kw)
    got = _keys(seen["tissue"])
    assert got & tiles_b and got <= tiles_a | tiles_b
    assert not got & (tiles_b - _keys(_tiles(two_sections, library_ids=["B"], tile_px=px,
                                                               exclude_spots=~in_a)))  # B's spots stay out
    assert table.uns["c2lst_adapt"]["tissue_sections"] == ["A", "B"]
    assert table.uns["c2lst_adapt"]["transductive"] == ["B"]

    with pytest.raises(ValueError, match=r"sections \['C'\] that are not in"):
        c2lst.tl.adapt(two_sections, central, tissue=50, transductive=["C"], **kw)
    with pytest.raises(ValueError, match="list of section names"):
        c2lst.tl.adapt(two_sections, central, tissue=50, transductive="B", **kw)
    with pytest.raises(ValueError, match="needs `tissue=<int>`"):
        c2lst.tl.adapt(two_sections, central, transductive=["B"], **kw)


def test_adapt_with_tissue_seeded_and_saves_no_pixels(tiny_sdata, central, tmp_path):
    import torch
    from safetensors import safe_open

    c2lst.pp.extract_patches(tiny_sdata, patch_um=100, patch_px=32)
    mask = np.zeros(25, bool)
    mask[:15] = True
    kw = {"train_mask": mask, "steps": 3, "batch_size": 4, "decoder_steps": 2, "overwrite": True}
    local = c2lst.tl.adapt(tiny_sdata, central, tissue=40, seed=0, **kw)
    assert local.modulation.local and local.summary["tissue_per_batch"] == 2
    assert any(bool(p.detach().abs().sum() > 0) for p in local.modulation.local_film)  # the local component trained
    again = c2lst.tl.adapt(tiny_sdata, central, tissue=40, seed=0, **kw)
    other = c2lst.tl.adapt(tiny_sdata, central, tissue=40, seed=1, **kw)
    state, same, diff = local.adapter_state(), again.adapter_state(), other.adapter_state()
    assert all(torch.equal(state[k], same[k]) for k in state)
    assert not all(torch.equal(state[k], diff[k]) for k in state)

    local.save(tmp_path / "adapter")
    with safe_open(str(tmp_path / "adapter" / "adapter.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert all(k.split(".")[0] in ("modulation", "decoder") for k in shapes)
    assert sum(int(np.prod(s)) for s in shapes.values()) == local.n_trainable  # the parameters, nothing else
    assert dtypes == {"F32"} and not any(len(s) == 4 and s[1] == 3 and s[0] >= 40 for s in shapes.values())
    assert {"modulation.local_time", "modulation.local_film.0"} <= set(shapes)
    meta = json.loads((tmp_path / "adapter" / "c2lst_local.json").read_text())
    assert meta["modulation"]["local"] is True
    assert meta["summary"]["n_tissue_tiles"] == 40 and meta["summary"]["tissue_sections"] == ["tiny"]

    def arrays(x):  # the longest list anywhere in the manifest: names of spots, never pixels
        if isinstance(x, dict):
            return max((arrays(v) for v in x.values()), default=0)
        if isinstance(x, list):
            return max([len(x), *(arrays(v) for v in x)])
        return 0

    assert arrays(meta) <= 30  # the panel's 30 genes; a row of a tile would be 32 long, the tiles 40
    back = LocalModel.load(tmp_path / "adapter", central)
    assert back.modulation.local
    assert all(torch.equal(back.adapter_state()[k], state[k]) for k in state)


def test_adapt_with_given_tiles(tiny_sdata, central):
    from c2lst.io._histology import HistologyTiles

    c2lst.pp.extract_patches(tiny_sdata, patch_um=100, patch_px=32)
    tiles = np.random.default_rng(0).integers(40, 220, size=(12, 48, 48, 3), dtype=np.uint8)  # channel-last
    kw = {"steps": 2, "batch_size": 4, "decoder_steps": 0, "overwrite": True}
    c2lst.tl.adapt(tiny_sdata, central, tissue=tiles, **kw)
    rec = tiny_sdata.tables["table"].uns["c2lst_adapt"]
    assert rec["n_tissue_tiles"] == 12 and rec["tissue_source"] == "array" and rec["tissue_sections"] == []
    histo = HistologyTiles(tiles.transpose(0, 3, 1, 2), np.array(["a.png"] * 6 + ["b.png"] * 6), 100 / 48, 100.0)
    c2lst.tl.adapt(tiny_sdata, central, tissue=histo, **kw)
    assert tiny_sdata.tables["table"].uns["c2lst_adapt"]["tissue_sections"] == ["a.png", "b.png"]
    wrong = HistologyTiles(tiles.transpose(0, 3, 1, 2), np.array(["a.png"] * 12), 200 / 48, 200.0)
    for bad, match in ((wrong, "200 µm across"), ("many", "`tissue` must be"), (True, "`tissue` must be"),
                       (0, "positive number"), (tiles.astype(np.float32), "uint8")):
        with pytest.raises(ValueError, match=match):
            c2lst.tl.adapt(tiny_sdata, central, tissue=bad, **kw)
    with pytest.raises(ValueError, match="applies to tiles drawn"):
        c2lst.tl.adapt(tiny_sdata, central, tissue=tiles, transductive=["tiny"], **kw)
    with pytest.raises(ValueError, match="batch_size"):
        c2lst.tl.adapt(tiny_sdata, central, tissue=tiles, **(kw | {"batch_size": 1}))
    with pytest.raises(ValueError, match="pass the SpatialData"):
        c2lst.tl.adapt(tiny_sdata.tables["table"], central, tissue=10, **kw)
