"""Nothing lost, nothing silently wrong: one test per case class of issue 24.

Every refused call must (a) raise a ``ValueError`` (CLI: exit status != 0, one line on stderr) whose text names
the fix, and (b) leave every user file as it was (bytes and listing compared before and after).
"""
from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import c2lst
from c2lst.cli import main
from c2lst.core import get_config
from c2lst.core.models import CentralModel
from c2lst.core.networks import build_autoencoder, build_unet
from c2lst.core.predictor import Predictor
from c2lst.files import MARKER, atomic_dir, check_output

TINY = get_config("tiny")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to compare before and after a refused call."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.docx").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "raw.csv").write_text("1,2,3\n")
    return path


def fitted_predictor() -> Predictor:
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(12, 3, 32, 32), dtype=np.uint8)
    y = patches.mean(axis=(2, 3)).astype(np.float32) / 50
    return Predictor(encoder="handcrafted", genes=["a", "b", "c"], seed=0).fit(patches, y)


def tiny_central(seed: int = 0) -> CentralModel:
    import torch

    torch.manual_seed(seed)
    return CentralModel(build_autoencoder(TINY), build_unet(TINY), TINY, 1.0)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A few dozen bytes declaring a ``width x height`` RGB PNG (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------------------- lost data
def test_cli_overwrite_refuses_user_folders_and_inputs(tiny_files, tmp_path, capsys):
    mine = user_folder(tmp_path / "mydir")
    before = snapshot(mine)
    assert main(["read", "legacy-st", *map(str, tiny_files), "--out", str(mine), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "not written by c2lst" in err and "Choose another --out" in err and len(err.strip().splitlines()) == 1
    assert snapshot(mine) == before
    # a store c2lst wrote is replaced with --overwrite, and carries the marker
    proj = tmp_path / "proj"
    store = proj / "s.zarr"
    assert main(["read", "legacy-st", *map(str, tiny_files), "--out", str(store)]) == 0
    assert (store / MARKER).is_file()
    assert main(["read", "legacy-st", *map(str, tiny_files), "--out", str(store), "--overwrite"]) == 0
    (proj / "notes.txt").write_text("mine")
    before = snapshot(proj)
    # the input store as --save-model / --adapter, a folder holding the input as --out: refused, nothing changed
    for args, what in [
        (["predict", str(store), "--save-model", str(store), "--overwrite", "--synthetic", "none"], "--save-model"),
        (["predict", str(store), "--out", str(proj), "--overwrite", "--synthetic", "none"], "--out"),
        (["predict", str(store), "--save-model", str(store / "model"), "--synthetic", "none"], "--save-model"),
        (["adapt", str(store), "--adapter", str(store), "--overwrite"], "--adapter"),
    ]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert what in err and "input" in err and "Choose another" in err, err
        assert snapshot(proj) == before
    assert not list(tmp_path.glob("**/.*tmp-*"))


def test_python_saves_refuse_folders_c2lst_did_not_write(tmp_path):
    from c2lst.core.adaptation import adapt_local

    pred = fitted_predictor()
    other = user_folder(tmp_path / "other")
    before = snapshot(other)
    with pytest.raises(ValueError, match="not written by c2lst.*move or delete"):
        pred.save(other, overwrite=True)
    central = tiny_central()
    rng = np.random.default_rng(0)
    local = adapt_local(central, rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8),
                        rng.normal(size=(8, 4)).astype(np.float32), {"genes": list("abcd"), "identity": "p"},
                        steps=1, batch_size=4, lr=1e-3, cond_dropout=0.1, lora_rank=0, seed=0)
    with pytest.raises(ValueError, match="not written by c2lst"):
        local.save(other, overwrite=True)
    with pytest.raises(ValueError, match="not written by c2lst"):
        central.save(other, overwrite=True)
    assert snapshot(other) == before
    # what c2lst wrote is replaced (overwrite=True), and refused without it
    for obj, path in ((pred, tmp_path / "pred"), (local, tmp_path / "local"), (central, tmp_path / "central")):
        obj.save(path)
        obj.save(path, overwrite=True)
        assert (path / MARKER).is_file()
    with pytest.raises(ValueError, match="already exists; pass `overwrite=True`"):
        pred.save(tmp_path / "pred")
    # a file is never replaced by a folder
    (tmp_path / "file.txt").write_text("keep")
    with pytest.raises(ValueError, match="is a file"):
        pred.save(tmp_path / "file.txt", overwrite=True)
    assert (tmp_path / "file.txt").read_text() == "keep"


def test_interrupted_central_save_keeps_the_old_model(tmp_path, monkeypatch):
    import c2lst.core.models as models

    old = tiny_central(0)
    old.save(tmp_path / "central")
    new = tiny_central(1)
    real = models.save_module

    def fail_on_unet(module, directory):
        if Path(directory).name == "unet":
            raise KeyboardInterrupt  # killed half-way through the save
        return real(module, directory)

    monkeypatch.setattr(models, "save_module", fail_on_unet)
    with pytest.raises(KeyboardInterrupt):
        new.save(tmp_path / "central", overwrite=True)
    assert CentralModel.load(tmp_path / "central").weights_sha256 == old.weights_sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == ["central"]  # no temporary folder left
    monkeypatch.undo()
    new.save(tmp_path / "central", overwrite=True)
    assert CentralModel.load(tmp_path / "central").weights_sha256 == new.weights_sha256


@pytest.mark.parametrize("exchange", [True, False])  # renameat2(RENAME_EXCHANGE), else two renames
def test_atomic_dir_swaps_only_a_complete_folder(tmp_path, monkeypatch, exchange):
    import c2lst.files as files

    if not exchange:
        monkeypatch.setattr(files, "_renameat2", lambda: None)
    target = tmp_path / "t"
    with atomic_dir(target, kind="test") as tmp:
        (tmp / "a").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target, kind="test") as tmp:
        (tmp / "a").write_text("new")
        raise RuntimeError("interrupted")
    assert (target / "a").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]
    (target / "checkpoints").mkdir()
    with atomic_dir(target, kind="test", keep=["checkpoints"]) as tmp:
        (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "new" and (target / "checkpoints").is_dir() and (target / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_outputs_checked_before_any_computation(tmp_path, monkeypatch):
    import c2lst.tl._pretrain as pretrain_module
    from c2lst.benchmark import run_benchmark

    def never(*args, **kwargs):
        raise AssertionError("training started although the output location is unusable")

    monkeypatch.setattr(pretrain_module, "pretrain_central", never)
    tiles = np.random.default_rng(0).integers(0, 256, (20, 3, 16, 16), dtype=np.uint8)
    (tmp_path / "model.txt").write_text("keep")
    with pytest.raises(ValueError, match="is a file.*Choose another `out`"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=2, out=tmp_path / "model.txt")
    mine = user_folder(tmp_path / "mine")
    before = snapshot(mine)
    with pytest.raises(ValueError, match="not written by c2lst"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=2, out=mine, overwrite=True)
    assert snapshot(mine) == before and (tmp_path / "model.txt").read_text() == "keep"
    fitted_predictor().save(tmp_path / "pred")  # c2lst output, but not a central model: replaced only when asked
    with pytest.raises(ValueError, match="already holds other c2lst output; pass `overwrite=True`"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=2, out=tmp_path / "pred")
    with pytest.raises(ValueError, match="not written by c2lst"):  # before loading any section
        run_benchmark(["C2", "C3"], root=tmp_path / "nowhere", out_dir=mine)
    assert snapshot(mine) == before


def test_check_output_overlaps(tmp_path):
    store = tmp_path / "proj" / "s.zarr"
    store.mkdir(parents=True)
    for target, relation in ((store, "is"), (tmp_path / "proj", "contains"), (store / "m", "lies inside")):
        with pytest.raises(ValueError, match=f"{relation} the input"):
            check_output(target, overwrite=True, inputs=[store])
    assert check_output(tmp_path / "new", overwrite=False, inputs=[store]) == tmp_path / "new"


def test_saved_files_follow_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        path = fitted_predictor().save(tmp_path / "shared")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o775
    assert {p.stat().st_mode & 0o777 for p in path.iterdir()} == {0o664}


# ------------------------------------------------------------------------------------------ silently wrong
def test_integer_masks_are_refused_with_the_fix(tiny_sdata):
    table = tiny_sdata.tables["table"]
    mask = np.arange(table.n_obs) % 2 == 0
    for call in (lambda m: c2lst.pp.gene_panel(tiny_sdata, n_top_genes=5, train_mask=m),
                 lambda m: c2lst.tl.predict(tiny_sdata, train_mask=m, synthetic=None, n_top_genes=5)):
        with pytest.raises(ValueError, match=r"mask\)\.astype\(bool\)"):
            call(mask.astype(int))
        with pytest.raises(ValueError, match="m\\[indices\\] = True"):
            call(np.flatnonzero(mask))
    c2lst.pp.gene_panel(tiny_sdata, n_top_genes=5, train_mask=list(mask))  # a list of booleans is a mask
    assert tiny_sdata.tables["table"].uns["c2lst_panel"]["params"]["n_train"] == int(mask.sum())


def test_unknown_keys_raise_with_the_available_ones(tiny_sdata):
    mask = np.arange(tiny_sdata.tables["table"].n_obs) % 2 == 0
    c2lst.pp.extract_patches(tiny_sdata, patch_um=100, patch_px=32)
    with pytest.raises(ValueError, match=r"no synthetic table 'c2lst_synth'; available tables: \['table'\]"):
        c2lst.tl.predict(tiny_sdata, train_mask=mask, synthetic="c2lst_synth", n_top_genes=5)
    with pytest.raises(ValueError, match=r"obsm keys: \[.*'c2lst_patch'"):
        c2lst.tl.predict(tiny_sdata, train_mask=mask, synthetic=None, n_top_genes=5, patch_key="patch")
    c2lst.tl.predict(tiny_sdata, train_mask=mask, synthetic=None, n_top_genes=5)
    with pytest.raises(ValueError, match=r"layers: \['c2lst_pred'"):
        c2lst.tl.evaluate(tiny_sdata, train_mask=mask, layer="c2lst_prediction")
    with pytest.raises(ValueError, match=r"\(tables: \['table'\]\).*pass an existing `synthetic`"):
        c2lst.tl.evaluate_synthetic(tiny_sdata, synthetic="c2lst_synth")


def test_predictor_integrity(tmp_path, capsys):
    pred = fitted_predictor()
    path = pred.save(tmp_path / "pred")
    weights = path / "model.safetensors"
    good = weights.read_bytes()
    flipped = bytearray(good)
    flipped[-64] ^= 0xFF
    weights.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="model.safetensors does not match its recorded sha256.*Re-create"):
        Predictor.load(path)
    weights.write_bytes(good)
    Predictor.load(path)
    config = path / "config.json"
    cfg = json.loads(config.read_text())
    config.write_text(json.dumps({k: v for k, v in cfg.items() if k != "files_sha256"}))
    with pytest.raises(ValueError, match="no 'files_sha256' entry.*Save the predictor again"):
        Predictor.load(path)
    config.write_text(json.dumps(cfg)[:200])  # truncated
    with pytest.raises(ValueError, match="config.json is corrupt.*Save or copy it again"):
        Predictor.load(path)
    # the CLI says it in one line (no traceback)
    slide = tmp_path / "slide.zarr"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(tmp_path / "s.png")
    assert main(["read", "slide", str(tmp_path / "s.png"), "--mpp", "1", "--out", str(slide)]) == 0
    capsys.readouterr()
    assert main(["predict-slide", str(slide), "--model", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "config.json is corrupt" in err


def test_central_manifest_without_checksums_is_refused(tmp_path):
    tiny_central().save(tmp_path / "c")
    manifest = tmp_path / "c" / "c2lst_central.json"
    meta = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({k: v for k, v in meta.items() if k != "files_sha256"}))
    with pytest.raises(ValueError, match="no 'files_sha256' entry.*Save the central model again"):
        CentralModel.load(tmp_path / "c")
    manifest.write_text(json.dumps(meta))
    (tmp_path / "c" / "unet" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="unet/config.json is missing or does not match its sha256"):
        CentralModel.load(tmp_path / "c")


def test_implausible_mpp_is_refused(tmp_path):
    rgb = np.random.default_rng(0).integers(60, 200, (96, 96, 3), dtype=np.uint8)
    tile, plain = tmp_path / "tile.png", tmp_path / "plain.png"
    Image.fromarray(rgb).save(tile, dpi=(25_400 / 0.97, 25_400 / 0.97))
    Image.fromarray(rgb).save(plain)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="disagrees with the file's metadata"):
        c2lst.io.read_histology(tile, mpp=40)
    with pytest.raises(ValueError, match="upscaled 25.6x.*Check `mpp`"):  # a 96 px image would give 1,444 tiles
        c2lst.io.read_histology(plain, mpp=40)
    with pytest.raises(ValueError, match="disagrees with the file's metadata.*force_mpp=True"):
        c2lst.io.read_histology(tile, mpp=2.0, tile_um=50, tile_px=32)
    with pytest.raises(ValueError, match="disagrees with the file's metadata"):
        c2lst.io.read_slide(tile, mpp=2.0)
    assert len(c2lst.io.read_histology(tile, mpp=2.0, tile_um=50, tile_px=32, force_mpp=True, min_tissue=0)) >= 1
    assert c2lst.io.read_histology(tile, tile_um=40, tile_px=32, min_tissue=0).source_mpp["tile.png"][1] == \
        "file metadata"
    for bad in ("abc", float("nan"), -1):
        with pytest.raises(ValueError, match="must be positive.*`mpp=0.5`"):
            c2lst.io.read_histology(tile, mpp=bad)
    assert snapshot(tmp_path) == before


def test_blank_tiles_and_flat_genes_warn():
    blank = np.full((4, 3, 16, 16), 255, np.uint8)
    with pytest.warns(UserWarning, match="4 of 4 tiles .* blank or near-constant"), \
            pytest.raises(ValueError, match="at least 16"):
        c2lst.tl.pretrain(blank, config="tiny", steps=2)
    from c2lst.pp._panel import variance_panel

    train = np.random.default_rng(0).random((6, 4))
    train[:, 2] = 1.0  # detected in every spot, but constant
    with pytest.warns(UserWarning, match=r"1 of the 4 panel genes do not vary.*\['g2'\].*smaller `n_top_genes`"):
        variance_panel(train, ["g0", "g1", "g2", "g3"], 1e4, n_top_genes=4, min_spots=0.1)


# ---------------------------------------------------------------------------------------- unclear inputs
def test_bad_tables_name_the_file_and_the_fix(tiny_files, tmp_path):
    counts, spots, image = tiny_files
    before = snapshot(tiny_files[0].parent)
    empty = tmp_path / "empty.tsv.gz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="counts file empty.tsv.gz is empty.*copy or download"):
        c2lst.io.read_legacy_st(empty, spots, image)
    plain = tmp_path / "plain.tsv.gz"
    plain.write_bytes(gzip.decompress(counts.read_bytes()))
    with pytest.raises(ValueError, match="cannot read counts file plain.tsv.gz.*gzip data"):
        c2lst.io.read_legacy_st(plain, spots, image)
    cut = tmp_path / "cut.tsv.gz"
    cut.write_bytes(counts.read_bytes()[:-40])
    with pytest.raises(ValueError, match="cut.tsv.gz"):
        c2lst.io.read_legacy_st(cut, spots, image)
    assert snapshot(tiny_files[0].parent) == before


def test_bad_images_name_the_file_and_the_fix(tiny_files, tmp_path, capsys):
    counts, spots, image = tiny_files
    jpg = tmp_path / "he.jpg"
    Image.open(image).convert("RGB").save(jpg, quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.jpg is a truncated JPEG.*Copy or download it again"):
        c2lst.io.read_legacy_st(counts, spots, truncated)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["read", "legacy-st", str(counts), str(spots), str(truncated), "--out", str(out / "s.zarr")]) == 2
    assert "truncated JPEG" in capsys.readouterr().err
    assert list(out.iterdir()) == []  # no .tmp-PID folder left
    text = tmp_path / "notes.jpg"
    text.write_text("this is not an image")
    for call in (lambda: c2lst.io.read_histology(text, mpp=0.5), lambda: c2lst.io.read_slide(text, mpp=0.5),
                 lambda: c2lst.io.read_legacy_st(counts, spots, text)):
        with pytest.raises(ValueError, match="cannot read image notes.jpg.*convert it to an RGB JPEG, PNG or TIFF"):
            call()


def test_pixel_budget(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    for call in (lambda: c2lst.io.read_slide(bomb, mpp=0.5), lambda: c2lst.io.read_histology(bomb, mpp=0.5)):
        with pytest.raises(ValueError, match="max_image_pixels"):
            call()
    small = tmp_path / "small.png"
    Image.fromarray(np.random.default_rng(0).integers(60, 200, (200, 200, 3), dtype=np.uint8)).save(small)
    old = c2lst.settings.max_image_pixels
    try:
        c2lst.settings.max_image_pixels = 10_000
        with pytest.raises(ValueError, match=r"above c2lst.settings.max_image_pixels \(10,000\).*= 40000"):
            c2lst.io.read_histology(small, mpp=1.0, tile_um=64, tile_px=32)
        c2lst.settings.max_image_pixels = 40_000
        assert len(c2lst.io.read_histology(small, mpp=1.0, tile_um=64, tile_px=32, min_tissue=0)) == 9
    finally:
        c2lst.settings.max_image_pixels = old


def test_cli_maps_other_errors_to_one_line(tiny_files, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("something deep\nwent wrong")

    monkeypatch.setattr(c2lst.io, "read_legacy_st", broken)
    args = ["read", "legacy-st", *map(str, tiny_files), "--out", str(tmp_path / "s.zarr")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == ("c2lst read: error: RuntimeError: something deep went wrong (rerun with --debug for the "
                           "traceback and report it if the message does not say what to change)")
    assert main(["--debug", *args]) == 1
    assert "Traceback" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ fuzzing
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
FUZZ = hypothesis.settings(max_examples=30, deadline=None, derandomize=True,
                           suppress_health_check=list(hypothesis.HealthCheck))


def _mutate(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data[: max(0, min(cut, len(data)))])
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


@FUZZ
@hypothesis.given(which=st.sampled_from(["counts", "spots"]), cut=st.integers(0, 4000),
                  flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
                  text=st.booleans())
def test_fuzz_legacy_st_reader(tiny_files, which, cut, flips, text):
    counts, spots, image = tiny_files
    folder = counts.parent
    source = counts if which == "counts" else spots
    data = gzip.decompress(source.read_bytes()) if (which == "counts" and text) else source.read_bytes()
    bad = _mutate(data, cut, flips)
    if which == "counts" and text:
        bad = gzip.compress(bad)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / source.name
        path.write_bytes(bad)
        before = snapshot(folder)
        args = (path, spots, image) if which == "counts" else (counts, path, image)
        try:
            sdata = c2lst.io.read_legacy_st(*args)
        except ValueError as e:
            assert str(e)
        else:
            assert sdata.tables["table"].n_obs > 0
        assert snapshot(folder) == before


@FUZZ
@hypothesis.given(fmt=st.sampled_from(["PNG", "JPEG", "TIFF"]), cut=st.integers(0, 5000),
                  flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6))
def test_fuzz_histology_reader(fmt, cut, flips):
    import io

    rgb = np.random.default_rng(1).integers(60, 200, (48, 48, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    suffix = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif"}[fmt]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"fuzz{suffix}"
        path.write_bytes(_mutate(buf.getvalue(), cut, flips))
        try:
            tiles = c2lst.io.read_histology(path, mpp=1.0, tile_um=24, tile_px=16, min_tissue=0)
        except ValueError as e:
            assert str(e)
        else:
            assert tiles.tiles.dtype == np.uint8 and tiles.tiles.shape[1:] == (3, 16, 16)
        assert sorted(p.name for p in Path(d).iterdir()) == [path.name]


# ------------------------------------------------------------------------------------- the docs table's script
def test_robustness_table_classifies_what_happens(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("robustness_table", Path(__file__).parents[1] / "scripts" /
                                                  "robustness_table.py")
    rt = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "robustness_table", rt)  # dataclasses look their module up
    spec.loader.exec_module(rt)

    def deletes(d: Path) -> None:
        rt.guard(rt.user_folder(d / "mine"))
        (d / "mine" / "thesis.docx").unlink()
        raise ValueError("refused; choose another path")

    def raw(d: Path) -> None:
        raise KeyError("x")

    cases = [(rt.Case("t", "nothing happens", lambda d: None, "fix"), "silent"),
             (rt.Case("t", "file lost", deletes, "choose another"), "lost"),
             (rt.Case("t", "raw error", raw, "fix"), "unclear"),
             (rt.Case("t", "no fix named", lambda d: rt.predictor().save(d / "p") and rt.predictor().save(d / "p"),
                      "no such phrase"), "unclear"),
             (next(c for c in rt.CASES if "synthetic='c2lst_synth'" in c.tried), "clear")]
    for i, (case, expected) in enumerate(cases):
        assert rt.classify(case, tmp_path / str(i))[0] == expected, case.tried
    assert "| t | nothing happens | **silent** |" in rt.render([(cases[0][0], "silent", "no error")])
