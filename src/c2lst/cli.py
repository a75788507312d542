"""Command line interface: ``c2lst <subcommand>`` mirrors :mod:`c2lst.tl` on SpatialData zarr stores.

Every subcommand reads a SpatialData zarr store (``spatialdata.read_zarr``) and writes what it computed back
into it (tables, and the circles of ``predict-slide``; images are never rewritten), or into a new store with ``--out``; models are
``save_pretrained``-style directories (``config.json`` + ``*.safetensors``). User errors print one line on
stderr and exit with status 2, any other failure one line and status 1 (``--debug``: the traceback);
``--overwrite`` replaces only stores and models c2lst wrote, never an input of the same command;
``--help`` documents each subcommand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .files import atomic_dir, check_output, write_atomic, write_marker

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

TRAIN_KEY = "c2lst_train"
EXIT_USER_ERROR = 2
EXIT_FAILURE = 1


class UserError(ValueError):
    """A problem with the command line input (missing file, bad option combination)."""


# ----------------------------------------------------------------------------------------------------- stores
def read_store(path: str | Path) -> SpatialData:
    """Read a SpatialData zarr store, with a clear error when it is missing."""
    import spatialdata

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist; create a store with `c2lst read ...` or `c2lst demo --out DIR`.")
    return spatialdata.read_zarr(path)


def write_store(sdata: SpatialData, source: Path | None, out: str | Path | None, elements: Sequence[str], *,
                overwrite: bool = False) -> Path:
    """Save ``sdata``: the whole object to a new store ``out`` (temp dir + rename), else ``elements`` in place.

    ``elements`` are names of tables or shapes, written in that order (circles before the table annotating them).
    """
    if out is None:
        if source is None:
            raise UserError("pass --out to choose where to write the SpatialData store.")
        for name in elements:
            replace_element(sdata, source, name)
        return source
    out = check_output(out, overwrite=overwrite, inputs=[source], what="--out", flag="--overwrite",
                       hint=" (or omit --out to update the input store in place)")
    with atomic_dir(out, kind="store") as tmp:  # a failed write leaves no temporary folder and the old store
        tmp.rmdir()  # SpatialData.write creates the folder itself
        sdata.write(tmp)
    return out


def check_outputs(args: argparse.Namespace, inputs: Sequence[str | Path | None],
                  outputs: Sequence[tuple[str, str | Path | None]] = ()) -> None:
    """Refuse ``--out`` and the model folders in ``outputs`` before any computation (see :func:`check_output`).

    ``outputs`` holds ``(option, path)`` pairs; a path that is ``None`` is skipped. None of them may be, contain or
    lie inside an input of the command, be a file, or be a folder c2lst did not write.
    """
    inputs = [p for p in inputs if p is not None and p != "default"]
    for option, path in [("--out", getattr(args, "out", None)), *outputs]:
        if path is not None:
            hint = " (or omit --out to update the input store in place)" if option == "--out" else ""
            check_output(path, overwrite=args.overwrite, inputs=inputs, what=option, flag="--overwrite", hint=hint)


def replace_element(sdata: SpatialData, store: Path, name: str) -> None:
    """Write table or shapes ``name`` into ``store``: to a temporary element first, then swapped in by a rename."""
    kind = next((k for k in ("tables", "shapes") if name in getattr(sdata, k)), None)
    if kind is None:
        raise ValueError(f"no table or shapes element {name!r} to write.")
    elements = getattr(sdata, kind)
    tmp = f"c2lst_tmp_{name}"
    elements[tmp] = elements[name]
    try:
        sdata.write_element(tmp)
    finally:
        del elements[tmp]
    if (store / kind / name).exists():
        sdata.delete_element_from_disk(name)
    os.replace(store / kind / tmp, store / kind / name)
    sdata.write_consolidated_metadata()


def spot_table_of(sdata: SpatialData, table_key: str | None) -> tuple[AnnData, str]:
    """Return the spot table (not a synthetic one) and its name."""
    from .get import spot_table

    _, table, name = spot_table(sdata, table_key)
    return table, name


def open_spots(args: argparse.Namespace, *, default_all: bool
               ) -> tuple[SpatialData, Path, AnnData, str, np.ndarray | None]:
    """Read the store ``--sdata``; return it, its path, the spot table, its name and the training mask."""
    source = Path(args.sdata)
    sdata = read_store(source)
    table, name = spot_table_of(sdata, args.table_key)
    return sdata, source, table, name, train_mask_of(table, args, default_all=default_all)


def train_mask_of(table: AnnData, args: argparse.Namespace, *, default_all: bool) -> np.ndarray | None:
    """Training mask from ``--train-key`` (a boolean obs column) or ``--fraction`` (new seeded split).

    A new split is stored in ``obs[--train-key]`` (default ``c2lst_train``) so later subcommands reuse it.
    Without either option the stored ``obs['c2lst_train']`` is used if present, else all spots
    (``default_all``) or ``None``.
    """
    from .pp import split_spots

    key = args.train_key or TRAIN_KEY
    if getattr(args, "fraction", None) is not None:
        if key in table.obs and not args.overwrite:
            raise UserError(f"obs[{key!r}] already holds a split; pass --overwrite or --train-key NEW_COLUMN.")
        return split_spots(table, fraction=args.fraction, seed=args.seed, library_key=args.library_key, key_added=key,
                           overwrite=True)
    if key in table.obs:
        col = table.obs[key]
        if col.dtype != bool:
            raise UserError(f"obs[{key!r}] must be a boolean column (True = training spot), got {col.dtype}.")
        return col.to_numpy()
    if args.train_key:
        raise UserError(f"no column obs[{args.train_key!r}] in the table; make one with --fraction F.")
    return np.ones(table.n_obs, dtype=bool) if default_all else None


def model_dir(path: str, what: str, maker: str) -> Path:
    """``path`` as an existing model directory; the error names the command that makes one."""
    if not Path(path).is_dir():
        raise UserError(f"{what} directory {path} not found; make one with {maker}.")
    return Path(path)


def load_central(spec: str) -> Any:
    """``default`` -> the shipped central model; else a saved central model directory."""
    from . import CentralModel
    from .datasets import central_default

    if spec == "default":
        return central_default()
    if not Path(spec).is_dir():
        raise UserError(f"central model directory {spec} not found; train one with `c2lst pretrain` or use 'default'.")
    return CentralModel.load(spec)


# ------------------------------------------------------------------------------------------------ subcommands
def cmd_read(args: argparse.Namespace) -> int:
    """Read raw data into a SpatialData zarr store."""
    from . import io

    if args.mpp is not None and args.format != "slide":
        raise UserError(f"--mpp is for `read slide`; {args.format} takes the resolution from its spot positions.")
    check_outputs(args, args.inputs)
    if args.format == "slide":
        if len(args.inputs) != 1:
            raise UserError("slide needs one input: the H&E image file.")
        sdata = io.read_slide(args.inputs[0], mpp=args.mpp, library_id=args.library_id, force_mpp=args.force_mpp)
        out = write_store(sdata, None, args.out, [], overwrite=args.overwrite)
        (key, record), = sdata.attrs["c2lst"]["images"].items()
        print(f"wrote {out}: image {key!r} at {record['mpp']:.4g} µm/px ({record['mpp_source']})")
        return 0
    if args.format == "legacy-st":
        if len(args.inputs) != 3:
            raise UserError("legacy-st needs three inputs: COUNTS.tsv.gz SPOTS_selection.tsv IMAGE.jpg.")
        sdata = io.read_legacy_st(*args.inputs, **({"library_id": args.library_id} if args.library_id else {}))
    elif args.format == "hest":
        if len(args.inputs) != 2:
            raise UserError("hest needs two inputs: the HEST-1k ROOT (holding st/, wsis/, metadata/) and the SAMPLE_ID.")
        sdata = io.read_hest(*args.inputs, **({"library_id": args.library_id} if args.library_id else {}))
    else:
        if len(args.inputs) != 1:
            raise UserError("visium needs one input: the Space Ranger output folder.")
        sdata = io.read_visium(args.inputs[0])
    out = write_store(sdata, None, args.out, [], overwrite=args.overwrite)
    table, _ = spot_table_of(sdata, None)
    print(f"wrote {out}: {table.n_obs} spots x {table.n_vars} genes")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain a central model on histology-only images (or refine one with --init)."""
    from . import io, tl

    check_outputs(args, [*args.images, args.init])
    init = None if args.init is None else load_central(args.init)
    tiles = io.read_histology(args.images, mpp=args.mpp, tile_um=args.tile_um, tile_px=args.tile_px,
                              max_tiles=args.max_tiles, seed=args.seed, force_mpp=args.force_mpp,
                              lazy=True)  # streamed
    model = tl.pretrain(tiles, config=args.config, init=init, steps=args.steps, seed=args.seed, out=args.out,
                        resume=args.resume, overwrite=args.overwrite)
    print(f"saved central model to {args.out}: {model!r}")
    return 0


def cmd_adapt(args: argparse.Namespace) -> int:
    """Adapt a central model to a section's spots; save the adapter."""
    from . import pp, tl

    check_outputs(args, [args.sdata, args.central], [("--adapter", args.adapter)])
    sdata, source, table, name, mask = open_spots(args, default_all=True)
    central = load_central(args.central)
    if "c2lst_patch" not in table.obsm:  # at the central model's tile size, like the synthetic patches
        pp.extract_patches(sdata, patch_px=central.tile_px, table_key=name)
    if "lognorm" not in table.layers:
        pp.normalize(sdata, train_mask=mask, table_key=name)
    if "c2lst_panel" not in table.uns or args.overwrite:  # a stored panel is reused unless replaced
        pp.gene_panel(sdata, n_top_genes=min(args.n_top_genes, table.n_vars), train_mask=mask, table_key=name,
                      flavor=args.panel_flavor, include=args.include, overwrite=args.overwrite)
    local = tl.adapt(sdata, central, train_mask=mask, steps=args.steps, decoder_steps=args.decoder_steps,
                     table_key=name, seed=args.seed, overwrite=args.overwrite, tissue=args.tissue_tiles,
                     transductive=args.transductive or (), local_unconditional=args.local_unconditional,
                     n_comps=args.n_comps, lora_rank=args.lora_rank)
    local.save(args.adapter, overwrite=args.overwrite)
    write_store(sdata, source, args.out, [name], overwrite=args.overwrite)
    print(f"saved adapter to {args.adapter} ({int(mask.sum())} training spots, {local.n_trainable:,} parameters)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Generate synthetic patches with an adapted local model."""
    from . import LocalModel, tl

    check_outputs(args, [args.sdata, args.adapter, args.central])
    source = Path(args.sdata)
    sdata = read_store(source)
    local = LocalModel.load(model_dir(args.adapter, "adapter", "`c2lst adapt`"), load_central(args.central))
    tl.generate(sdata, local, source=args.source, n_per_profile=args.n_per_profile, n_neighs=args.n_neighs,
                library_key=args.library_key, sampler=args.sampler, steps=args.steps,
                guidance_scale=args.guidance_scale, guidance_reference=args.guidance_reference, strength=args.strength,
                seed=args.seed, table_key=args.table_key, key_added=args.key_added, overwrite=args.overwrite)
    write_store(sdata, source, args.out, [args.key_added], overwrite=args.overwrite)
    print(f"added table {args.key_added!r}: {sdata.tables[args.key_added].n_obs} synthetic patches")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Train the histology -> expression predictor on the training spots and predict every spot."""
    from . import pp, tl

    check_outputs(args, [args.sdata, args.central if args.encoder == "central" else None],
                  [("--save-model", args.save_model)])
    sdata, source, table, name, mask = open_spots(args, default_all=True)
    if "c2lst_patch" not in table.obsm:
        pp.extract_patches(sdata, table_key=name)
    synthetic = None if args.synthetic == "none" else args.synthetic
    kwargs = {"central": load_central(args.central)} if args.encoder == "central" else {}
    model = tl.predict(sdata, train_mask=mask, synthetic=synthetic, encoder=args.encoder, table_key=name,
                       seed=args.seed, synthetic_weight=args.synthetic_weight, synthetic_align=args.synthetic_align,
                       n_augment=args.n_augment, augment_weight=args.augment_weight, groupby=args.groupby,
                       batch_key=args.batch_key, alpha_cv=args.alpha_cv, overwrite=args.overwrite, **kwargs)
    write_store(sdata, source, args.out, [name], overwrite=args.overwrite)
    print(f"added .layers['c2lst_pred'] to table {name!r} ({int(mask.sum())} training spots)")
    if args.save_model is not None:
        print(f"saved the fitted predictor to {model.save(args.save_model, overwrite=args.overwrite)} "
              "(map a new slide with `c2lst predict-slide STORE --model DIR`)")
    return 0


def cmd_predict_slide(args: argparse.Namespace) -> int:
    """Map expression onto an H&E image without spots: a grid of pseudo-spots scored by a saved predictor."""
    from . import Predictor, tl
    from .core.checkpoint import read_json

    check_outputs(args, [args.sdata, args.model, args.central])
    source = Path(args.sdata)
    sdata = read_store(source)
    config = model_dir(args.model, "predictor", "`c2lst predict --save-model DIR`") / "config.json"
    needs_central = read_json(config, what="predictor").get("encoder") == "central"  # load checks the rest
    model = Predictor.load(args.model, central=load_central(args.central) if needs_central else None)
    tl.predict_slide(sdata, model, image_key=args.image_key, mpp=args.mpp, grid_um=args.grid_um, spot_um=args.spot_um,
                     lattice=args.lattice, min_tissue=args.min_tissue, key_added=args.key_added, overwrite=args.overwrite)
    write_store(sdata, source, args.out, [f"{args.key_added}_spots", args.key_added], overwrite=args.overwrite)
    table = sdata.tables[args.key_added]
    print(f"added table {args.key_added!r} and circles {args.key_added + '_spots'!r}: {table.n_obs} pseudo-spots x "
          f"{table.n_vars} genes")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Per-gene Pearson r of the prediction on the held-out spots."""
    from . import tl

    check_outputs(args, [args.sdata])
    sdata, source, table, name, mask = open_spots(args, default_all=False)
    if mask is None:  # the split tl.predict recorded (c2lst predict, demo)
        from .get import recorded_train_mask

        mask = recorded_train_mask(table, "c2lst_pred")
    if mask is None or mask.all():
        raise UserError("no held-out spot: evaluate needs a training split (--train-key COLUMN or --fraction F, "
                        "the same as for predict).")
    result = tl.evaluate(sdata, train_mask=mask, library_key=args.library_key, table_key=name,
                         overwrite=args.overwrite)
    if args.csv:
        write_atomic(args.csv, lambda tmp: result.to_csv(tmp, index=False))
    write_store(sdata, source, args.out, [name], overwrite=args.overwrite)
    print(evaluation_summary(table))
    return 0


def evaluation_summary(table: AnnData, key: str = "c2lst_eval") -> str:
    """One line per section from ``uns[key]['summary']`` (written by :func:`c2lst.tl.evaluate`)."""
    n_top = table.uns[key]["params"]["n_top_hvg"]

    def moran(s: dict[str, float]) -> str:
        r = s.get("moran_r", float("nan"))
        return "" if not np.isfinite(r) else (f"; Moran's I, predicted vs measured: r {r:.2f}, mean difference "
                                              f"{s['moran_mean_diff']:+.3f}")

    return "\n".join(f"{sec}: {int(s['n_test'])} held-out spots, {int(s['n_genes'])} genes: mean Pearson r "
                     f"{s['mean_pearson']:.3f} (top-{n_top} variable genes {s['mean_pearson_top_hvg']:.3f}){moran(s)}"
                     for sec, s in table.uns[key]["summary"].items())


def cmd_evaluate_synthetic(args: argparse.Namespace) -> int:
    """Fidelity (with its real-vs-real floor), composition and memorisation of a synthetic table."""
    from . import tl

    check_outputs(args, [args.sdata, args.central if args.features == "central" else None])
    sdata, source, _, name, mask = open_spots(args, default_all=False)
    central = load_central(args.central) if args.features == "central" else None
    metrics = tl.evaluate_synthetic(sdata, synthetic=args.synthetic, table_key=name, train_mask=mask,
                                    features=args.features, central=central, seed=args.seed,
                                    overwrite=args.overwrite)
    if args.json:
        write_atomic(args.json, lambda tmp: tmp.write_text(json.dumps(metrics, indent=1) + "\n"))
    write_store(sdata, source, args.out, [args.synthetic], overwrite=args.overwrite)
    print(synthetic_summary(metrics))
    return 0


def synthetic_summary(m: dict[str, float]) -> str:
    """Fidelity against the real-vs-real floor, composition and memorisation, from :func:`c2lst.tl.evaluate_synthetic`."""
    lines = [f"Fréchet {m['frechet']:.2f}, KID {m['kid']:.4f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
             f"coverage {m['coverage']:.3f}, diversity {m['diversity_ratio']:.3f}, out of range {m['out_of_range']:.3f}"]
    if "frechet_floor" in m:
        lines.append(f"at {int(m['n_floor'])} tiles each: Fréchet {m['frechet_vs_half']:.2f} (real vs real "
                     f"{m['frechet_floor']:.2f}), precision {m['precision_vs_half']:.3f} ({m['precision_floor']:.3f}), "
                     f"recall {m['recall_vs_half']:.3f} ({m['recall_floor']:.3f})")
    lines.append(f"nuclei per patch {m['nuclei_count_synthetic']:.1f} (real {m['nuclei_count_real']:.1f})")
    if "nn_ratio" in m:
        lines.append(f"memorisation: nearest training patch {m['nn_ratio']:.2f}x as far as for held-out spots "
                     "(< 1: closer than unseen real patches)")
    return "\n".join(lines)


def save_patch_grid(patches: np.ndarray, path: Path, *, n: int = 32, seed: int = 0) -> Path:
    """Save a grid of ``n`` randomly chosen ``(3, h, w)`` patches as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idx = np.sort(np.random.default_rng(seed).choice(len(patches), size=min(n, len(patches)), replace=False))
    cols = 8
    rows = int(np.ceil(len(idx) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.1), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, i in zip(axes.ravel(), idx, strict=False):
        ax.imshow(np.moveaxis(patches[i], 0, -1))
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


DEMO_SETTINGS = {  # (adapt steps, synthetic patches per profile, denoising steps, predictor encoder)
    "default": (300, 2, 50, "handcrafted"),  # the recipe's steps (RECIPE); timing: the --steps help
    "fast": (4, 1, 4, "handcrafted"),
}


def run_demo(out: Path, *, steps: int | None = None, fast: bool = False, seed: int = 0) -> int:
    """Run the recipe on :func:`c2lst.datasets.demo` and save figures, the evaluation and the store to ``out``.

    Without a shipped central model only the patches are extracted and summarised (``patches.png``).
    """
    import matplotlib

    matplotlib.use("Agg")
    from . import datasets, pl, pp, tl

    check_output(out, overwrite=True, what="--out", flag="a new --out", allow_existing=True)  # never a user folder
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo")
    sdata = datasets.demo()
    table, name = spot_table_of(sdata, None)
    spatial = table.uns["c2lst"]["spatial"]
    print(f"demo section {', '.join(table.obs['library_id'].astype(str).unique())}: {table.n_obs} spots x "
          f"{table.n_vars} genes, {spatial['mpp']:.4f} µm/px ({spatial['mpp_source']})")
    pp.extract_patches(sdata, table_key=name)
    patches = np.asarray(table.obsm["c2lst_patch"])
    print(f"patch tensor {patches.shape} {patches.dtype} (100 µm per patch): {save_patch_grid(patches, out / 'patches.png', seed=seed)}")
    try:
        central = datasets.central_default()
    except (NotImplementedError, ValueError, OSError) as err:
        print(f"no shipped central model ({type(err).__name__}: {err or 'not available'}): "
              "stopping after the patch summary.")
        return 0
    adapt_steps, n_synthetic, denoise_steps, encoder = DEMO_SETTINGS["fast" if fast else "default"]
    result = tl.run(sdata, central=central, fraction=0.5, adapt_steps=steps or adapt_steps, n_synthetic=n_synthetic,
                    generate_steps=denoise_steps, encoder=encoder, table_key=name, seed=seed)
    result.evaluation.to_csv(out / "evaluation.csv", index=False)
    best = result.top_genes(3)
    figures = {
        "spatial_genes.png": lambda p: pl.spatial_genes(sdata, best, train_mask=result.train_mask, show=False, save=p),
        "synthetic_grid.png": lambda p: pl.synthetic_grid(sdata, groupby="cluster", seed=seed, show=False, save=p),
        "embedding_overlap.png": lambda p: pl.embedding_overlap(sdata, method="pca" if fast else "umap", seed=seed,
                                                                show=False, save=p),
    }
    import matplotlib.pyplot as plt

    for filename, draw in figures.items():
        draw(out / filename)
        plt.close("all")
    write_store(sdata, None, out / "demo.zarr", [], overwrite=True)
    print(evaluation_summary(table))
    print(f"best genes: {', '.join(best)}")
    print(f"saved {', '.join(figures)}, evaluation.csv, demo.zarr and patches.png to {out}/")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the README's main job on the bundled demo section."""
    return run_demo(Path(args.out), steps=args.steps, fast=args.fast, seed=args.seed)


# ---------------------------------------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, *, store: bool = True, split: bool = False) -> None:
    if store:
        p.add_argument("sdata", help="SpatialData zarr store (updated in place unless --out is given)")
        p.add_argument("--out", help="write the updated SpatialData to this new store instead")
        p.add_argument("--table-key", help="table to use when the store holds several")
    if split:
        _add_library_key(p)
        p.add_argument("--train-key", help=f"boolean obs column marking training spots (default: {TRAIN_KEY!r} if present)")
        p.add_argument("--fraction", type=float, help=f"new seeded random split: this share of each section's spots "
                       f"trains (stored in obs[--train-key or {TRAIN_KEY!r}])")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace existing results instead of refusing")


def _add_library_key(p: argparse.ArgumentParser) -> None:
    p.add_argument("--library-key", default="library_id",
                   help="obs column naming each spot's section; absent: one section (default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``c2lst`` argument parser."""
    from . import __version__, benchmark
    from .core.recipe import RECIPE
    from .pp import PANEL_FLAVORS

    parser = argparse.ArgumentParser(
        prog="c2lst", description="C2L-ST: central-to-local adaptive diffusion for data-limited spatial transcriptomics.",
        epilog="Typical run: c2lst read legacy-st C.tsv.gz C_selection.tsv C.jpg --out s.zarr; "
               "c2lst adapt s.zarr --fraction 0.5 --adapter ad/; c2lst generate s.zarr --adapter ad/; "
               "c2lst predict s.zarr --save-model pred/; c2lst evaluate s.zarr. A new H&E slide: "
               "c2lst read slide new.jpg --mpp 0.5 --out new.zarr; c2lst predict-slide new.zarr --model pred/.")
    parser.add_argument("--version", action="version", version=f"c2lst {__version__}")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or log messages")
    parser.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    sub = parser.add_subparsers(
        dest="command",
        metavar="{read,pretrain,adapt,generate,predict,predict-slide,evaluate,evaluate-synthetic,benchmark,benchmark-report,demo}")

    p = sub.add_parser("read", help="read raw data (legacy ST, Visium, HEST-1k or an H&E slide alone) into a SpatialData "
                       "zarr store")
    p.add_argument("format", choices=["legacy-st", "visium", "hest", "slide"])
    p.add_argument("inputs", nargs="+",
                   help="legacy-st: COUNTS SPOTS IMAGE; visium: the Space Ranger folder; hest: the HEST-1k ROOT and "
                        "SAMPLE_ID; slide: the H&E IMAGE")
    p.add_argument("--out", required=True, help="SpatialData zarr store to create")
    p.add_argument("--library-id", help="section or slide name (legacy-st, hest, slide; default from the file names)")
    p.add_argument("--mpp", type=float, help="slide: µm per full-resolution pixel (default from the file's metadata)")
    p.add_argument("--force-mpp", action="store_true", help="use --mpp even where the file's metadata disagrees")
    p.add_argument("--overwrite", action="store_true", help="replace an existing store")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("pretrain", help="pretrain a central model on histology-only images")
    p.add_argument("images", nargs="+", help="image files or folders (tif, png, jpg, svs)")
    p.add_argument("--out", required=True, help="central model directory to write")
    p.add_argument("--config", choices=["tiny", "cpu", "gpu"], help="model size (default cpu, or --init's)")
    p.add_argument("--init", help="refine this central model (a saved directory or 'default', the shipped one) "
                                  "instead of training from scratch: its autoencoder is kept, its UNet trained on")
    p.add_argument("--steps", type=int, help="training steps (default from the config)")
    p.add_argument("--mpp", type=float, help="µm per pixel of the images when their metadata lacks it")
    p.add_argument("--force-mpp", action="store_true", help="use --mpp even where the files' metadata disagrees")
    p.add_argument("--tile-um", type=float, default=100.0, help="tile side in µm (default 100, one ST spot)")
    p.add_argument("--tile-px", type=int, default=64, help="tile side in pixels (default 64)")
    p.add_argument("--max-tiles", type=int, help="at most this many tiles (seeded subsample)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    _add_common(p, store=False)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("adapt", help="adapt a central model to a section's (patch, expression) spots")
    _add_common(p, split=True)
    p.add_argument("--adapter", required=True, help="adapter directory to write (shares only the adapter)")
    p.add_argument("--central", default="default", help="central model directory, or 'default' (shipped)")
    p.add_argument("--steps", type=int, help="adaptation steps (default from the central model's config)")
    p.add_argument("--decoder-steps", type=int,
                   help="local decoder fine-tuning steps (0: keep the central decoder; default min(200, steps))")
    p.add_argument("--n-top-genes", "--panel-size", dest="n_top_genes", type=int, default=RECIPE.n_top_genes,
                   help="genes in the panel (default %(default)s; --panel-size is its deprecated old name)")
    p.add_argument("--panel-flavor", default="variance", choices=list(PANEL_FLAVORS),
                   help="how panel genes are ranked on the training spots (scanpy's highly_variable_genes flavors)")
    p.add_argument("--include", nargs="+", metavar="GENE", help="genes forced into the panel, e.g. --include ERBB2")
    p.add_argument("--tissue-tiles", type=int, metavar="N",
                   help="also train the local stage on N unlabelled tissue tiles of the training sections' images "
                        "(spots outside the split excluded; default: none)")
    p.add_argument("--local-unconditional", action=argparse.BooleanOptionalAction, default=None,
                   help="the modulation's unconditional local component (default: the recipe's, and always with "
                        "--tissue-tiles)")
    p.add_argument("--n-comps", type=int, default=RECIPE.n_comps, metavar="K",
                   help="the gene encoder reads K principal components of the panel (default %(default)s: the panel)")
    p.add_argument("--lora-rank", type=int, default=RECIPE.lora_rank, metavar="R",
                   help="LoRA adapters of rank R on a copy of the central UNet, trained with the modulation "
                        "(tl.adapt(lora_rank=); needs peft; default: %(default)s, none)")
    p.add_argument("--transductive", nargs="+", metavar="NAME",
                   help="sections without training spots whose images --tissue-tiles may tile too (transductive use "
                        "of a test image)")
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("generate", help="generate synthetic patches conditioned on expression")
    _add_common(p)
    p.add_argument("--adapter", required=True, help="adapter directory from `c2lst adapt`")
    p.add_argument("--central", default="default", help="the central model the adapter was trained on")
    p.add_argument("--source", default="mixup", choices=["spots", "mixup"], help="conditioning profiles (default mixup)")
    p.add_argument("--n-per-profile", type=int, default=1, help="patches per profile (default 1)")
    p.add_argument("--n-neighs", type=int, default=RECIPE.n_neighs,
                   help="spatial neighbours a mixup partner is drawn from (default %(default)s)")
    _add_library_key(p)
    benchmark.add_sampling_arguments(p, steps_flag="--steps")
    p.add_argument("--strength", type=float,
                   help="share of the denoising path; < 1 starts each patch from its source spot's patch (default "
                        f"{RECIPE.strength}, the recipe's)")
    p.add_argument("--key-added", default="c2lst_synthetic", help="name of the synthetic table")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("predict", help="train the histology -> expression predictor and predict every spot")
    _add_common(p, split=True)
    p.add_argument("--synthetic", default="c2lst_synthetic", help="synthetic table to augment with, or 'none'")
    p.add_argument("--encoder", default="handcrafted", choices=["handcrafted", "central", "cnn"],
                   help="patch encoder (default %(default)s)")
    p.add_argument("--central", default="default", help="central model for --encoder central")
    benchmark.add_synthetic_row_arguments(p)
    p.add_argument("--n-augment", type=int, default=0,
                   help="flip/rot90/stain-jitter copies of each training patch added to the fit (default %(default)s)")
    p.add_argument("--augment-weight", type=float, default=1.0,
                   help="sample weight of each augmented copy (default %(default)s)")
    p.add_argument("--groupby", help="obs column of the spots (e.g. 'section') for --synthetic-weight cv")
    p.add_argument("--batch-key", help="obs column of the spots' section/slide: standardise each section's features "
                                       "on its own patches (e.g. 'library_id')")
    p.add_argument("--alpha-cv", choices=["loo", "groups"], default="loo",
                   help="ridge penalties by leave-one-out or by leaving out one --batch-key (else --groupby) group at a "
                        "time (default %(default)s)")
    p.add_argument("--save-model", metavar="DIR",
                   help="also save the fitted predictor to this directory (for `c2lst predict-slide`)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("predict-slide", help="map expression onto an H&E slide without spots (grid of pseudo-spots)")
    _add_common(p)
    p.add_argument("--model", required=True, help="predictor directory from `c2lst predict --save-model`")
    p.add_argument("--central", default="default", help="central model of a predictor with --encoder central")
    p.add_argument("--image-key", help="image to tile when the store holds several")
    p.add_argument("--mpp", type=float, help="µm per full-resolution pixel (default: recorded by `c2lst read slide`, "
                                             "or from a spot table on the same image)")
    p.add_argument("--grid-um", type=float, default=200.0, help="distance between pseudo-spots in µm (default 200)")
    p.add_argument("--spot-um", type=float, default=100.0,
                   help="pseudo-spot diameter in µm: the predictor's patch size (default 100)")
    p.add_argument("--lattice", choices=("square", "hex"), default="square",
                   help="square grid (legacy ST, the default) or hexagonal with six neighbours (Visium)")
    p.add_argument("--min-tissue", type=float, default=0.5, help="minimum tissue share of a pseudo-spot (default 0.5)")
    p.add_argument("--key-added", default="c2lst_slide", help="table to write; its circles are KEY_spots")
    p.set_defaults(func=cmd_predict_slide)

    p = sub.add_parser("evaluate", help="per-gene Pearson r on the held-out spots")
    _add_common(p, split=True)
    p.add_argument("--csv", help="write the per-gene table to this CSV file")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("evaluate-synthetic",
                       help="fidelity, composition and memorisation of synthetic patches against the training spots")
    _add_common(p)
    p.add_argument("--train-key", help=f"boolean obs column of the spots the generator was adapted on (default: "
                                       f"{TRAIN_KEY!r} if present, else the synthetic table's record)")
    p.add_argument("--synthetic", default="c2lst_synthetic", help="synthetic table (default %(default)s)")
    p.add_argument("--features", default="handcrafted", choices=["handcrafted", "central"],
                   help="feature space (default %(default)s: no weights needed)")
    p.add_argument("--central", default="default", help="central model for --features central")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.set_defaults(func=cmd_evaluate_synthetic)

    p = sub.add_parser("benchmark", help="the data-limited benchmark on her2st (leave one section out)")
    benchmark.add_run_arguments(p)
    p.set_defaults(func=benchmark.run_command)

    p = sub.add_parser("benchmark-report", help="write benchmarks/README.md from the committed benchmark tables")
    benchmark.add_report_arguments(p)
    p.set_defaults(func=benchmark.report_command)

    p = sub.add_parser("demo", help="run the whole recipe on the bundled demo section and save figures")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--steps", type=int, help="adaptation steps (default 300: the demo takes about 4 minutes on 2 CPU cores)")
    p.add_argument("--fast", action="store_true", help="tiny settings (a minute; for smoke tests)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=cmd_demo)
    return parser


def one_line(err: BaseException) -> str:
    """Return the message of ``err`` on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``c2lst`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return int(exit_.code or 0)
    if args.command is None:
        parser.print_help()
        return EXIT_USER_ERROR
    from . import settings

    before = (settings.progress_bar, settings.verbosity)
    if args.quiet:
        import logging

        settings.progress_bar = False
        settings.verbosity = logging.WARNING
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*zarr v3 autosharding.*")
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, NotADirectoryError, FileExistsError) as err:
        if args.debug:
            traceback.print_exc()
        print(f"c2lst {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"c2lst {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # anything else: one line (the traceback with --debug), never a raw dump
        if args.debug:
            traceback.print_exc()
        print(f"c2lst {args.command}: error: {type(err).__name__}: {one_line(err)} (rerun with --debug for the "
              "traceback and report it if the message does not say what to change)", file=sys.stderr)
        return EXIT_FAILURE
    finally:  # main() is also called in-process (tests, notebooks): leave the settings as they were
        settings.progress_bar, settings.verbosity = before


if __name__ == "__main__":
    sys.exit(main())
