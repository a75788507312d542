"""Try bad inputs and faults as a careful new user would, and write the outcome table of ``docs/robustness.md``.

Every case really runs (on a tiny synthetic legacy-ST section and tiny models written to a temporary folder)
and is classified from what happened, nothing is hard-coded:

- **lost**: a file the user owns (or an input of the call) changed or disappeared;
- **silent**: no error (or, for plausibility cases, no warning) although the input is wrong;
- **unclear**: an error, but not a ``ValueError`` (CLI: not one line, or a traceback) or without the fix;
- **clear**: a ``ValueError`` (CLI: one line on stderr, non-zero exit) that names the fix, nothing lost.

Run from the repository root (about a minute on 2 CPU cores)::

    PYTHONPATH=src python scripts/robustness_table.py            # rewrites docs/robustness.md
    PYTHONPATH=src python scripts/robustness_table.py --check    # exit 1 if any case is not "clear"
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import struct
import sys
import tempfile
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUTCOMES = ("clear", "unclear", "silent", "lost")


@dataclass
class Case:
    """One bad input or fault: its issue group, what was tried, how to run it, the phrase naming the fix."""

    group: str
    tried: str
    run: Callable[[Path], None]  # raises what the user would see
    fix: str  # a phrase the message must contain (the fix)
    cli: bool = False  # run() returns (exit status, stderr) through `expect_cli`
    warns: bool = False  # a plausibility case: a UserWarning naming the fix is the clear outcome


class Lost(Exception):
    """A case found user data (here: a saved model) destroyed."""


class CliFailure(Exception):
    """A non-zero exit of the in-process CLI, with its stderr."""

    def __init__(self, status: int, err: str) -> None:
        super().__init__(err)
        self.status, self.err = status, err


GUARDED: list[tuple[Path, dict[str, bytes]]] = []  # folders snapshotted by `guard`, compared after each case


def guard(folder: Path) -> Path:
    """Snapshot ``folder`` (a user folder or an input) right before the call that must not change it."""
    GUARDED.append((folder, snapshot(folder)))
    return folder


def cli(*args: str) -> None:
    """Run ``c2lst`` in-process; raise :class:`CliFailure` on a non-zero exit."""
    from c2lst.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(["--quiet", *args])
    if status != 0:
        raise CliFailure(status, err.getvalue())


# ------------------------------------------------------------------------------------------------- fixtures
def tiny_section(folder: Path) -> tuple[Path, Path, Path]:
    """Write a 5 x 5 spot legacy-ST section: counts.tsv.gz, spots.tsv, he.png (2 µm/px, 100 px pitch)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    ax, ay = (a.ravel() for a in np.meshgrid(np.arange(5) + 3, np.arange(5) + 2, indexing="ij"))
    spots = pd.DataFrame({"x": ax, "y": ay, "pixel_x": 100.0 + (ax - 3) * 100, "pixel_y": 100.0 + (ay - 2) * 100})
    counts = pd.DataFrame(rng.poisson(4.0, (25, 30)), index=[f"{a}x{b}" for a, b in zip(ax, ay, strict=True)],
                          columns=[f"gene{i}" for i in range(30)])
    paths = folder / "counts.tsv.gz", folder / "spots.tsv", folder / "he.png"
    with gzip.open(paths[0], "wt") as fh:
        counts.to_csv(fh, sep="\t")
    spots.to_csv(paths[1], sep="\t", index=False)
    Image.fromarray(rng.integers(60, 220, (600, 600, 3), dtype=np.uint8)).save(paths[2])
    return paths


def user_folder(path: Path) -> Path:
    """Make a folder holding a file c2lst did not write."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.docx").write_text("years of work")
    return path


def predictor():
    """Fit a tiny handcrafted predictor."""
    from c2lst.core.predictor import Predictor

    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (12, 3, 32, 32), dtype=np.uint8)
    return Predictor(encoder="handcrafted", genes=["a", "b"], seed=0).fit(
        patches, patches.mean(axis=(2, 3))[:, :2].astype(np.float32) / 50)


def central(seed: int = 0):
    """Build an untrained tiny central model."""
    import torch

    from c2lst.core import get_config
    from c2lst.core.models import CentralModel
    from c2lst.core.networks import build_autoencoder, build_unet

    torch.manual_seed(seed)
    cfg = get_config("tiny")
    return CentralModel(build_autoencoder(cfg), build_unet(cfg), cfg, 1.0)


def section(d: Path, *, patches: bool = False):
    """Read the tiny section (with 32 px patches)."""
    import c2lst

    sdata = c2lst.io.read_legacy_st(*tiny_section(d / "in"))
    if patches:
        c2lst.pp.extract_patches(sdata, patch_um=100, patch_px=32)
    return sdata


def mask(n: int) -> np.ndarray:
    """Select every other spot."""
    return np.arange(n) % 2 == 0


def store(d: Path) -> Path:
    """Write proj/s.zarr with the CLI next to a user file; guard proj/."""
    counts, spots, image = tiny_section(d / "in")
    cli("read", "legacy-st", str(counts), str(spots), str(image), "--out", str(d / "proj" / "s.zarr"))
    (d / "proj" / "notes.txt").write_text("mine")
    guard(d / "proj")
    return d / "proj" / "s.zarr"


def png_header_only(path: Path, width: int, height: int) -> Path:
    """Write a tiny PNG declaring ``width x height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------------------------- cases
def _read_into_user_folder(d: Path) -> None:
    counts, spots, image = tiny_section(d / "in")
    guard(user_folder(d / "mydir"))
    cli("read", "legacy-st", str(counts), str(spots), str(image), "--out", str(d / "mydir"), "--overwrite")


def _save_model_is_input(d: Path) -> None:
    s = store(d)
    cli("predict", str(s), "--save-model", str(s), "--overwrite", "--synthetic", "none")


def _out_contains_input(d: Path) -> None:
    s = store(d)
    cli("predict", str(s), "--out", str(d / "proj"), "--overwrite", "--synthetic", "none")


def _adapter_is_input(d: Path) -> None:
    s = store(d)
    cli("adapt", str(s), "--adapter", str(s), "--overwrite", "--steps", "1", "--decoder-steps", "0")


def _predictor_save_user(d: Path) -> None:
    predictor().save(guard(user_folder(d / "mydir")), overwrite=True)


def _central_save_user(d: Path) -> None:
    central().save(guard(user_folder(d / "mydir")), overwrite=True)


def _central_interrupted(d: Path) -> None:
    import c2lst.core.models as models

    old = central(0)
    old.save(d / "mydir")
    real = models.save_module

    def killed(module, directory):
        if "unet" in Path(directory).name:
            raise KeyboardInterrupt
        return real(module, directory)

    models.save_module = killed
    try:
        central(1).save(d / "mydir", overwrite=True)
    except KeyboardInterrupt:
        pass
    finally:
        models.save_module = real
    try:
        back = models.CentralModel.load(d / "mydir")
    except ValueError as e:
        raise Lost(f"neither model loads: {e}") from None
    if back.weights_sha256 != old.weights_sha256:
        raise Lost("the interrupted save left another model than the old one")
    raise ValueError("interrupted save: the old model still loads; save again to replace it")


def _pretrain_out_file(d: Path) -> None:
    import c2lst

    d.mkdir(parents=True, exist_ok=True)
    (d / "mydir").mkdir()
    (d / "mydir" / "model.txt").write_text("keep")
    guard(d / "mydir")
    tiles = np.random.default_rng(0).integers(0, 256, (20, 3, 16, 16), dtype=np.uint8)
    c2lst.tl.pretrain(tiles, config="tiny", steps=2, out=d / "mydir" / "model.txt")


def _integer_mask(d: Path) -> None:
    import c2lst

    sdata = section(d)
    c2lst.pp.gene_panel(sdata, n_top_genes=5, train_mask=mask(25).astype(int))


def _synthetic_typo(d: Path) -> None:
    import c2lst

    c2lst.tl.predict(section(d, patches=True), train_mask=mask(25), synthetic="c2lst_synth", n_top_genes=5)


def _layer_typo(d: Path) -> None:
    import c2lst

    sdata = section(d, patches=True)
    c2lst.tl.predict(sdata, train_mask=mask(25), synthetic=None, n_top_genes=5)
    c2lst.tl.evaluate(sdata, train_mask=mask(25), layer="c2lst_prediction")


def _flipped_predictor(d: Path) -> None:
    from c2lst.core.predictor import Predictor

    path = predictor().save(d / "pred")
    w = path / "model.safetensors"
    b = bytearray(w.read_bytes())
    b[-64] ^= 0xFF
    w.write_bytes(bytes(b))
    Predictor.load(path)


def _upscaled_mpp(d: Path) -> None:
    import c2lst

    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(60, 200, (96, 96, 3), dtype=np.uint8)).save(d / "tile.png")
    c2lst.io.read_histology(d / "tile.png", mpp=40)


def _mpp_vs_metadata(d: Path) -> None:
    import c2lst

    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(60, 200, (96, 96, 3), dtype=np.uint8)).save(
        d / "tile.png", dpi=(25_400 / 0.97,) * 2)
    c2lst.io.read_histology(d / "tile.png", mpp=40)


def _blank_tiles(d: Path) -> None:
    import c2lst

    c2lst.tl.pretrain(np.full((20, 3, 16, 16), 250, np.uint8), config="tiny", steps=2)


def _flat_panel(d: Path) -> None:
    from c2lst.pp._panel import variance_panel

    train = np.random.default_rng(0).random((6, 4))
    train[:, 2] = 1.0
    variance_panel(train, ["g0", "g1", "g2", "g3"], 1e4, n_top_genes=4, min_spots=0.1)


def _corrupt_latest_checkpoint(d: Path) -> None:
    from c2lst.core import get_config
    from c2lst.core.training import pretrain_central

    tiles = np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8)
    kw = dict(steps=4, batch_size=8, lr=1e-3, seed=0, mixed_precision="no", checkpoint_every=1, progress=False)
    pretrain_central(tiles, get_config("tiny"), out=d / "run", resume=False, **kw)
    latest = max((d / "run" / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    (latest / "state.safetensors").write_bytes(b"cut")
    pretrain_central(tiles, get_config("tiny"), out=d / "run", resume=True, **kw)


def _table_file(kind: str) -> Callable[[Path], None]:
    def run(d: Path) -> None:
        import c2lst

        counts, spots, image = tiny_section(d / "in")
        bad = d / "in" / "bad.tsv.gz"
        raw = counts.read_bytes()
        bad.write_bytes({"empty": b"", "not gzip": gzip.decompress(raw), "truncated gzip": raw[:-40]}[kind])
        guard(d / "in")
        c2lst.io.read_legacy_st(bad, spots, image)
    return run


def _truncated_jpeg_cli(d: Path) -> None:
    counts, spots, image = tiny_section(d / "in")
    jpg = d / "in" / "he.jpg"
    Image.open(image).save(jpg, quality=90)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    (d / "out").mkdir()
    try:
        cli("read", "legacy-st", str(counts), str(spots), str(jpg), "--out", str(d / "out" / "s.zarr"))
    finally:
        if list((d / "out").iterdir()):
            raise RuntimeError(f"left {[p.name for p in (d / 'out').iterdir()]} behind")


def _text_as_jpg(d: Path) -> None:
    import c2lst

    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.jpg").write_text("not an image")
    c2lst.io.read_histology(d / "notes.jpg", mpp=0.5)


def _mpp_text(d: Path) -> None:
    import c2lst

    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(d / "s.png")
    c2lst.io.read_slide(d / "s.png", mpp="abc")


def _manifest_without_checksums(d: Path) -> None:
    from c2lst.core.predictor import Predictor

    path = predictor().save(d / "pred")
    cfg = json.loads((path / "config.json").read_text())
    del cfg["files_sha256"]
    (path / "config.json").write_text(json.dumps(cfg))
    Predictor.load(path)


def _truncated_config_cli(d: Path) -> None:
    path = predictor().save(d / "pred")
    (path / "config.json").write_text((path / "config.json").read_text()[:100])
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(d / "s.png")
    cli("read", "slide", str(d / "s.png"), "--mpp", "1", "--out", str(d / "slide.zarr"))
    cli("predict-slide", str(d / "slide.zarr"), "--model", str(path))


def _bomb(d: Path) -> None:
    import c2lst

    d.mkdir(parents=True, exist_ok=True)
    c2lst.io.read_slide(png_header_only(d / "bomb.png", 100_000, 100_000), mpp=0.5)


CASES = [
    Case("lost", "`c2lst read ... --out mydir --overwrite` (mydir holds a user file)", _read_into_user_folder,
         "Choose another --out", cli=True),
    Case("lost", "`c2lst predict S.zarr --save-model S.zarr --overwrite`", _save_model_is_input,
         "Choose another --save-model", cli=True),
    Case("lost", "`c2lst predict proj/s.zarr --out proj --overwrite`", _out_contains_input, "Choose another --out", cli=True),
    Case("lost", "`c2lst adapt S.zarr --adapter S.zarr --overwrite`", _adapter_is_input, "Choose another --adapter", cli=True),
    Case("lost", "`Predictor.save(user_folder, overwrite=True)`", _predictor_save_user, "move or delete"),
    Case("lost", "`CentralModel.save(user_folder, overwrite=True)`", _central_save_user, "move or delete"),
    Case("lost", "`CentralModel.save(overwrite=True)` killed half-way", _central_interrupted, "old model still loads"),
    Case("unclear", "`tl.pretrain(out=<existing file>)`", _pretrain_out_file, "Choose another `out`"),
    Case("silent", "integer 0/1 `train_mask`", _integer_mask, "astype(bool)"),
    Case("silent", "`tl.predict(synthetic='c2lst_synth')` (typo)", _synthetic_typo, "available tables"),
    Case("silent", "`tl.evaluate(layer='c2lst_prediction')` (typo)", _layer_typo, "pass an existing `layer`"),
    Case("silent", "predictor weights with flipped bits", _flipped_predictor, "Re-create it"),
    Case("silent", "`read_histology(tile, mpp=40)`, 96 px image without metadata", _upscaled_mpp, "Check `mpp`"),
    Case("silent", "`read_histology(tile, mpp=40)`, file says 0.97 µm/px", _mpp_vs_metadata, "force_mpp=True"),
    Case("silent", "pretraining on blank tiles", _blank_tiles, "min_tissue", warns=True),
    Case("silent", "panel gene without variance on the training spots", _flat_panel, "smaller `n_top_genes`", warns=True),
    Case("unclear", "resume with a corrupt latest checkpoint", _corrupt_latest_checkpoint, "resuming from an older one",
         warns=True),
    Case("unclear", "empty counts file", _table_file("empty"), "copy or download the file again"),
    Case("unclear", "counts file named .gz that is not gzip", _table_file("not gzip"), "must hold gzip data"),
    Case("unclear", "truncated gzip counts file", _table_file("truncated gzip"), "copied again"),
    Case("unclear", "`c2lst read` with a truncated JPEG", _truncated_jpeg_cli, "Copy or download it again", cli=True),
    Case("unclear", "a text file named .jpg", _text_as_jpg, "convert it to an RGB JPEG, PNG or TIFF"),
    Case("unclear", "`read_slide(mpp='abc')`", _mpp_text, "`mpp=0.5`"),
    Case("unclear", "predictor manifest without `files_sha256`", _manifest_without_checksums, "Save the predictor again"),
    Case("unclear", "`c2lst predict-slide` with a truncated predictor config.json", _truncated_config_cli,
         "Save or copy it again", cli=True),
    Case("images", "a 100 000 x 100 000 px PNG header (decompression bomb)", _bomb, "max_image_pixels ="),
]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Map each file under ``folder`` to its bytes."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def classify(case: Case, folder: Path) -> tuple[str, str]:
    """Run ``case`` in ``folder``; return (outcome, message)."""
    GUARDED.clear()
    error: BaseException | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            case.run(folder)
        except (Exception, KeyboardInterrupt) as e:  # classified below
            error = e
    if any(snapshot(path) != before for path, before in GUARDED):
        return "lost", "a user file or an input changed"
    if isinstance(error, Lost):
        return "lost", str(error)
    if case.warns:
        text = " ".join(str(w.message) for w in caught if issubclass(w.category, UserWarning))
        if error is not None:  # these inputs deserve a warning and a result, not a failure
            return "unclear", f"{type(error).__name__}: {error}"
        return ("clear" if case.fix in text else "silent"), text or "no warning"
    if error is None:
        return "silent", "no error"
    if case.cli:
        if not isinstance(error, CliFailure):
            return "unclear", f"{type(error).__name__}: {error}"
        lines = error.err.strip().splitlines()
        ok = len(lines) == 1 and "Traceback" not in error.err and case.fix in error.err
        return ("clear" if ok else "unclear"), lines[-1] if lines else ""
    message = f"{type(error).__name__}: {error}"
    return ("clear" if isinstance(error, ValueError) and case.fix in str(error) else "unclear"), message


def render(rows: list[tuple[Case, str, str]]) -> str:
    """Render the markdown page."""
    counts = {o: sum(1 for _, out, _ in rows if out == o) for o in OUTCOMES}
    lines = [
        "# Robustness: bad inputs and faults",
        "",
        "Generated by `scripts/robustness_table.py` (run it to regenerate this page): each row is a bad input or fault",
        "a careful new user could meet, run for real on a tiny synthetic section. The *issue* column is what the",
        "case did before issue 24 (data lost, a silently wrong result, an unclear error, no image size limit); the",
        "*outcome* is what it does now:",
        "",
        "- **clear**: a `ValueError` (CLI: one line on stderr, non-zero exit; `--debug` adds the traceback) naming the",
        "  problem and the fix, with every user file unchanged; plausibility cases warn instead;",
        "- **unclear**: another exception, a traceback, or a message without the fix;",
        "- **silent**: no error or warning although the input is wrong;",
        "- **lost**: a file the user owns, or an input of the call, changed or disappeared.",
        "",
        f"Tried {len(rows)}: clear {counts['clear']}, unclear {counts['unclear']}, silent {counts['silent']}, "
        f"lost {counts['lost']}.",
        "",
        "| issue | input tried | outcome | message (start) |",
        "|---|---|---|---|",
    ]
    for case, outcome, message in rows:
        short = " ".join(message.split())[:150].replace("|", "\\|")
        lines.append(f"| {case.group} | {case.tried} | **{outcome}** | {short} |")
    lines += [
        "",
        "Safety rules behind these outcomes: `overwrite=True` / `--overwrite` replace only a folder carrying the",
        "`.c2lst` marker (or a c2lst manifest) and never an input of the same call, checked before any computation;",
        "folders are replaced atomically (written beside the target, then swapped); every file c2lst loads is",
        "checked against a sha256 manifest; images above `c2lst.settings.max_image_pixels` are refused with the",
        "override; saved files follow the user's umask.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every case and write (or check) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "robustness.md"), help="markdown file to write")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every case is clear (writes nothing)")
    args = parser.parse_args(argv)
    import c2lst

    c2lst.settings.progress_bar = False
    c2lst.settings.verbosity = 40
    rows = []
    with tempfile.TemporaryDirectory(prefix="c2lst_robustness_") as tmp:
        for i, case in enumerate(CASES):
            outcome, message = classify(case, Path(tmp) / f"case{i:02d}")
            rows.append((case, outcome, message.replace(f"{tmp}/case{i:02d}", "TMP")))
            print(f"{outcome:8s} {case.tried}", flush=True)
    if args.check:
        return 0 if all(o == "clear" for _, o, _ in rows) else 1
    Path(args.out).write_text(render(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
