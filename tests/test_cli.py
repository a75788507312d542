from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import c2lst
from c2lst.cli import build_parser, main
from c2lst.core.models import MANIFEST, CentralModel, LocalModel
from c2lst.core.recipe import RECIPE

SUBCOMMANDS = ["read", "pretrain", "adapt", "generate", "predict", "predict-slide", "evaluate", "evaluate-synthetic",
               "benchmark", "demo"]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert sub in out
    for sub in SUBCOMMANDS:
        assert main([sub, "--help"]) == 0
        assert f"usage: c2lst {sub}" in capsys.readouterr().out


def test_usage_errors_exit_2_without_traceback(capsys, tmp_path):
    assert main([]) == 2
    assert main(["nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["adapt", str(tmp_path / "missing.zarr"), "--adapter", str(tmp_path / "ad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("c2lst adapt: error:") and "does not exist" in err and "Traceback" not in err
    assert main(["read", "legacy-st", "only_one_file", "--out", str(tmp_path / "x.zarr")]) == 2
    assert "three inputs" in capsys.readouterr().err


def test_option_names_follow_the_api():
    parser = build_parser()
    adapt = parser.parse_args(["adapt", "s.zarr", "--adapter", "a", "--n-top-genes", "7", "--library-key", "slide"])
    assert adapt.n_top_genes == 7 and adapt.library_key == "slide"
    assert parser.parse_args(["adapt", "s.zarr", "--adapter", "a", "--panel-size", "9"]).n_top_genes == 9  # old name
    assert adapt.local_unconditional is None and adapt.n_comps == 0 and adapt.lora_rank == 0  # the recipe's
    variant = parser.parse_args(["adapt", "s.zarr", "--adapter", "a", "--no-local-unconditional", "--n-comps", "8"])
    assert variant.local_unconditional is False and variant.n_comps == 8
    generate = parser.parse_args(["generate", "s.zarr", "--adapter", "a", "--n-neighs", "3"])
    assert generate.n_neighs == 3 and generate.library_key == "library_id"
    assert generate.guidance_reference == "unconditional"
    vs_mean = parser.parse_args(["generate", "s.zarr", "--adapter", "a", "--guidance-reference", "mean"])
    assert vs_mean.guidance_reference == "mean"
    bench = parser.parse_args(["benchmark"])  # one definition of the sampling options: the same recipe defaults
    assert (generate.sampler, generate.steps, generate.guidance_scale) == (
        bench.sampler, bench.sample_steps, bench.guidance_scale) == (
        RECIPE.sampler, RECIPE.generate_steps, RECIPE.guidance_scale)
    assert parser.parse_args(["evaluate", "s.zarr"]).library_key == "library_id"


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "c2lst", "evaluate", str(tmp_path / "none.zarr")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "does not exist" in proc.stderr


def _store(tmp_path: Path, tiny_files) -> Path:
    out = tmp_path / "tiny.zarr"
    assert main(["--quiet", "read", "legacy-st", *map(str, tiny_files), "--out", str(out)]) == 0
    return out


def test_read_writes_a_store_and_refuses_to_overwrite(tmp_path, tiny_files, capsys):
    import spatialdata

    out = _store(tmp_path, tiny_files)
    sdata = spatialdata.read_zarr(out)
    assert sdata.tables["table"].n_obs == 25
    assert "25 spots x 30 genes" in capsys.readouterr().out
    assert main(["read", "legacy-st", *map(str, tiny_files), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_split_is_stored_and_reused(tmp_path, tiny_files, capsys):
    import spatialdata

    from c2lst.cli import train_mask_of

    out = _store(tmp_path, tiny_files)
    sdata = spatialdata.read_zarr(out)
    table = sdata.tables["table"]
    args = build_parser().parse_args(["predict", str(out), "--fraction", "0.4", "--seed", "3"])
    mask = train_mask_of(table, args, default_all=True)
    assert mask.sum() == 10 and table.obs["c2lst_train"].tolist() == mask.tolist()
    again = build_parser().parse_args(["predict", str(out), "--fraction", "0.4", "--seed", "3"])
    with pytest.raises(ValueError, match="already holds a split"):
        train_mask_of(table, again, default_all=True)
    reuse = build_parser().parse_args(["predict", str(out)])
    assert np.array_equal(train_mask_of(table, reuse, default_all=True), mask)
    bad = build_parser().parse_args(["predict", str(out), "--train-key", "nope"])
    with pytest.raises(ValueError, match="no column"):
        train_mask_of(table, bad, default_all=True)


def test_evaluate_needs_held_out_spots(tmp_path, tiny_files, capsys):
    out = _store(tmp_path, tiny_files)
    assert main(["evaluate", str(out)]) == 2
    assert "no held-out spot" in capsys.readouterr().err


def test_adapt_panel_options_reach_gene_panel(tmp_path, tiny_files, capsys):
    store = _store(tmp_path, tiny_files)
    args = ["--quiet", "adapt", str(store), "--fraction", "0.6", "--adapter", str(tmp_path / "a"), "--n-top-genes", "5"]
    assert main([*args, "--include", "GENE3", "--panel-flavor", "seurat"]) == 2  # refused before any training
    assert "did you mean ['gene3']" in capsys.readouterr().err
    assert build_parser().parse_args(args[1:] + ["--include", "gene3", "gene7"]).include == ["gene3", "gene7"]
    tissue = build_parser().parse_args(args[1:] + ["--tissue-tiles", "500", "--transductive", "C3", "C4"])
    assert tissue.tissue_tiles == 500 and tissue.transductive == ["C3", "C4"]
    assert build_parser().parse_args(args[1:]).tissue_tiles is None
    assert main([*args, "--tissue-tiles", "50", "--transductive", "C9"]) == 2  # refused before any training
    assert "`transductive` names sections ['C9']" in capsys.readouterr().err


def test_evaluate_reads_the_split_recorded_by_predict(tmp_path, tiny_files, capsys):
    """A store predicted in Python (as `c2lst demo` writes it) has no obs['c2lst_train']: evaluate uses the split."""
    import spatialdata

    sdata = c2lst.io.read_legacy_st(*tiny_files)
    c2lst.pp.extract_patches(sdata, patch_px=16)
    mask = np.arange(sdata.tables["table"].n_obs) % 3 != 0
    c2lst.tl.predict(sdata, train_mask=mask, synthetic=None, n_top_genes=8, seed=0)
    sdata.write(tmp_path / "p.zarr")
    capsys.readouterr()
    assert main(["--quiet", "evaluate", str(tmp_path / "p.zarr")]) == 0
    assert f"{int((~mask).sum())} held-out spots, 8 genes" in capsys.readouterr().out
    assert spatialdata.read_zarr(tmp_path / "p.zarr").tables["table"].uns["c2lst_eval"]["params"]


@pytest.mark.slow
def test_pipeline_from_the_command_line(tmp_path, tiny_files, capsys):
    import spatialdata

    store = _store(tmp_path, tiny_files)
    central, adapter = tmp_path / "central", tmp_path / "adapter"
    image = tiny_files[2]
    assert main(["--quiet", "pretrain", str(image), "--mpp", "2.0", "--config", "tiny", "--steps", "4",
                 "--tile-px", "32", "--out", str(central)]) == 0
    assert (central / MANIFEST).is_file()
    refined = tmp_path / "refined"
    assert main(["--quiet", "pretrain", str(image), "--mpp", "2.0", "--init", str(central), "--steps", "2",
                 "--tile-px", "32", "--out", str(refined)]) == 0
    assert CentralModel.load(refined).summary["init_weights_sha256"] == CentralModel.load(central).weights_sha256
    lora = ["--lora-rank", "2"] if importlib.util.find_spec("peft") else []  # peft: a test dependency
    assert main(["--quiet", "adapt", str(store), "--fraction", "0.6", "--central", str(central), "--adapter",
                 str(adapter), "--steps", "2", "--n-top-genes", "10", *lora]) == 0
    assert LocalModel.load(adapter, CentralModel.load(central)).lora_rank == (2 if lora else 0)
    assert main(["--quiet", "generate", str(store), "--central", str(central), "--adapter", str(adapter),
                 "--steps", "2"]) == 0
    assert main(["--quiet", "predict", str(store), "--encoder", "handcrafted", "--n-augment", "1"]) == 0
    csv = tmp_path / "eval.csv"
    capsys.readouterr()
    assert main(["--quiet", "evaluate", str(store), "--csv", str(csv)]) == 0
    assert "tiny: 10 held-out spots, 10 genes: mean Pearson r" in capsys.readouterr().out
    sdata = spatialdata.read_zarr(store)
    table = sdata.tables["table"]
    assert table.obs["c2lst_train"].sum() == 15
    assert "c2lst_pred" in table.layers and "c2lst_eval" in table.uns
    assert table.uns["c2lst_pred"]["params"]["n_augment"] == 1
    assert sdata.tables["c2lst_synthetic"].n_obs == 15
    assert set(table.uns["c2lst_pred"]["params"]["train_spots"]) == set(table.obs_names[table.obs["c2lst_train"]])
    assert csv.read_text().startswith("section,gene,pearson")
    metrics = tmp_path / "synthetic.json"
    assert main(["--quiet", "evaluate-synthetic", str(store), "--json", str(metrics)]) == 0
    out = capsys.readouterr().out
    assert "Fréchet" in out and "real vs real" in out and "memorisation" in out
    m = json.loads(metrics.read_text())
    assert m["n_floor"] == 7 and m["n_real"] == 15  # the 15 training spots are the reference, in halves of 7
    stored = spatialdata.read_zarr(store).tables["c2lst_synthetic"].uns["c2lst_synthetic_eval"]
    assert stored["params"]["n_train"] == 15 and stored["metrics"]["frechet"] == pytest.approx(m["frechet"])
    assert main(["evaluate-synthetic", str(store)]) == 2  # refuses to overwrite its record
    # a second adapt refuses to overwrite the split and the adapter
    assert main(["adapt", str(store), "--fraction", "0.6", "--central", str(central), "--adapter", str(adapter)]) == 2


def test_new_slide_from_the_command_line(tmp_path, tiny_files, capsys):
    import spatialdata

    from c2lst.core.predictor import Predictor

    store, model, slide = _store(tmp_path, tiny_files), tmp_path / "pred", tmp_path / "slide.zarr"
    assert main(["--quiet", "predict", str(store), "--synthetic", "none", "--fraction", "0.6",
                 "--save-model", str(model)]) == 0
    assert "saved the fitted predictor" in capsys.readouterr().out
    assert main(["predict", str(store), "--synthetic", "none", "--overwrite", "--save-model", str(model)]) == 0
    assert main(["predict", str(store), "--synthetic", "none", "--save-model", str(model)]) == 2  # refused first
    assert "already exists" in capsys.readouterr().err
    assert main(["read", "slide", str(tiny_files[2]), "--out", str(slide)]) == 2
    assert "Pass `mpp=`" in capsys.readouterr().err
    assert main(["read", "legacy-st", *map(str, tiny_files), "--mpp", "2", "--out", str(tmp_path / "x.zarr")]) == 2
    assert main(["--quiet", "read", "slide", str(tiny_files[2]), "--mpp", "2.0", "--library-id", "new",
                 "--out", str(slide)]) == 0
    assert "image 'new_image' at 2 µm/px (given)" in capsys.readouterr().out
    args = ["--quiet", "predict-slide", str(slide), "--model", str(model), "--grid-um", "150", "--min-tissue", "0"]
    assert main(args) == 0  # in place: the circles and the table are added to the store
    assert "pseudo-spots x" in capsys.readouterr().out
    sdata = spatialdata.read_zarr(slide)
    grid = sdata.tables["c2lst_slide"]
    assert len(sdata.shapes["c2lst_slide_spots"]) == grid.n_obs > 4 and list(sdata.images) == ["new_image"]
    fitted = Predictor.load(model)
    assert list(grid.var_names) == fitted.genes
    np.testing.assert_allclose(grid.X, fitted.predict(np.asarray(grid.obsm["c2lst_patch"])), rtol=1e-5, atol=1e-6)
    assert main(args[1:]) == 2 and "overwrite" in capsys.readouterr().err  # nothing replaced without --overwrite
    assert main([*args, "--grid-um", "100", "--lattice", "hex", "--overwrite"]) == 0
    hex_grid = spatialdata.read_zarr(slide).tables["c2lst_slide"]
    assert hex_grid.n_obs > grid.n_obs and hex_grid.uns["c2lst_slide"]["params"]["lattice"] == "hex"
    assert ((hex_grid.obs["array_col"] + hex_grid.obs["array_row"]) % 2 == 0).all()
    assert main(["predict-slide", str(slide), "--model", str(tmp_path / "none")]) == 2
    assert "make one with `c2lst predict --save-model DIR`" in capsys.readouterr().err


@pytest.mark.slow
def test_benchmark_quick(tmp_path, shared_data, capsys):
    out = tmp_path / "bench"
    assert main(["--quiet", "benchmark", "--quick", "--root", str(shared_data / "her2st"), "--conditions",
                 "handcrafted", "real", "--encoder", "cnn", "--out", str(out)]) == 0
    assert (out / "results.csv").exists() and (out / "pcc_vs_fraction.png").stat().st_size > 0
    assert "runs; results.csv" in capsys.readouterr().out


@pytest.mark.slow
def test_demo_without_central_model_stops_after_patches(tmp_path, capsys, monkeypatch):
    from c2lst.datasets import _central

    monkeypatch.setattr(_central, "CENTRAL_DIR", tmp_path / "absent")
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "patch tensor (187, 3, 64, 64) uint8" in printed and (out / "patches.png").stat().st_size > 0
    assert "no shipped central model" in printed and not (out / "evaluation.csv").exists()


@pytest.mark.slow
def test_demo_fast(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "demo section C2: 187 spots x 2000 genes" in printed
    assert "patch tensor (187, 3, 64, 64) uint8" in printed and (out / "patches.png").stat().st_size > 0
    for name in ("spatial_genes.png", "synthetic_grid.png", "embedding_overlap.png", "evaluation.csv"):
        assert (out / name).stat().st_size > 0
    assert "C2: 93 held-out spots" in printed  # 94 of 187 spots train (fraction 0.5)


def test_predict_options_match_tl_predict_and_the_benchmark():
    import inspect

    from c2lst.benchmark import run_benchmark

    args = build_parser().parse_args(["predict", "store.zarr"])
    tl_defaults = inspect.signature(c2lst.tl.predict).parameters
    bench = inspect.signature(run_benchmark).parameters
    for name in ("encoder", "synthetic_weight", "synthetic_align", "n_augment", "augment_weight"):
        assert getattr(args, name) == tl_defaults[name].default, name
    for name in ("synthetic_weight", "synthetic_align"):  # the benchmark measures what tl.predict does by default
        assert bench[name].default == tl_defaults[name].default, name
    assert inspect.signature(c2lst.tl.run).parameters["encoder"].default == tl_defaults["encoder"].default
    from c2lst.cli import DEMO_SETTINGS
    from c2lst.core.recipe import RECIPE

    # the demo runs the recipe: its adaptation and denoising steps and tiles per profile are the recipe's
    assert DEMO_SETTINGS["default"][:3] == (RECIPE.adapt_steps, RECIPE.n_per_profile, RECIPE.generate_steps)
    assert build_parser().parse_args(["predict", "store.zarr", "--synthetic-align", "none"]).synthetic_align is None


def test_benchmark_options_match_the_module_defaults():
    import inspect

    from c2lst.benchmark import run_benchmark

    args = build_parser().parse_args(["benchmark", "--adapt-steps", "7"])
    defaults = inspect.signature(run_benchmark).parameters
    assert args.adapt_steps == 7 and args.encoder == defaults["encoder"].default
    plain = build_parser().parse_args(["benchmark"])
    for name in ("adapt_steps", "decoder_steps", "strength", "local_steps", "synthetic_weight", "synthetic_align",
                 "group_norm", "tissue_tiles", "guidance_scale", "guidance_reference"):
        assert getattr(plain, name) == defaults[name].default, name
    chosen = build_parser().parse_args(["benchmark", "--synthetic-weight", "cv", "--synthetic-align", "moments"])
    assert (chosen.synthetic_weight, chosen.synthetic_align) == ("cv", "moments")
    assert build_parser().parse_args(["benchmark", "--synthetic-weight", "0.25"]).synthetic_weight == 0.25
    assert build_parser().parse_args(["benchmark", "--guidance-reference", "mean"]).guidance_reference == "mean"
    assert main(["benchmark", "--synthetic-weight", "half"]) == 2
    from c2lst.benchmark import main as module_main  # python -m c2lst.benchmark is the same command line

    assert module_main(["--synthetic-weight", "half"]) == 2 and module_main(["--help"]) == 0


def test_benchmark_report_writes_the_committed_results_page(tmp_path, capsys):
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    page = tmp_path / "README.md"
    assert main(["benchmark-report", str(root / "measured"), "--out", str(page)]) == 0
    assert page.read_text() == (root / "README.md").read_text()  # the committed page is the command's output
    assert main(["benchmark-report", str(tmp_path / "nothing")]) != 0
    assert "loso_per_section.csv" in capsys.readouterr().err
