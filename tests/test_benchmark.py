from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from c2lst.benchmark import CONDITIONS, run_benchmark, summarize
from c2lst.benchmark._conditions import CachedFeatures
from c2lst.benchmark._data import CACHE_FORMAT
from c2lst.benchmark._results import labelled
from c2lst.core.recipe import RECIPE, spatial_mixup
from c2lst.io._histology import TISSUE_DETECTOR

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "her2st"


def _fake_sections(folder: Path, n_sections: int = 2, n: int = 24, genes: int = 40, n_tissue: int = 20) -> None:
    """Sections whose first genes follow the patch colour, written in the benchmark's cache format (tissue tiles too)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(n_sections):
        base = rng.integers(40, 210, size=(n, 3, 1, 1))
        patches = np.clip(base + rng.integers(-30, 30, size=(n, 3, 64, 64)), 0, 255).astype(np.uint8)
        colour = patches.mean(axis=(2, 3))
        counts = rng.poisson(5, size=(n, genes)).astype(np.float32)
        counts[:, :3] = rng.poisson(np.exp(colour / 40))  # log-linear in the channel means: the top HVGs
        xy = np.c_[np.arange(n) % 6, np.arange(n) // 6].astype(float)
        tissue = np.clip(base[:1] + rng.integers(-40, 40, size=(n_tissue, 3, 64, 64)), 0, 255).astype(np.uint8)
        np.savez_compressed(folder / f"S{s}.npz", patches=patches, counts=counts, library=counts.sum(1, dtype=np.float64),
                            genes=np.array([f"g{i}" for i in range(genes)]), xy=xy, tissue=tissue,
                            format=CACHE_FORMAT, tissue_detector=TISSUE_DETECTOR)


def test_quick_benchmark_all_conditions_on_synthetic_sections(tmp_path):
    cache = tmp_path / "cache"
    _fake_sections(cache)
    out = tmp_path / "out"
    df = run_benchmark(("S0", "S1"), quick=True, out_dir=out, cache_dir=cache, n_top_genes=3, grids=True)
    assert set(df["condition"]) == set(CONDITIONS) and len(df) == len(CONDITIONS)
    assert df["test_section"].unique().tolist() == ["S0"] and df["fraction"].unique().tolist() == [0.5]
    assert np.isfinite(df["pcc"]).all() and (df["n_train"] == 12).all()
    extra = df.set_index("condition")["n_extra"]
    assert extra["augment"] == 24 and extra["c2l"] == 12 and extra["local_only"] == 12 and extra["real"] == 0
    assert extra["c2l_tissue"] == extra["local_only_tissue"] == extra["refined_tissue"] == extra["c2l_oracle"] == 12
    n_tissue = df.set_index("condition")["n_tissue"]  # the quick budget: 16 of the training section's 20 tiles
    assert n_tissue["c2l_tissue"] == n_tissue["local_only_tissue"] == n_tissue["refined_tissue"] == 16
    assert n_tissue["c2l"] == 0
    detector = df.set_index("condition")["tissue_detector"]
    assert detector["c2l_tissue"] == detector["local_only_tissue"] == detector["refined_tissue"] == TISSUE_DETECTOR
    assert detector["c2l"] == 0
    assert extra["spatial_mixup"] == 24 and extra["c2l_augment"] == extra["c2l"] + extra["augment"]
    weight = df.set_index("condition")["extra_weight"]
    assert weight["augment"] == 1.0 and weight["c2l_augment"] == weight["c2l"] and np.isnan(weight["real"])
    timed = df.set_index("condition")["t_diffusion_s"]  # c2l_augment reuses the fold's c2l tiles
    assert timed["c2l"] > 0 and np.isnan(timed["c2l_augment"])
    c2l = df.set_index("condition").loc["c2l"]  # adaptation and generation are parts of the diffusion stage
    assert 0 < c2l["t_adapt_s"] and 0 < c2l["t_generate_s"] and c2l["t_adapt_s"] + c2l["t_generate_s"] <= c2l["t_diffusion_s"]
    assert df.set_index("condition").loc["mixup", "n_mixup"] == 24
    # the diffusion-feature conditions read the real pairs only; real_adapted reuses the fold's c2l adapter
    pcc = df.set_index("condition")["pcc"]
    assert extra["real_central"] == extra["real_adapted"] == extra["real_adapted_only"] == 0
    assert len({pcc["real"], pcc["real_central"], pcc["real_adapted"], pcc["real_adapted_only"]}) == 4
    assert np.isnan(df.set_index("condition").loc["real_adapted", "t_adapt_s"])
    assert (df["alpha_cv"] == "loo").all() and (df["lora_rank"] == 0).all()
    by = df.set_index("condition")  # the generation settings are recorded with the diffusion rows only
    assert by.loc["c2l", "sampler"] == RECIPE.sampler and by.loc["c2l", "guidance_scale"] == RECIPE.guidance_scale
    assert np.isnan(by.loc["real", "guidance_scale"]) and by["sampler"].fillna("").loc["real"] == ""
    assert by.loc["c2l", "guidance_reference"] == RECIPE.guidance_reference
    assert by["guidance_reference"].fillna("").loc["real"] == ""
    assert by.loc["c2l", "generate_steps"] == 3 and by.loc["real", "generate_steps"] == 0  # the quick recipe's
    assert by.loc["c2l", "adapt_steps"] == by.loc["real_adapted", "adapt_steps"] == 4 and by.loc["real", "adapt_steps"] == 0
    alone = run_benchmark(("S0", "S1"), quick=True, out_dir=tmp_path / "alone", cache_dir=cache, n_top_genes=3,
                          conditions=("real_adapted_only",))  # adapts its own modulation: the same as c2l's
    assert alone.loc[0, "t_adapt_s"] > 0 and alone.loc[0, "pcc"] == pcc["real_adapted_only"]
    _fake_sections(tmp_path / "three", n_sections=3)  # two training sections to hold out in turn
    held = run_benchmark(("S0", "S1", "S2"), fractions=(0.5,), seeds=(0,), test_sections=("S0",),
                         out_dir=tmp_path / "held", cache_dir=tmp_path / "three", n_top_genes=3,
                         conditions=("handcrafted", "real", "mixup"), alpha_cv="groups", group_norm=True)
    assert held.set_index("condition")["alpha_cv"].to_dict() == {"handcrafted": "loo", "real": "groups", "mixup": "groups"}
    assert {"t_fit_s", "mem_fit_mb", "t_diffusion_s", "t_pretrain_local_s"} <= set(df.columns)
    for name in ("results.csv", "synthetic.csv", "summary.md", "meta.json", "pcc_vs_fraction.png"):
        assert (out / name).stat().st_size > 0
    syn = pd.read_csv(out / "synthetic.csv")
    assert set(syn["condition"]) == {"c2l", "c2l_oracle", "local_only", "c2l_tissue", "local_only_tissue", "refined_tissue"}
    # one grid per generator (c2l_augment reuses c2l's tiles), named as the results page labels its rows
    grids = {p.name: p for p in (out / "grids").iterdir()}
    assert set(grids) == {f"{label}_S0_f0.5_s0.png" for label in labelled(syn)["condition"]}
    assert "c2l_tissue+s3+a4_S0_f0.5_s0.png" in grids  # the quick recipe's steps
    image = plt.imread(grids["c2l_tissue+s3+a4_S0_f0.5_s0.png"])
    assert image.shape[1] > 3 * image.shape[0] and image[..., :3].std() > 0.05  # 17 patches wide, not blank
    assert {"frechet", "precision", "nn_ratio"} <= set(syn.columns)
    assert {"frechet_floor", "frechet_vs_half", "n_floor"} <= set(syn.columns)  # 12 paired spots: 6 per half
    # each generator's ceiling on the held-out section: reconstructions of half B against half A, beside B itself
    assert {"frechet_ceiling", "frechet_heldout_floor", "precision_ceiling", "mae_ceiling"} <= set(syn.columns)
    assert (syn["mae_ceiling"] > 0).all() and (syn["frechet_ceiling"] > syn["frechet_heldout_floor"]).all()
    # tl.evaluate_conditioning on the held-out section, read by the fold's real-pairs predictor
    assert (syn["cond_n"] == df["n_test"].iloc[0]).all() and syn["cond_delta_r"].between(-1, 1).all()
    assert (syn["cond_loss_own"] > 0).all() and "t_conditioning_s" in df.columns
    text = (out / "summary.md").read_text()
    assert "| handcrafted |" in text and "f=0.5" in text and "top-3 training HVGs" in text
    # the colour-driven genes are learnable: the floor beats chance on held-out spots
    assert df.set_index("condition").loc["handcrafted", "pcc"] > 0.5


def test_quick_benchmark_synthetic_weight_and_align(tmp_path):
    cache = tmp_path / "cache"
    _fake_sections(cache)
    df = run_benchmark(("S0", "S1"), quick=True, out_dir=tmp_path / "out", cache_dir=cache, n_top_genes=3,
                       conditions=("handcrafted", "c2l"), synthetic_weight=0.5, synthetic_align="moments")
    rows = df.set_index("condition")
    assert rows.loc["c2l", "extra_weight"] == 0.5 and np.isnan(rows.loc["handcrafted", "extra_weight"])
    assert np.isfinite(rows["pcc"]).all()


def test_quick_benchmark_group_norm(tmp_path):
    import json

    cache = tmp_path / "cache"
    _fake_sections(cache)
    kw = {"quick": True, "cache_dir": cache, "n_top_genes": 3, "conditions": ("handcrafted", "real", "augment", "spatial_mixup")}
    plain = run_benchmark(("S0", "S1"), out_dir=tmp_path / "plain", **kw).set_index("condition")["pcc"]
    normed = run_benchmark(("S0", "S1"), out_dir=tmp_path / "out", group_norm=True, **kw).set_index("condition")["pcc"]
    assert normed["handcrafted"] == plain["handcrafted"]  # the floor is never standardised per section
    assert np.isfinite(normed).all() and normed["real"] != plain["real"]
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["group_norm"] is True


def test_held_out_section_tiles_never_reach_adapt(tmp_path, monkeypatch):
    """c2l_tissue / local_only_tissue / refined_tissue: tl.adapt and tl.pretrain get tissue tiles of the training
    sections only, seeded, the same for each."""
    import c2lst
    from c2lst.benchmark._data import load_sections

    cache = tmp_path / "cache"
    _fake_sections(cache, n_sections=2, n_tissue=20)
    data = {s.name: s for s in load_sections(("S0", "S1"), cache_dir=cache, tissue=True)}
    seen, models, pretrained = [], [], []
    adapt, pretrain = c2lst.tl.adapt, c2lst.tl.pretrain

    def spy(sdata, central, **kw):
        seen.append(kw.get("tissue"))
        models.append(central)
        return adapt(sdata, central, **kw)

    def spy_pretrain(images, **kw):
        model = pretrain(images, **kw)
        pretrained.append((images, kw.get("init"), model))
        return model

    monkeypatch.setattr(c2lst.tl, "adapt", spy)
    monkeypatch.setattr(c2lst.tl, "pretrain", spy_pretrain)
    run_benchmark(("S0", "S1"), quick=True, out_dir=tmp_path / "out", cache_dir=cache, n_top_genes=3,
                  conditions=("c2l", "c2l_tissue", "local_only_tissue", "refined_tissue"), tissue_tiles=12)
    assert seen[0] is None and len(seen) == 4  # c2l, then the three tissue conditions
    held = {t.tobytes() for t in data["S0"].tissue}  # quick mode holds out the first section
    train = {t.tobytes() for t in data["S1"].tissue}
    for tiles in seen[1:]:
        got = {t.tobytes() for t in tiles}
        assert len(tiles) == 12 and got <= train and not got & held
    assert np.array_equal(seen[1], seen[2]) and np.array_equal(seen[1], seen[3])  # the same tiles for each
    # the quick central model, then the local-only model (from scratch) and the refined one (from the central
    # model), both trained on the training patches and the same tiles
    (_, _, central), (local_only, scratch, _), (refined, init, _) = pretrained
    assert scratch is None and init is central and np.array_equal(local_only, refined)
    # c2l and c2l_tissue adapt the central model, the other two the model trained for them
    assert models[0] is models[1] is central and models[2] is pretrained[1][2] and models[3] is pretrained[2][2]
    assert {t.tobytes() for t in seen[2]} <= {t.tobytes() for t in local_only}
    assert not {t.tobytes() for t in local_only} & held
    with pytest.raises(ValueError, match="tissue_tiles"):
        run_benchmark(("S0", "S1"), tissue_tiles=0, out_dir=tmp_path)


def test_oracle_adapts_on_every_training_spot_and_generates_for_the_paired_ones(tmp_path, monkeypatch):
    """c2l_oracle: its adapter reads every spot of the training sections (never the held-out one) with the fold's
    panel; its tiles are generated for the same paired spots' profiles as c2l's."""
    import c2lst
    from c2lst.benchmark._conditions import diffusion_pairs
    from c2lst.benchmark._data import load_sections
    from c2lst.benchmark._fold import every_spot, make_fold

    cache = tmp_path / "cache"
    _fake_sections(cache)
    data = load_sections(("S0", "S1"), cache_dir=cache)
    fold = make_fold(data, "S0", 0.5, 0, n_top_genes=3)
    full = every_spot(fold)
    assert full.panel is fold.panel and len(full.patches) == len(full.y) == 24 and (full.group == 0).all()
    assert np.array_equal(full.y[fold.picks[0]], fold.y) and np.array_equal(full.patches[fold.picks[0]], fold.patches)
    with pytest.raises(ValueError, match="gene panel"):  # another fold's panel would condition on other genes
        diffusion_pairs(None, fold, out_px=64, adapt_on=make_fold(data, "S0", 1.0, 0, n_top_genes=3))
    adapted, generated = [], []
    adapt, generate = c2lst.tl.adapt, c2lst.tl.generate

    def spy_adapt(sdata, central, **kw):
        adapted.append((sdata.tables["table"].obs_names[kw["train_mask"]].tolist(), kw["panel"]))
        return adapt(sdata, central, **kw)

    def spy_generate(sdata, local, **kw):
        out = generate(sdata, local, **kw)
        syn = sdata.tables[kw["key_added"]]
        generated.append((syn.obs[["source_spot", "partner_spot", "mix_weight", "seed"]].copy(), np.asarray(syn.X)))
        return out

    monkeypatch.setattr(c2lst.tl, "adapt", spy_adapt)
    monkeypatch.setattr(c2lst.tl, "generate", spy_generate)
    df = run_benchmark(("S0", "S1"), quick=True, out_dir=tmp_path / "out", cache_dir=cache, n_top_genes=3,
                       conditions=("real", "c2l", "c2l_oracle"))
    (paired, panel), (every, oracle_panel) = adapted
    assert paired == [f"S1-{i}" for i in fold.picks[0]] and sorted(every) == sorted(f"S1-{i}" for i in range(24))
    assert oracle_panel is panel  # the fold's panel, fitted on the paired spots
    (obs, profiles), (oracle_obs, oracle_profiles) = generated  # the same sources, partners, weights, seeds
    pd.testing.assert_frame_equal(obs, oracle_obs)
    assert np.array_equal(profiles, oracle_profiles) and set(oracle_obs["source_spot"]) <= set(paired)
    rows = df.set_index("condition")
    assert rows.loc["c2l_oracle", "n_train"] == rows.loc["real", "n_train"] == 12  # the predictor's pairs
    assert rows.loc["c2l_oracle", "n_extra"] == rows.loc["c2l", "n_extra"] and np.isfinite(rows["pcc"]).all()


def test_benchmark_bad_input(tmp_path):
    with pytest.raises(ValueError, match="synthetic_weight"):
        run_benchmark(("S0", "S1"), synthetic_weight="half", out_dir=tmp_path)
    with pytest.raises(ValueError, match="synthetic_weight"):
        run_benchmark(("S0", "S1"), synthetic_weight="cv", encoder="cnn", out_dir=tmp_path)
    with pytest.raises(ValueError, match="c2l_augment"):
        run_benchmark(("S0", "S1"), synthetic_weight="cv", conditions=("c2l_augment",), out_dir=tmp_path)
    with pytest.raises(ValueError, match="synthetic_align"):
        run_benchmark(("S0", "S1"), synthetic_align="coral", out_dir=tmp_path)
    with pytest.raises(ValueError, match="group_norm"):
        run_benchmark(("S0", "S1"), group_norm=True, encoder="cnn", out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown conditions"):
        run_benchmark(("S0", "S1"), conditions=("gan",), out_dir=tmp_path)
    with pytest.raises(ValueError, match="two sections"):
        run_benchmark(("S0",), out_dir=tmp_path)
    with pytest.raises(ValueError, match="fractions"):
        run_benchmark(("S0", "S1"), fractions=(0.0,), out_dir=tmp_path)
    with pytest.raises(ValueError, match="not found"):
        run_benchmark(("S0", "S1"), root=tmp_path, out_dir=tmp_path, conditions=("handcrafted",))
    with pytest.raises(ValueError, match="pass `n_top_genes` only"):  # n_top: the old name, warns alone
        run_benchmark(("S0", "S1"), n_top=3, n_top_genes=3, out_dir=tmp_path)


def test_summary_reads_tables_written_with_the_old_meta_key():
    from c2lst.benchmark._report import markdown

    rows = pd.DataFrame({"condition": ["real", "real"], "fraction": [0.5, 0.5], "seed": [0, 1],
                         "test_section": ["S0", "S0"], "pcc": [0.3, 0.4], "t_fit_s": [1.0, 1.0]})
    assert "top-7 training HVGs" in markdown(rows, pd.DataFrame(), {"n_top": 7})
    assert "top-9 training HVGs" in markdown(rows, pd.DataFrame(), {"n_top_genes": 9})


def test_benchmark_refuses_a_fraction_too_small_for_a_section(tmp_path):
    cache = tmp_path / "cache"
    _fake_sections(cache, n=24)
    _fake_sections(tmp_path / "small", n_sections=1, n=8)
    (tmp_path / "small" / "S0.npz").rename(cache / "S2.npz")
    kw = {"fractions": (0.125,), "conditions": ("handcrafted",), "cache_dir": cache, "n_top_genes": 3}
    with pytest.raises(ValueError, match=r"section 'S2' has 8 spots: fraction 0.125 pairs 1 .* at least 0.25"):
        run_benchmark(("S0", "S2"), out_dir=tmp_path / "out", **kw)
    assert not (tmp_path / "out" / "results.csv").exists()  # refused before any fold ran
    # S2 trains only when another section is held out: holding out S2 alone needs nothing of it
    df = run_benchmark(("S0", "S2"), out_dir=tmp_path / "ok", test_sections=("S2",), **kw)
    assert (df["n_train"] == 3).all()  # round(0.125 * 24) of S0's spots (tl.predict needs at least 3)


def test_summarize_spread_over_seeds():
    df = pd.DataFrame({"condition": "real", "fraction": 0.5, "test_section": ["A", "B", "A", "B"],
                       "seed": [0, 0, 1, 1], "pcc": [0.2, 0.4, 0.4, 0.6]})
    s = summarize(df).iloc[0]
    assert s["mean"] == pytest.approx(0.4) and s["min"] == pytest.approx(0.3) and s["max"] == pytest.approx(0.5)
    assert s["n_folds"] == 2 and s["n_seeds"] == 2
    assert s["std"] == pytest.approx(0.1 * np.sqrt(2))  # sample sd of the seeds' fold means 0.3 and 0.5
    one = summarize(df[df["seed"] == 0]).iloc[0]
    assert one["n_seeds"] == 1 and np.isnan(one["std"])  # one seed: no spread, not a zero spread


def test_helpers_mixup_and_cache():
    z = np.arange(12, dtype=np.float32).reshape(6, 2)
    xy = np.c_[np.arange(6), np.zeros(6)].astype(float)
    mixed, src, partner, w = spatial_mixup(z, xy, np.array([0, 0, 0, 1, 1, 1]), n_per_profile=2, seed=0)
    assert mixed.shape == (12, 2) and ((src < 3) == (partner < 3)).all()  # partners from the same section
    np.testing.assert_allclose(mixed, w[:, None] * z[src] + (1 - w[:, None]) * z[partner], rtol=1e-6)
    assert ((w >= RECIPE.mix_range[0]) & (w <= RECIPE.mix_range[1])).all()
    again = spatial_mixup(z, xy, np.array([0, 0, 0, 1, 1, 1]), n_per_profile=2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (mixed, src, partner, w), strict=True))
    with pytest.raises(ValueError, match="two training spots in one section"):
        spatial_mixup(z[:2], xy[:2], np.array([0, 1]), n_per_profile=1)
    with pytest.raises(ValueError, match="mix_range"):
        spatial_mixup(z, xy, n_per_profile=1, mix_range=(0.9, 0.2))
    p = np.random.default_rng(0).integers(0, 256, (3, 3, 64, 64), dtype=np.uint8)
    calls = []
    cached = CachedFeatures(lambda x: calls.append(len(x)) or x.reshape(len(x), -1)[:, :2].astype(float), "f")
    first = cached(p)
    assert np.array_equal(cached(p[::-1]), first[::-1]) and calls == [3]


def test_benchmark_tiles_equal_tl_generate_bit_for_bit(tmp_path):
    """The benchmark's c2l tiles for a fold are a user's tl.adapt + tl.generate on the same spots and seed."""
    from dataclasses import replace

    import anndata as ad
    from spatialdata import SpatialData

    import c2lst
    from c2lst.benchmark import diffusion_pairs
    from c2lst.benchmark._data import load_sections
    from c2lst.benchmark._fold import make_fold
    from c2lst.core.images import resize_tiles

    c2lst.settings.progress_bar = False
    _fake_sections(tmp_path, n_sections=3)
    data = load_sections(("S0", "S1", "S2"), cache_dir=tmp_path)
    fold = make_fold(data, "S1", 0.5, seed=2, n_top_genes=5)
    central = c2lst.tl.pretrain(np.concatenate([s.patches for s in fold.train]), config="tiny", steps=4, seed=0)
    recipe = replace(RECIPE, n_top_genes=5, adapt_steps=3, decoder_steps=2, generate_steps=2)
    tiles, profiles, src, _, _ = diffusion_pairs(central, fold, recipe=recipe, adapt_batch_size=4, out_px=64)
    assert len(tiles) == len(profiles) == len(src) == 2 * len(fold.patches)

    # the user's way: every spot and gene of the two training sections, the paired spots as the training mask
    train = fold.train
    table = ad.AnnData(np.concatenate([s.counts for s in train]).astype(np.float64))
    table.var_names = list(train[0].genes)
    table.obs_names = [f"{s.name}-{i}" for s in train for i in range(len(s.patches))]
    table.obs["library_id"] = [s.name for s in train for _ in range(len(s.patches))]
    table.obsm["spatial"] = np.concatenate([s.xy for s in train])
    table.obsm["c2lst_patch"] = np.concatenate([s.patches for s in train])
    sdata = SpatialData(tables={"table": table})
    mask = table.obs_names.isin([f"{s.name}-{i}" for s, p in zip(train, fold.picks, strict=True) for i in p])
    panel = c2lst.pp.gene_panel(sdata, n_top_genes=5, train_mask=mask)
    assert panel == fold.panel
    local = c2lst.tl.adapt(sdata, central, panel=panel, train_mask=mask, steps=3, batch_size=4, decoder_steps=2,
                           seed=2)
    c2lst.tl.generate(sdata, local, source="mixup", n_per_profile=2, steps=2, seed=2)
    syn = sdata.tables["c2lst_synthetic"]
    assert np.array_equal(resize_tiles(np.asarray(syn.obsm["c2lst_patch"]), 64), tiles)
    assert np.array_equal(np.asarray(syn.X), profiles)
    assert list(syn.obs["source_spot"]) == list(np.asarray(table.obs_names[mask])[src])
    # section-aware: every partner is from its source's section; the recipe's weights
    lib = table.obs["library_id"]
    assert (lib[syn.obs["source_spot"]].to_numpy() == lib[syn.obs["partner_spot"]].to_numpy()).all()
    assert syn.obs["mix_weight"].between(*RECIPE.mix_range).all()
    assert syn.uns["c2lst_synthetic"]["params"]["train_spots"] == list(table.obs_names[mask])
    # another seed gives other tiles (the equality above is not trivial)
    other, _, _, _, _ = diffusion_pairs(central, replace(fold, seed=3), recipe=recipe, adapt_batch_size=4, out_px=64)
    assert not np.array_equal(other, tiles)


@pytest.mark.slow
@pytest.mark.data
def test_quick_benchmark_on_her2st(tmp_path):
    if not (ROOT / "C2").exists():
        pytest.skip("her2st data not available")
    df = run_benchmark(("C2", "C3"), root=ROOT, quick=True, out_dir=tmp_path, conditions=("handcrafted", "real"))
    assert len(df) == 2 and (df["n_test"] == 187).all() and df["pcc"].between(0.05, 0.9).all()


def test_make_fold_fits_on_paired_training_spots_only(tmp_path):
    from c2lst.benchmark._data import Section, load_sections
    from c2lst.benchmark._fold import make_fold

    _fake_sections(tmp_path, n_sections=3)
    data = load_sections(("S0", "S1", "S2"), cache_dir=tmp_path)
    fold = make_fold(data, "S1", 0.5, seed=3, n_top_genes=5)
    assert [s.name for s in fold.train] == ["S0", "S2"] and fold.test.name == "S1"
    assert len(fold.patches) == len(fold.y) == len(fold.group) == 24 and set(fold.group) == {0, 1}
    # what is not paired (the test section, the unpaired training spots) can change without changing the fit
    unpaired = [np.setdiff1d(np.arange(24), p) for p in fold.picks]
    changed = []
    for s in data:
        counts = s.counts.copy()
        if s.name == "S1":
            counts[:] = counts[::-1] * 7 + 1
        else:
            counts[unpaired[0 if s.name == "S0" else 1]] *= 50
        changed.append(Section(s.name, s.patches, counts, counts.sum(1, dtype=np.float64), s.genes, s.xy))
    other = make_fold(changed, "S1", 0.5, seed=3, n_top_genes=5)
    assert other.panel.genes == fold.panel.genes and other.panel.target_sum == fold.panel.target_sum
    assert np.array_equal(other.y, fold.y) and np.array_equal(other.panel.mean, fold.panel.mean)
    assert not np.allclose(other.truth(), fold.truth())
    assert np.array_equal(make_fold(data, "S1", 0.5, seed=3, n_top_genes=5).picks[1], fold.picks[1])
    with pytest.raises(ValueError, match="not among the sections"):
        make_fold(data, "S9", 0.5, seed=3)


def test_fold_panel_is_pp_gene_panel_on_the_paired_spots(tmp_path):
    import anndata as ad

    import c2lst
    from c2lst.benchmark._data import load_sections
    from c2lst.benchmark._fold import make_fold

    _fake_sections(tmp_path, n_sections=3)
    data = load_sections(("S0", "S1", "S2"), cache_dir=tmp_path)
    fold = make_fold(data, "S0", 0.5, seed=1, n_top_genes=5)
    paired = ad.AnnData(np.concatenate([s.counts[p] for s, p in zip(fold.train, fold.picks, strict=True)]))
    paired.var_names = list(fold.test.genes)
    panel = c2lst.pp.gene_panel(paired, n_top_genes=5)
    assert panel == fold.panel and panel.params == fold.panel.params
    c2lst.pp.normalize(paired, target_sum=panel.target_sum)
    np.testing.assert_array_equal(panel.expression(paired), fold.y)


def test_load_sections_reads_the_data_folder_of_c2lst_data_dir(tmp_path, tiny_writer, monkeypatch):
    from c2lst.benchmark._data import load_sections

    tiny_writer(tmp_path / "data" / "tiny", image_format="jpg")
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no ../shared/data/her2st beside the working directory
    (sec,) = load_sections(("tiny",), cache_dir=tmp_path / "cache")
    assert sec.name == "tiny" and sec.patches.shape == (25, 3, 64, 64) and sec.counts.shape == (25, 30)
    assert (tmp_path / "cache" / "tiny.npz").exists()
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path / "elsewhere"))  # the cache needs no data folder
    assert load_sections(("tiny",), cache_dir=tmp_path / "cache")[0].counts.shape == (25, 30)
    assert sec.tissue.shape == (144, 3, 64, 64) and sec.tissue.dtype == np.uint8  # the whole image, tiled
    # a cache written before tissue tiles were cached is read again when they are needed
    with np.load(tmp_path / "cache" / "tiny.npz") as z:
        np.savez_compressed(tmp_path / "cache" / "tiny.npz", **{k: z[k] for k in z.files if k != "tissue"})
    assert load_sections(("tiny",), cache_dir=tmp_path / "cache")[0].tissue is None
    with pytest.raises(ValueError, match="not found under"):
        load_sections(("tiny",), cache_dir=tmp_path / "cache", tissue=True)
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path / "data"))
    again = load_sections(("tiny",), cache_dir=tmp_path / "cache", tissue=True)[0]
    assert np.array_equal(again.tissue, sec.tissue)
    with np.load(tmp_path / "cache" / "tiny.npz") as z:
        assert "tissue" in z.files
    # tissue tiles of an earlier tissue detector are not used: read again when needed (the rest of the cache holds)
    with np.load(tmp_path / "cache" / "tiny.npz") as z:
        np.savez_compressed(tmp_path / "cache" / "tiny.npz", **{k: z[k] for k in z.files if k != "tissue_detector"})
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path / "elsewhere"))
    assert load_sections(("tiny",), cache_dir=tmp_path / "cache")[0].tissue is None
    with pytest.raises(ValueError, match="not found under"):
        load_sections(("tiny",), cache_dir=tmp_path / "cache", tissue=True)
    (tmp_path / "cache" / "tiny.npz").write_bytes(b"PK\x03\x04 cut short")  # a cache left by a crash
    with pytest.raises(ValueError, match="not found under"):  # read again, not a BadZipFile
        load_sections(("tiny",), cache_dir=tmp_path / "cache")
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path / "data"))
    assert np.array_equal(load_sections(("tiny",), cache_dir=tmp_path / "cache", tissue=True)[0].tissue, sec.tissue)
    with np.load(tmp_path / "cache" / "tiny.npz") as z:
        assert int(z["format"]) == CACHE_FORMAT and int(z["tissue_detector"]) == TISSUE_DETECTOR
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tiny.npz"]  # no temporary file left
    monkeypatch.setenv("C2LST_DATA_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(ValueError, match="not found under"):
        load_sections(("tiny",))


def test_results_page_is_written_from_the_committed_tables(tmp_path):
    """benchmarks/README.md is what write_results_page makes of benchmarks/measured (regenerate it when tables change)."""
    from c2lst.benchmark import main, write_results_page

    measured = Path(__file__).resolve().parents[1] / "benchmarks" / "measured"
    page = write_results_page(measured, out=tmp_path / "page.md")
    text = page.read_text()
    assert text == (measured.parent / "README.md").read_text(), "run: python -m c2lst.benchmark report"
    rows = pd.read_csv(measured / "loso_per_section.csv")
    floor = summarize(rows[rows["condition"] == "handcrafted"])
    first = floor.iloc[0]  # the numbers come from the rows: change a row, the page changes
    assert f"{first['mean']:.4f} ± {first['std']:.4f}" in text
    assert len(text.splitlines()) < 400  # a page to read: the per-fold table grows with each fraction measured
    changed = tmp_path / "measured"
    changed.mkdir()
    rows.loc[rows["condition"] == "handcrafted", "pcc"] += 0.1
    rows.to_csv(changed / "loso_per_section.csv", index=False)
    assert main(["report", str(changed)]) == 0
    other = (tmp_path / "README.md").read_text()
    assert f"{first['mean'] + 0.1:.4f} ± {first['std']:.4f}" in other and "## Other measurements" not in other
    with pytest.raises(ValueError, match="loso_per_section.csv"):
        write_results_page(tmp_path / "nothing")


def test_recipe_config_is_checked():
    from dataclasses import replace

    from c2lst.core.recipe import RecipeConfig

    assert RecipeConfig().to_dict()["mix_range"] == [0.5, 1.0]
    from c2lst.core.recipe import SAMPLER_NAMES
    from c2lst.core.sampling import SAMPLERS

    assert sorted(SAMPLER_NAMES) == sorted(SAMPLERS)  # the recipe checks the names without importing diffusers
    for bad, match in (({"strength": 0.0}, "strength"), ({"adapt_steps": 0}, "adapt_steps"),
                       ({"mix_range": (0.7, 0.3)}, "mix_range"), ({"decoder_steps": -1}, "decoder_steps"),
                       ({"lora_rank": -2}, "lora_rank"), ({"lora_rank": 1.5}, "lora_rank"),
                       ({"sampler": "euler"}, "sampler"), ({"guidance_reference": "zero"}, "guidance_reference")):
        with pytest.raises(ValueError, match=match):
            replace(RECIPE, **bad)


def test_adapter_variants_are_labelled_on_the_results_page():
    from c2lst.benchmark._results import _conditioning, _per_fold, labelled

    rows = pd.DataFrame([{"condition": c, "test_section": t, "fraction": 0.25, "seed": s, "pcc": p,
                          "local_unconditional": c != "real" and lu}
                         for c, lu, seeds, base in (("real", False, (0, 1), 0.30), ("c2l", False, (0, 1), 0.31),
                                                    ("c2l", True, (0,), 0.35))
                         for s in seeds for t, p in (("A", base), ("B", base + 0.02 * (s + 1)))])
    lab = labelled(rows)
    assert sorted(set(lab["condition"])) == ["c2l", "c2l+local", "real"]
    text = "\n".join(_per_fold(lab))
    assert "c2l+local (1 seed)" in text and "| 0.25 | 2 | **mean** |" in text
    # c2l+local is paired with real on its own seed only: A +0.05, B +0.05
    assert "0.3600 (+0.0500; 2/2 folds up)" in text and "0.3250 (+0.0100; 2/2 folds up)" in text
    syn = pd.DataFrame({"condition": ["c2l", "c2l", "c2l"], "local_unconditional": [False, True, True],
                        "fraction": [0.25, 0.25, 0.5], "cond_profile_share": [np.nan, 0.4, 0.2],
                        "cond_delta_r": [np.nan, 0.5, 0.1]})
    table = "\n".join(_conditioning(labelled(syn)))  # one line per generator and fraction
    assert "| c2l+local | 0.25 | 1 | 0.400 | 0.500 |" in table and "| c2l+local | 0.5 | 1 | 0.200 | 0.100 |" in table
    # a score only some of a generator's rows have: the mean over those, with their count; none: –
    syn2 = syn.assign(fraction=0.25, cond_delta_r_real=[np.nan, 0.3, np.nan])
    table = "\n".join(_conditioning(labelled(syn2)))
    assert "| c2l+local | 0.25 | 2 | 0.300 ± 0.141 | 0.300 ± 0.283 | 0.300 (1) |" in table, table
    assert "| c2l |" not in table
    penalties = pd.DataFrame({"condition": ["real", "real_adapted", "c2l_tissue"], "alpha_cv": ["groups", "loo", "loo"],
                              "local_unconditional": [False, True, False], "lora_rank": [0, 0, 8],
                              "guidance_scale": [np.nan, np.nan, 3.0], "sampler": ["", "", "ddim"]})
    assert labelled(penalties)["condition"].tolist() == ["real+groupcv", "real_adapted+local",
                                                         "c2l_tissue+lora8+g3+ddim"]
    same = penalties.assign(guidance_scale=RECIPE.guidance_scale, sampler=RECIPE.sampler)
    assert labelled(same)["condition"].iloc[2] == "c2l_tissue+lora8"
    vs_mean = same.assign(guidance_scale=[np.nan, np.nan, 2.0], guidance_reference=["", "", "mean"])
    assert labelled(vs_mean)["condition"].iloc[2] == "c2l_tissue+lora8+g2+vsmean"
    assert labelled(same.assign(guidance_reference=["", "", RECIPE.guidance_reference]))["condition"].iloc[2] == \
        "c2l_tissue+lora8"
    at_one = vs_mean.assign(guidance_scale=[np.nan, np.nan, 1.0])  # guidance 1 has no reference branch: not named
    assert "vsmean" not in labelled(at_one)["condition"].iloc[2]
    assert labelled(vs_mean)["guidance_reference"].tolist() == ["", "", "mean"]  # the rows' own values are kept
    # tissue tiles of the earlier detector (stain-tinted glass kept as tissue) are told apart from today's
    glass = same.assign(tissue_detector=[0, 0, 1])
    assert labelled(glass)["condition"].iloc[2] == "c2l_tissue+lora8+glass"
    assert labelled(glass.assign(tissue_detector=[0, 0, TISSUE_DETECTOR]))["condition"].iloc[2] == "c2l_tissue+lora8"
    # adaptation and denoising steps other than the recipe's are named; rows from before the columns are not
    steps = same.assign(adapt_steps=[0, RECIPE.adapt_steps, 1000], generate_steps=[0, 0, 200])
    assert labelled(steps)["condition"].tolist() == ["real+groupcv", "real_adapted+local", "c2l_tissue+lora8+s200+a1000"]
    recipe_steps = steps.assign(adapt_steps=RECIPE.adapt_steps, generate_steps=[np.nan, np.nan, RECIPE.generate_steps])
    assert labelled(recipe_steps)["condition"].iloc[2] == "c2l_tissue+lora8"

