from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import c2lst
from c2lst.core.predictor import Predictor, ResNetEncoder, augment_patches

PX = 32


@pytest.fixture
def sdata(tiny_sdata):
    """Tiny section with 32 px patches and 5 genes driven by the patch colour (a learnable signal)."""
    c2lst.pp.extract_patches(tiny_sdata, patch_um=100, patch_px=PX)
    table = tiny_sdata.tables["table"]
    x = table.X.toarray() if sp.issparse(table.X) else np.asarray(table.X)
    colour = np.asarray(table.obsm["c2lst_patch"], dtype=float).mean(axis=(2, 3))  # (n, 3)
    x[:, :3] = np.round(colour * 2.0)
    x[:, 3:5] = np.round(600 - colour[:, :2] * 2.0)
    table.X = sp.csr_matrix(x.astype(np.float32))
    return tiny_sdata


def _table(sd):
    return sd.tables["table"]


def _mask(n, seed=0):
    m = np.zeros(n, bool)
    m[np.random.default_rng(seed).permutation(n)[: int(0.6 * n)]] = True
    return m


def test_predict_writes_only_its_keys(sdata):
    table = _table(sdata)
    mask = _mask(table.n_obs)
    before = copy.deepcopy(table)
    elements = {k: list(getattr(sdata, k)) for k in ("images", "shapes", "tables")}
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=10, seed=0)
    pred = table.layers["c2lst_pred"]
    panel = table.var["c2lst_pred_panel"].to_numpy()
    assert pred.shape == table.shape and pred.dtype == np.float32 and np.isfinite(pred[:, panel]).all()
    params = table.uns["c2lst_pred"]["params"]
    assert len(params["panel_genes"]) == 10 and params["encoder"] == "handcrafted" and params["head"] == "ridge"
    assert params["train_spots"] == list(table.obs_names[mask]) and params["seed"] == 0
    assert table.var["c2lst_pred_panel"].sum() == 10
    # nothing else changed
    assert {k: list(getattr(sdata, k)) for k in ("images", "shapes", "tables")} == elements
    assert set(table.layers) == set(before.layers) | {"c2lst_pred"}
    assert set(table.uns) == set(before.uns) | {"c2lst_pred"}
    assert list(table.var.columns) == [*before.var.columns, "c2lst_pred_panel"]
    pd.testing.assert_frame_equal(table.obs.drop(columns="c2lst_pred_split"), before.obs)
    assert table.obs["c2lst_pred_split"].tolist() == ["train" if m else "held_out" for m in mask]
    assert (table.X != before.X).nnz == 0
    assert np.array_equal(table.obsm["c2lst_patch"], before.obsm["c2lst_patch"])
    # outside the panel: imputed from the predicted panel (ridge fitted on training spots), never a constant fill
    assert np.isfinite(pred).all() and params["outside_panel"] == "impute"
    from c2lst.pp._counts import library_sizes, lognorm, raw_counts

    lib = library_sizes(raw_counts(table))
    measured = lognorm(raw_counts(table)[mask], lib[mask], c2lst.pp.GenePanel.from_dict(params["panel"]).target_sum)
    varies = ~panel & (measured.std(axis=0) > 0)
    assert varies.any() and (np.ptp(pred[:, varies], axis=0) > 0).all()
    assert np.allclose(np.ptp(pred[:, ~panel & ~varies], axis=0), 0)  # no training variance: its training mean
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=10, seed=0,
                     outside_panel="nan", key_added="panel_only")
    only = table.layers["panel_only"]
    assert np.isnan(only[:, ~panel]).all() and np.array_equal(only[:, panel], pred[:, panel])
    with pytest.raises(ValueError, match="outside_panel"):
        c2lst.tl.predict(sdata, train_mask=mask, synthetic=None, outside_panel="zero", key_added="bad")


def test_predict_same_seed_same_predictions_cnn(sdata):
    mask = _mask(_table(sdata).n_obs)
    kw = dict(train_mask=mask, encoder="cnn", synthetic=None, n_top_genes=8, epochs=3, batch_size=8)
    c2lst.tl.predict(sdata, seed=3, **kw)
    c2lst.tl.predict(sdata, seed=3, key_added="again", **kw)
    c2lst.tl.predict(sdata, seed=4, key_added="other", **kw)
    layers = _table(sdata).layers
    assert np.allclose(layers["c2lst_pred"], layers["again"], equal_nan=True)
    assert not np.allclose(layers["c2lst_pred"], layers["other"], equal_nan=True)


@pytest.mark.parametrize("encoder", ["handcrafted", "cnn"])
def test_no_leakage_from_test_spots(sdata, encoder):
    """Perturbing held-out spots' counts and patches changes nothing fitted on the training spots."""
    table = _table(sdata)
    mask = _mask(table.n_obs)
    kw = dict(train_mask=mask, encoder=encoder, synthetic=None, n_top_genes=8, seed=0, epochs=2, batch_size=8)
    other = copy.deepcopy(sdata)
    c2lst.tl.predict(sdata, **kw)
    first = table.layers["c2lst_pred"].copy()
    params = copy.deepcopy(table.uns["c2lst_pred"]["params"])

    t2 = _table(other)
    rng = np.random.default_rng(1)
    x = t2.X.toarray()
    x[~mask] = rng.poisson(50, size=x[~mask].shape)  # new counts: other HVGs, other library sizes
    t2.X = sp.csr_matrix(x)
    patches = np.asarray(t2.obsm["c2lst_patch"]).copy()
    patches[~mask] = 255 - patches[~mask]
    t2.obsm["c2lst_patch"] = patches
    c2lst.tl.predict(other, **kw)
    assert t2.uns["c2lst_pred"]["params"]["panel"] == params["panel"]
    assert np.allclose(t2.layers["c2lst_pred"][mask], first[mask], equal_nan=True)
    # and the perturbation was real: held-out predictions moved
    assert not np.allclose(t2.layers["c2lst_pred"][~mask], first[~mask], equal_nan=True)


def test_predict_copy_overwrite_and_return_model(sdata):
    mask = _mask(_table(sdata).n_obs)
    out, model = c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=6, copy=True)
    assert "c2lst_pred" not in _table(sdata).layers and "c2lst_pred" in _table(out).layers
    assert isinstance(model, Predictor) and model.genes == _table(out).uns["c2lst_pred"]["params"]["panel_genes"]
    assert np.allclose(model.predict(_table(out).obsm["c2lst_patch"]),
                       _table(out)[:, model.genes].layers["c2lst_pred"])
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=6)
    with pytest.raises(ValueError, match="overwrite"):
        c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=6)
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=6, overwrite=True)


def test_predict_returns_the_predictor_and_keeps_old_keywords(sdata):
    table = _table(sdata)
    kw = dict(train_mask=_mask(table.n_obs), encoder="handcrafted", synthetic=None, seed=0)
    model = c2lst.tl.predict(sdata, n_top_genes=5, **kw)  # no return_model needed: the product is returned
    assert isinstance(model, Predictor) and len(model.genes) == 5
    with pytest.warns(FutureWarning, match="`return_model` is no longer needed"):
        again = c2lst.tl.predict(sdata, n_top_genes=5, key_added="again", return_model=True, **kw)
    assert isinstance(again, Predictor)
    with pytest.warns(FutureWarning, match="`n_top` is now `n_top_genes`"):
        c2lst.tl.predict(sdata, n_top=5, key_added="old", **kw)
    np.testing.assert_array_equal(table.layers["old"], table.layers["c2lst_pred"])
    with pytest.raises(ValueError, match="pass `n_top_genes` only"):
        c2lst.tl.predict(sdata, n_top=5, n_top_genes=5, key_added="both", **kw)
    assert "both" not in table.layers


def test_predict_uses_stored_panel_and_synthetic_table(sdata):
    from anndata import AnnData

    table = _table(sdata)
    mask = _mask(table.n_obs)
    panel = c2lst.pp.gene_panel(sdata, n_top_genes=6, train_mask=mask)
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None)
    assert table.uns["c2lst_pred"]["params"]["panel_genes"] == list(panel.genes)
    assert table.uns["c2lst_pred"]["params"]["panel_source"] == "uns['c2lst_panel']"
    patches = np.asarray(table.obsm["c2lst_patch"])[mask]
    expr = panel.expression(table)[mask]
    syn = AnnData(X=expr, var=pd.DataFrame(index=list(panel.genes)), obsm={"c2lst_patch": patches[:, :, ::-1].copy()})
    sdata.tables["c2lst_synthetic"] = syn
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", key_added="with_syn")
    assert table.uns["with_syn"]["params"]["n_synthetic"] == int(mask.sum())
    assert not np.allclose(table.layers["with_syn"], table.layers["c2lst_pred"], equal_nan=True)
    # a synthetic table on another panel is refused
    sdata.tables["c2lst_synthetic"] = AnnData(X=expr[:, ::-1], var=pd.DataFrame(index=list(panel.genes)[::-1]),
                                             obsm={"c2lst_patch": patches})
    with pytest.raises(ValueError, match="panel"):
        c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", key_added="bad")


def test_predict_synthetic_weight_align_and_cv(sdata):
    from anndata import AnnData

    table = _table(sdata)
    mask = _mask(table.n_obs)
    panel = c2lst.pp.gene_panel(sdata, n_top_genes=5, train_mask=mask)
    rows = np.flatnonzero(mask)
    table.obs["section"] = np.where(np.arange(table.n_obs) % 2 == 0, "A", "B")
    syn = AnnData(X=panel.expression(table)[rows], var=pd.DataFrame(index=list(panel.genes)),
                  obs=pd.DataFrame({"source_spot": table.obs_names[rows]}, index=[f"s{i}" for i in range(len(rows))]),
                  obsm={"c2lst_patch": np.asarray(table.obsm["c2lst_patch"])[rows][:, :, ::-1].copy()},
                  uns={"c2lst": {"synthetic": True}})
    sdata.tables["c2lst_synthetic"] = syn
    kw = {"train_mask": mask, "encoder": "handcrafted"}
    c2lst.tl.predict(sdata, key_added="w0", synthetic_weight=0.0, **kw)
    c2lst.tl.predict(sdata, key_added="real", synthetic=None, **kw)
    assert np.allclose(table.layers["w0"], table.layers["real"], atol=1e-5, equal_nan=True)  # weight 0 = the real pairs alone
    c2lst.tl.predict(sdata, key_added="al", synthetic_align="moments", synthetic_weight=0.5, **kw)
    fit = table.uns["al"]["params"]["predictor"]["fit"]
    assert fit["extra_align"] == "moments" and fit["extra_weight"] == 0.5
    assert table.uns["al"]["params"]["synthetic_align"] == "moments"
    c2lst.tl.predict(sdata, key_added="cv", synthetic_weight="cv", groupby="section", **kw)
    fit = table.uns["cv"]["params"]["predictor"]["fit"]
    assert fit["extra_weight"] in (0.0, 0.25, 0.5, 1.0) and len(fit["extra_weight_cv"]) == 4
    with pytest.raises(ValueError, match="groupby"):
        c2lst.tl.predict(sdata, key_added="bad", synthetic_weight="cv", **kw)
    with pytest.raises(ValueError, match="synthetic_weight"):
        c2lst.tl.predict(sdata, key_added="bad", synthetic_weight="half", **kw)
    c2lst.tl.predict(sdata, key_added="bk", batch_key="section", **kw)  # sections standardised on their own patches
    params = table.uns["bk"]["params"]
    assert params["batch_key"] == "section" and params["predictor"]["group_norm"] is True
    assert params["predictor"]["fit"]["n_groups"] == 2 and params["predictor"]["fit"]["extra_align"] == "groups"
    assert not np.allclose(table.layers["bk"], table.layers["al"], equal_nan=True)
    c2lst.tl.predict(sdata, key_added="bk2", batch_key="section", **kw)
    np.testing.assert_array_equal(table.layers["bk"], table.layers["bk2"])  # same seed, same predictions
    c2lst.tl.predict(sdata, key_added="aug", batch_key="section", n_augment=2, **kw)  # stacked with the synthetic rows
    params = table.uns["aug"]["params"]
    assert params["n_augment"] == 2 and params["augment_weight"] == 1.0 and params["n_synthetic"] == len(rows)
    assert params["predictor"]["fit"]["n_augmented"] == 2 * len(rows)
    assert not np.allclose(table.layers["aug"], table.layers["bk"], equal_nan=True)
    c2lst.tl.predict(sdata, key_added="aug0", batch_key="section", n_augment=2, augment_weight=0.0, **kw)
    assert np.allclose(table.layers["aug0"], table.layers["bk"], atol=1e-5, equal_nan=True)  # weight 0: the copies count for nothing
    with pytest.raises(ValueError, match="augmented rows"):
        c2lst.tl.predict(sdata, key_added="bad", n_augment=1, synthetic_weight="cv", groupby="section", **kw)
    with pytest.raises(ValueError, match="batch_key"):
        c2lst.tl.predict(sdata, key_added="bad", batch_key="no_such_column", **kw)
    c2lst.tl.predict(sdata, key_added="bkcv", batch_key="section", synthetic_weight="cv", **kw)  # one section out
    fit = table.uns["bkcv"]["params"]["predictor"]["fit"]
    assert fit["extra_weight"] in (0.0, 0.25, 0.5, 1.0) and len(fit["extra_weight_cv"]) == 4
    with pytest.raises(ValueError, match="groupby"):
        c2lst.tl.predict(sdata, key_added="bad", batch_key="section", synthetic_weight="cv", groupby="other", **kw)
    del syn.obs["source_spot"]
    with pytest.raises(ValueError, match="source spot"):
        c2lst.tl.predict(sdata, key_added="bad", synthetic_weight="cv", groupby="section", **kw)
    with pytest.raises(ValueError, match="batch_key"):
        c2lst.tl.predict(sdata, key_added="bad", batch_key="section", **kw)
    assert "bad" not in table.layers


def test_predict_bad_input(sdata, tmp_path):
    table = _table(sdata)
    n = table.n_obs
    kw = dict(encoder="handcrafted", synthetic=None, n_top_genes=5)
    with pytest.raises(ValueError, match="empty"):
        c2lst.tl.predict(sdata, train_mask=np.zeros(n, bool), **kw)
    with pytest.raises(ValueError, match="at least 3"):
        c2lst.tl.predict(sdata, train_mask=[True, True] + [False] * (n - 2), **kw)
    with pytest.raises(ValueError, match="does not exist|neither"):
        c2lst.tl.predict(sdata, train_mask=_mask(n), encoder=str(tmp_path / "missing.safetensors"), synthetic=None)
    with pytest.raises(ValueError, match="does not exist"):
        c2lst.tl.predict(sdata, train_mask=_mask(n), encoder="central", central=str(tmp_path / "nope"), synthetic=None)
    with pytest.raises(ValueError, match="head"):
        c2lst.tl.predict(sdata, train_mask=_mask(n), head="forest", **kw)
    with pytest.raises(ValueError, match="batch_key"):  # no groups to hold out
        c2lst.tl.predict(sdata, train_mask=_mask(n), alpha_cv="groups", **kw)
    with pytest.raises(ValueError, match="alpha_cv"):
        c2lst.tl.predict(sdata, train_mask=_mask(n), alpha_cv="sections", **kw)
    del table.obsm["c2lst_patch"]
    with pytest.raises(ValueError, match="extract_patches"):
        c2lst.tl.predict(sdata, train_mask=_mask(n), **kw)


@pytest.mark.parametrize(("encoder", "head"), [("cnn", "ridge"), ("handcrafted", "mlp")])
def test_predictor_save_load_roundtrip(encoder, head, tmp_path):
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(24, 3, PX, PX), dtype=np.uint8)
    y = patches.mean(axis=(2, 3)).astype(np.float32) / 50 + rng.normal(0, 0.01, (24, 3)).astype(np.float32)
    model = Predictor(encoder=encoder, head=head, genes=["a", "b", "c"], epochs=2, batch_size=8, seed=1).fit(patches, y)
    path = model.save(tmp_path / "pred")
    assert sorted(p.name for p in path.iterdir()) == [".c2lst", "config.json", "model.safetensors"]
    back = Predictor.load(path)
    assert back.genes == ["a", "b", "c"] and np.allclose(back.predict(patches), model.predict(patches), atol=1e-5)
    with pytest.raises(ValueError, match="exists"):
        model.save(path)


def test_resnet_checkpoint_encoder_by_path(tmp_path):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = ResNetEncoder((1, 1, 1, 1), bottleneck=False)
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 512)  # a classifier head is ignored
    save_file(state, str(tmp_path / "resnet.safetensors"))
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(12, 3, PX, PX), dtype=np.uint8)
    y = rng.normal(size=(12, 2)).astype(np.float32)
    model = Predictor(encoder=tmp_path / "resnet.safetensors", handcrafted=False).fit(patches, y)
    assert model.features(patches).shape == (12, 512)
    back = Predictor.load(model.save(tmp_path / "saved"))
    assert np.allclose(back.predict(patches), model.predict(patches), atol=1e-5)
    (tmp_path / "weights.pt").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        Predictor(encoder=tmp_path / "weights.pt")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="ResNet"):
        Predictor(encoder=tmp_path / "other.safetensors")


def test_predict_checkpoint_encoder_and_mlp_head_through_tl(sdata, tmp_path):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = ResNetEncoder((1, 1, 1, 1), bottleneck=False)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "resnet.safetensors"))
    table = _table(sdata)
    mask = _mask(table.n_obs)
    kw = {"train_mask": mask, "encoder": str(tmp_path / "resnet.safetensors"), "head": "mlp", "synthetic": None,
          "n_top_genes": 5, "seed": 3}
    c2lst.tl.predict(sdata, **kw)
    c2lst.tl.predict(sdata, key_added="again", **kw)
    pred = np.asarray(table.layers["c2lst_pred"])
    params = table.uns["c2lst_pred"]["params"]
    cols = table.var_names.get_indexer(params["panel_genes"])
    assert np.isfinite(pred[:, cols]).all() and np.array_equal(pred, np.asarray(table.layers["again"]), equal_nan=True)
    assert params["encoder"] == str(tmp_path / "resnet.safetensors") and params["head"] == "mlp"
    assert pred[:, cols].std(axis=0).min() > 0  # the mlp predicts something spot-specific on every panel gene


def test_predictor_extra_rows_mixup_and_checks():
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, size=(20, 3, PX, PX), dtype=np.uint8)
    y = rng.normal(size=(20, 2)).astype(np.float32)
    base = Predictor(encoder="handcrafted").fit(patches, y)
    mixed = Predictor(encoder="handcrafted").fit(patches, y, n_mixup=40)
    aug, src = augment_patches(patches, n_copies=2, seed=0)
    assert aug.shape == (40, 3, PX, PX) and np.array_equal(src, np.tile(np.arange(20), 2))
    extra = Predictor(encoder="handcrafted").fit(patches, y, extra_patches=aug, extra_targets=y[src])
    assert mixed.fit_info["n_mixup"] == 40 and extra.fit_info["n_extra"] == 40
    # ridge penalties come from the real rows only
    assert np.array_equal(base.stats["ridge_alpha"], extra.stats["ridge_alpha"])
    assert not np.allclose(base.predict(patches), extra.predict(patches))
    with pytest.raises(ValueError, match="extra targets"):
        Predictor(encoder="handcrafted").fit(patches, y, extra_patches=aug, extra_targets=y)
    with pytest.raises(ValueError, match="central"):
        Predictor(encoder="central")
    with pytest.raises(ValueError, match="not fitted"):
        Predictor(encoder="handcrafted").predict(patches)


def test_predictor_n_augment_is_its_own_set_of_rows():
    rng = np.random.default_rng(1)
    patches = rng.integers(0, 256, size=(20, 3, PX, PX), dtype=np.uint8)
    y = rng.normal(size=(20, 2)).astype(np.float32)
    g = np.repeat(["a", "b"], 10)
    aug, src = augment_patches(patches, n_copies=2, seed=3)
    # the copies fit() makes are augment_patches(seed=seed) rows with their source's targets (group_norm: per group)
    for norm, kw in ((False, {}), (True, {"groups": g})):
        inner = Predictor(encoder="handcrafted", seed=3, group_norm=norm).fit(patches, y, n_augment=2, **kw)
        outer = Predictor(encoder="handcrafted", seed=3, group_norm=norm).fit(
            patches, y, extra_patches=aug, extra_targets=y[src], **kw, **({"extra_groups": g[src]} if norm else {}))
        assert np.allclose(inner.predict(patches), outer.predict(patches), atol=1e-6)
        assert inner.fit_info["n_augmented"] == 40 and inner.fit_info["n_extra"] == 0
    # stacked with extra rows, each set keeps its own weight: weight 0 removes exactly that set
    extra = rng.integers(0, 256, size=(30, 3, PX, PX), dtype=np.uint8)
    ey = rng.normal(size=(30, 2)).astype(np.float32)
    kw = {"groups": g, "extra_groups": np.repeat(["a", "b"], 15), "extra_patches": extra, "extra_targets": ey}
    only_aug = Predictor(encoder="handcrafted", group_norm=True).fit(patches, y, groups=g, n_augment=1)
    stacked = Predictor(encoder="handcrafted", group_norm=True).fit(patches, y, n_augment=1, extra_weight=0.0, **kw)
    only_extra = Predictor(encoder="handcrafted", group_norm=True).fit(patches, y, extra_weight=0.5, **kw)
    no_aug = Predictor(encoder="handcrafted", group_norm=True).fit(patches, y, n_augment=1, augment_weight=0.0,
                                                                   extra_weight=0.5, **kw)
    both = Predictor(encoder="handcrafted", group_norm=True).fit(patches, y, n_augment=1, extra_weight=0.5, **kw)
    assert np.allclose(stacked.predict(patches), only_aug.predict(patches), atol=1e-6)
    assert np.allclose(no_aug.predict(patches), only_extra.predict(patches), atol=1e-6)
    assert not np.allclose(both.predict(patches), only_extra.predict(patches), atol=1e-4)
    with pytest.raises(ValueError, match="n_augment"):
        Predictor(encoder="handcrafted").fit(patches, y, n_augment=-1)
    with pytest.raises(ValueError, match="augment_weight"):
        Predictor(encoder="handcrafted").fit(patches, y, n_augment=1, augment_weight=float("nan"))
    with pytest.raises(ValueError, match="augmented rows"):
        Predictor(encoder="handcrafted").fit(patches, y, n_augment=1, extra_weight="cv", **kw)


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_perfect_predictions_give_r1(sdata):
    table = _table(sdata)
    mask = _mask(table.n_obs)
    panel = c2lst.pp.gene_panel(sdata, n_top_genes=6, train_mask=mask)
    layer = np.zeros(table.shape, np.float32)
    layer[:, table.var_names.get_indexer(list(panel.genes))] = panel.expression(table)
    table.layers["truth"] = layer
    res = c2lst.tl.evaluate(sdata, layer="truth", train_mask=mask, n_top_hvg=3)
    assert set(res.columns) >= {"pearson", "mse", "mae", "moran_measured", "moran_pred", "section", "top_hvg"}
    assert len(res) == 6 and res["section"].unique().tolist() == ["tiny"] and res["top_hvg"].sum() == 3
    assert np.allclose(res["pearson"].dropna(), 1.0) and np.allclose(res["mse"], 0)
    assert np.allclose(res["moran_measured"], res["moran_pred"], equal_nan=True)
    summary = table.uns["c2lst_eval"]["summary"]["tiny"]
    assert summary["n_test"] == int((~mask).sum()) and summary["mean_pearson"] == pytest.approx(1.0)
    assert summary["moran_mean_abs_diff"] == pytest.approx(0, abs=1e-6) and summary["moran_r"] == pytest.approx(1.0)
    assert np.isnan(table.var["c2lst_eval_pearson"]).sum() == table.n_vars - 6


def test_evaluate_top_hvg_from_training_spots_only(sdata):
    table = _table(sdata)
    mask = _mask(table.n_obs)
    panel = c2lst.pp.gene_panel(sdata, n_top_genes=6, train_mask=mask)
    cols = table.var_names.get_indexer(list(panel.genes))
    train_var = panel.expression(table)[mask].var(axis=0)
    quiet = int(np.argmin(train_var))  # the panel gene that varies least on the training spots
    x = table.X.toarray()
    x[~mask, cols[quiet]] = np.where(np.arange((~mask).sum()) % 2, 0, 5000)  # ... varies wildly on held-out spots
    table.X = sp.csr_matrix(x)
    table.layers["guess"] = np.zeros(table.shape, np.float32)
    res = c2lst.tl.evaluate(sdata, layer="guess", train_mask=mask, n_top_hvg=1)
    assert res.loc[res["top_hvg"], "gene"].tolist() == [panel.genes[int(np.argmax(train_var))]]
    assert panel.expression(table)[~mask].var(axis=0).argmax() == quiet  # pooled or held-out variance would pick it


def test_evaluate_moran_through_squidpy_smooth_high_shuffled_near_zero():
    from c2lst.tl._evaluate import _moran, _moran_agreement

    yy, xx = np.mgrid[0:20, 0:20]
    xy = np.c_[xx.ravel(), yy.ravel()].astype(float)
    smooth = np.c_[np.sin(xx / 4.0).ravel(), (xx + yy).ravel() / 40.0]
    shuffled = smooth[np.random.default_rng(0).permutation(len(smooth))]
    import torch

    threads = torch.get_num_threads()
    measured, predicted = _moran(smooth, shuffled, xy, ["wave", "ramp"], n_neighs=6)
    assert (measured > 0.8).all() and (np.abs(predicted) < 0.1).all()
    assert torch.get_num_threads() == threads  # squidpy's numba code would set numba's count (the cores)
    agree = _moran_agreement(measured, predicted)
    assert agree["moran_mean_diff"] < -0.7 and agree["moran_mean_abs_diff"] == pytest.approx(-agree["moran_mean_diff"])
    assert np.isnan(_moran_agreement(measured[:1], predicted[:1])["moran_r"])


def test_evaluate_after_predict_per_section_not_pooled(sdata):
    import anndata as ad

    table = _table(sdata)
    two = ad.concat([table, table], label="library_id", keys=["s1", "s2"], index_unique="-", uns_merge="first")
    two.obsm["c2lst_patch"] = np.concatenate([table.obsm["c2lst_patch"]] * 2)
    x = two.X.toarray()
    x[table.n_obs:, 3:5] = x[table.n_obs:, 3:5][::-1]  # break section 2's ground truth only
    two.X = sp.csr_matrix(x)
    mask = np.r_[_mask(table.n_obs), _mask(table.n_obs)]
    c2lst.tl.predict(two, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=5)
    res = c2lst.tl.evaluate(two)  # training spots recalled from .uns
    assert set(res["section"]) == {"s1", "s2"}
    from c2lst.metrics import pearson_per_gene

    genes = two.uns["c2lst_pred"]["params"]["panel_genes"]
    panel = c2lst.pp.GenePanel.from_dict(two.uns["c2lst_pred"]["params"]["panel"])
    s1 = (two.obs["library_id"] == "s1").to_numpy() & ~mask
    expected = pearson_per_gene(panel.expression(two)[s1], two[s1][:, genes].layers["c2lst_pred"])
    assert np.allclose(res[res["section"] == "s1"]["pearson"], expected, equal_nan=True)
    assert set(two.uns["c2lst_eval"]["summary"]) == {"s1", "s2"}
    # library_key names the section column; copy=True scores into a copy and returns (copy, frame)
    two.obs["slide"] = two.obs["library_id"].map({"s1": "A", "s2": "B"}).astype(str)
    out, by_slide = c2lst.tl.evaluate(two, library_key="slide", key_added="by_slide", copy=True)
    assert set(by_slide["section"]) == {"A", "B"} and "pearson" in by_slide
    np.testing.assert_allclose(by_slide[by_slide["section"] == "A"]["pearson"], res[res["section"] == "s1"]["pearson"])
    assert "by_slide" in out.uns and "by_slide" not in two.uns and "by_slide_pearson" not in two.var
    assert out.uns["by_slide"]["params"]["library_key"] == "slide"
    with pytest.raises(ValueError, match="library_key"):
        c2lst.tl.evaluate(two, library_key="batch", key_added="bad")
    assert set(c2lst.tl.evaluate(two, library_key=None, key_added="pooled")["section"]) == {"all"}


def test_evaluate_bad_input(sdata):
    table = _table(sdata)
    mask = _mask(table.n_obs)
    with pytest.raises(ValueError, match="predict"):
        c2lst.tl.evaluate(sdata, train_mask=mask)
    c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=5)
    with pytest.raises(ValueError, match="held-out"):
        c2lst.tl.evaluate(sdata, train_mask=np.ones(table.n_obs, bool) & ~np.eye(1, table.n_obs, 0, dtype=bool)[0])
    with pytest.raises(ValueError, match="outside `train_mask`"):
        c2lst.tl.evaluate(sdata, train_mask=~mask)
    table.X = None
    with pytest.raises(ValueError, match="ground truth"):
        c2lst.tl.evaluate(sdata, train_mask=mask)


def test_predict_slide_maps_genes_on_a_grid(sdata):
    mask = _mask(_table(sdata).n_obs)
    model = c2lst.tl.predict(sdata, train_mask=mask, encoder="handcrafted", synthetic=None, n_top_genes=5)
    c2lst.tl.predict_slide(sdata, model, grid_um=150, spot_um=100, min_tissue=0.0)
    grid = sdata.tables["c2lst_slide"]
    assert list(grid.var_names) == model.genes and grid.n_obs == len(sdata.shapes["c2lst_slide_spots"]) > 4
    assert np.isfinite(grid.X).all() and grid.obsm["c2lst_patch"].shape[1:] == (3, PX, PX)
    assert np.allclose(grid.X, model.predict(grid.obsm["c2lst_patch"]))
    import matplotlib
    import scanpy as sc

    matplotlib.use("Agg")
    sc.pl.spatial(grid, color=model.genes[0], show=False)  # scanpy's record of the slide: its defaults work
    assert grid.uns["spatial"]["c2lst_slide"]["scalefactors"]["tissue_hires_scalef"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="overwrite"):
        c2lst.tl.predict_slide(sdata, model, min_tissue=0.0)
    out = c2lst.tl.predict_slide(sdata, model, grid_um=150, min_tissue=0.0, key_added="copied", copy=True)
    assert "copied" in out.tables and "copied_spots" in out.shapes
    assert "copied" not in sdata.tables and "copied_spots" not in sdata.shapes


@pytest.mark.parametrize("lattice", ["square", "hex"])
def test_predict_slide_lattices(sdata, lattice):
    from scipy.spatial import cKDTree

    mpp = _table(sdata).uns["c2lst"]["spatial"]["mpp"]
    model = c2lst.tl.predict(sdata, train_mask=_mask(_table(sdata).n_obs), encoder="handcrafted", synthetic=None,
                             n_top_genes=5)
    c2lst.tl.predict_slide(sdata, model, grid_um=60, spot_um=100, min_tissue=0.0, lattice=lattice)
    grid = sdata.tables["c2lst_slide"]
    assert grid.uns["c2lst_slide"]["params"]["lattice"] == lattice
    centres = sdata.shapes["c2lst_slide_spots"].geometry
    xy = np.asarray(grid.obsm["spatial"])
    np.testing.assert_allclose(xy, np.c_[centres.x, centres.y])
    dist, _ = cKDTree(xy * mpp).query(xy * mpp, k=7)
    np.testing.assert_allclose(dist[:, 1], 60.0)  # every pseudo-spot's nearest neighbour is grid_um away
    interior = np.isclose(dist[:, 6], 60.0)  # hex: six neighbours at grid_um; square: four, the next at 60 * sqrt 2
    if lattice == "hex":
        assert interior.sum() >= 10
        col, row = grid.obs["array_col"].to_numpy(), grid.obs["array_row"].to_numpy()
        assert ((col + row) % 2 == 0).all()  # Visium's doubled columns
        import squidpy as sq

        sq.gr.spatial_neighbors(grid, coord_type="grid", n_neighs=6)
        assert (np.asarray(grid.obsp["spatial_connectivities"].sum(axis=1)).ravel()[interior] == 6).all()
    else:
        assert not interior.any() and np.isclose(dist[:, 4], 60.0).sum() >= 10
        assert np.isclose(dist[np.isclose(dist[:, 4], 60.0), 5], 60.0 * np.sqrt(2)).all()
    with pytest.raises(ValueError, match="lattice"):
        c2lst.tl.predict_slide(sdata, model, min_tissue=0.0, lattice="triangle", key_added="other")


def test_neighbour_graphs_use_true_distances_not_visium_half_steps(sdata):
    from c2lst._utils import spot_positions

    table = _table(sdata)
    np.testing.assert_array_equal(spot_positions(table, sdata), table.obsm["spatial"])
    del table.obsm["spatial"]  # a store written before the readers wrote obsm["spatial"]: the circles' centres
    centres = sdata.shapes[table.uns["spatialdata_attrs"]["region"]].geometry.loc[table.obs["spot_id"]]
    np.testing.assert_array_equal(spot_positions(table, sdata), np.c_[centres.x, centres.y])
    np.testing.assert_array_equal(spot_positions(table), table.obs[["array_col", "array_row"]])  # AnnData alone
    bare = table.copy()
    del bare.obs["array_col"]
    assert spot_positions(bare) is None


def test_predict_slide_with_a_per_section_model(sdata):
    table = _table(sdata)
    table.obs["section"] = np.where(np.arange(table.n_obs) % 2 == 0, "A", "B")
    model = c2lst.tl.predict(sdata, train_mask=_mask(table.n_obs), encoder="handcrafted", synthetic=None, n_top_genes=5,
                             batch_key="section")
    c2lst.tl.predict_slide(sdata, model, grid_um=150, spot_um=100, min_tissue=0.0)
    grid = sdata.tables["c2lst_slide"]  # the new slide is one group, standardised on its own tiles
    patches = np.asarray(grid.obsm["c2lst_patch"])
    assert np.allclose(grid.X, model.predict(patches))
    assert np.allclose(grid.X.mean(axis=0), model.stats["y_mean"], atol=1e-4)  # centred on the training mean
    # penalties by leave-one-section-out: recorded, and chosen on whole sections
    held = c2lst.tl.predict(sdata, train_mask=_mask(table.n_obs), encoder="handcrafted", synthetic=None, n_top_genes=5,
                            batch_key="section", alpha_cv="groups", key_added="held", seed=0, table_key="table")
    assert table.uns["held"]["params"]["predictor"]["alpha_cv"] == "groups"
    by_groupby = c2lst.tl.predict(sdata, train_mask=_mask(table.n_obs), encoder="handcrafted", synthetic=None,
                                  n_top_genes=5, groupby="section", alpha_cv="groups", key_added="held2", seed=0,
                                  table_key="table")
    assert np.isfinite(by_groupby.stats["ridge_alpha"]).all() and held.params["group_norm"]


def test_evaluate_synthetic_writes_metrics(sdata):
    from anndata import AnnData

    table = _table(sdata)
    patches = np.asarray(table.obsm["c2lst_patch"])
    fake = np.clip(patches.astype(int)[:, :, ::-1] + 10, 0, 255).astype(np.uint8)
    sdata.tables["c2lst_synthetic"] = AnnData(X=np.zeros((len(fake), 2), np.float32), obsm={"c2lst_patch": fake})
    mask = _mask(table.n_obs)
    res = c2lst.tl.evaluate_synthetic(sdata, train_mask=mask, table_key="table")
    assert {"frechet", "kid", "precision", "recall", "nuclei_count_wasserstein", "nn_ratio"} <= set(res)
    assert {"frechet_floor", "kid_floor", "precision_floor", "diversity_ratio_floor", "precision_vs_half"} <= set(res)
    assert res["n_floor"] == mask.sum() // 2 and "frechet_vs_half" in res
    assert sdata.tables["c2lst_synthetic"].uns["c2lst_synthetic_eval"]["metrics"] == res
    out, again = c2lst.tl.evaluate_synthetic(sdata, train_mask=mask, table_key="table", key_added="copied", copy=True)
    assert again == res and "copied" in out.tables["c2lst_synthetic"].uns
    assert "copied" not in sdata.tables["c2lst_synthetic"].uns
    # the reference is the spots the generator was adapted on: copies of them are at distance 0, held-out spots not
    sdata.tables["c2lst_synthetic"] = AnnData(X=np.zeros((mask.sum(), 2), np.float32),
                                              obsm={"c2lst_patch": patches[mask]})
    copies = c2lst.tl.evaluate_synthetic(sdata, train_mask=mask, table_key="table")
    assert copies["frechet"] == pytest.approx(0, abs=1e-6) and copies["precision"] == 1 and copies["nn_ratio"] == 0
    # without a mask the reference is what tl.generate recorded: the spots tl.adapt saw (the memorisation audit runs)
    central = c2lst.tl.pretrain(patches, config="tiny", steps=4, seed=0)
    local = c2lst.tl.adapt(sdata, central, train_mask=mask, steps=2, batch_size=4, decoder_steps=0, seed=0,
                           table_key="table")
    c2lst.tl.generate(sdata, local, source="spots", steps=2, seed=0, table_key="table", key_added="gen")
    recorded = sdata.tables["gen"].uns["gen"]["params"]["train_spots"]
    assert recorded == list(table.obs_names[mask])
    audit = c2lst.tl.evaluate_synthetic(sdata, synthetic="gen", table_key="table")
    assert sdata.tables["gen"].uns["c2lst_synthetic_eval"]["params"]["n_train"] == mask.sum()
    assert {"nn_ratio", "nn_heldout_median", "share_below_heldout_q"} <= set(audit)
    sdata.tables["gen"].uns["gen"]["params"]["train_spots"] = ["not-a-spot"]
    with pytest.raises(ValueError, match="no reference spot"):
        c2lst.tl.evaluate_synthetic(sdata, synthetic="gen", table_key="table", key_added="again")


def test_central_encoder_features_and_identity_check(sdata, tmp_path):
    from c2lst.core.configs import get_config
    from c2lst.core.training import pretrain_central

    patches = np.asarray(_table(sdata).obsm["c2lst_patch"])
    cfg = get_config("tiny")

    def tiny(seed):
        return pretrain_central(patches, cfg, steps=3, batch_size=4, lr=cfg.lr, seed=seed, mixed_precision="no",
                                out=None, resume=False, checkpoint_every=100, progress=False)

    central = tiny(0)
    mask = _mask(len(patches))
    model = c2lst.tl.predict(sdata, train_mask=mask, encoder="central", central=central, synthetic=None, n_top_genes=5)
    n_central = central.features(patches[:2]).shape[1]
    assert model.fit_info["n_features"] == n_central + len(c2lst.metrics.handcrafted_feature_names())
    path = model.save(tmp_path / "pred")
    assert np.allclose(Predictor.load(path, central=central).predict(patches), model.predict(patches), atol=1e-5)
    with pytest.raises(ValueError, match="not the one"):
        Predictor.load(path, central=tiny(1))


def test_ridge_per_target_matches_sklearn():
    from sklearn.linear_model import Ridge

    from c2lst.core.predictor import ridge_per_target

    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(40, 6)), rng.normal(size=(40, 3)), rng.uniform(0.5, 2, 40)
    alpha = np.array([0.1, 10.0, 1000.0])
    coef, intercept = ridge_per_target(x, y, w, alpha)
    ref = Ridge(alpha=alpha).fit(x, y, sample_weight=w)
    assert np.allclose(coef, ref.coef_) and np.allclose(intercept, ref.intercept_)


def test_group_cv_alpha_holds_out_whole_groups():
    from sklearn.linear_model import Ridge

    from c2lst.core.predictor import RIDGE_ALPHAS, group_cv_alpha

    rng = np.random.default_rng(1)
    groups = np.repeat(["a", "b", "c", "d"], 15)
    x = rng.normal(size=(60, 30))
    # a signal shared by all groups in feature 0, and per-group structure in the others that does not transfer
    offsets = {g: rng.normal(size=30) for g in "abcd"}
    y = np.stack([x[:, 0] + rng.normal(0, 0.5, 60),
                  np.array([x[i] @ offsets[g] for i, g in enumerate(groups)]) * 0.3 + rng.normal(0, 1, 60)], 1)
    got = group_cv_alpha(x, y, groups, np.asarray(RIDGE_ALPHAS))
    for j in range(2):  # brute force with sklearn: the summed held-out squared error of each alpha
        err = [sum(((Ridge(alpha=a).fit(x[groups != g], y[groups != g, j]).predict(x[groups == g]) - y[groups == g, j])
                    ** 2).sum() for g in "abcd") for a in RIDGE_ALPHAS]
        assert got[j] == RIDGE_ALPHAS[int(np.argmin(err))]
    with pytest.raises(ValueError, match="at least two groups"):
        group_cv_alpha(x, y, np.zeros(60), np.asarray(RIDGE_ALPHAS))


def test_predictor_alpha_cv_groups(tmp_path):
    patches, y = _colour_pairs(48, 0)
    groups = np.repeat(["s1", "s2", "s3"], 16)
    loo = Predictor(encoder=_mean_colour, handcrafted=False).fit(patches, y, groups=groups)
    grp = Predictor(encoder=_mean_colour, handcrafted=False, alpha_cv="groups").fit(patches, y, groups=groups)
    assert grp.params["alpha_cv"] == "groups" and loo.params["alpha_cv"] == "loo"
    assert np.isfinite(grp.predict(patches)).all() and grp.stats["ridge_alpha"].shape == (2,)
    with pytest.raises(ValueError, match="at least two"):
        Predictor(encoder=_mean_colour, handcrafted=False, alpha_cv="groups").fit(patches, y)
    with pytest.raises(ValueError, match="ridge head"):
        Predictor(encoder="handcrafted", head="mlp", alpha_cv="groups")
    with pytest.raises(ValueError, match="alpha_cv"):
        Predictor(encoder="handcrafted", alpha_cv="sections")
    hand = Predictor(encoder="handcrafted", alpha_cv="groups").fit(patches, y, groups=groups)
    hand.save(tmp_path / "p")
    back = Predictor.load(tmp_path / "p")
    assert back.params["alpha_cv"] == "groups"
    np.testing.assert_array_equal(back.predict(patches), hand.predict(patches))


def _colour_pairs(n, seed, sign=1.0):
    """Flat-colour patches (values 40..200) whose 2 targets are linear in the colour (plus noise)."""
    rng = np.random.default_rng(seed)
    colour = rng.uniform(40, 200, size=(n, 3))
    patches = np.repeat(np.repeat(colour[:, :, None, None], PX, 2), PX, 3).round().astype(np.uint8)
    y = sign * np.stack([colour[:, 0] - colour[:, 1], colour[:, 2]], 1) / 50 + rng.normal(0, 0.3, (n, 2))
    return patches, y.astype(np.float32)


def _mean_colour(p):
    return np.asarray(p, dtype=np.float32).mean(axis=(2, 3))


def test_predictor_extra_align_removes_a_global_shift():
    patches, y = _colour_pairs(30, 0)
    extra, ey = _colour_pairs(60, 1)
    shifted = (extra.astype(int) + 40).astype(np.uint8)  # a generator that paints every tile 40 levels lighter
    test, truth = _colour_pairs(40, 2)
    fit = {"encoder": _mean_colour, "handcrafted": False}
    plain = Predictor(**fit).fit(patches, y, extra_patches=extra, extra_targets=ey, extra_align="moments")
    moved = Predictor(**fit).fit(patches, y, extra_patches=shifted, extra_targets=ey, extra_align="moments")
    raw = Predictor(**fit).fit(patches, y, extra_patches=shifted, extra_targets=ey)
    # aligned on their own moments, shifted and unshifted extra rows give the same predictor
    assert np.allclose(moved.predict(test), plain.predict(test), atol=1e-4)
    err = {k: float(np.mean((m.predict(test) - truth) ** 2)) for k, m in (("aligned", moved), ("raw", raw))}
    assert err["aligned"] < 0.8 * err["raw"], err
    assert moved.fit_info["extra_align"] == "moments" and raw.fit_info["extra_align"] is None
    # statistics still come from the real rows only
    assert np.array_equal(moved.stats["x_mean"], raw.stats["x_mean"])
    with pytest.raises(ValueError, match="extra_align"):
        Predictor(**fit).fit(patches, y, extra_patches=extra, extra_targets=ey, extra_align="coral")


def test_predictor_extra_weight_cv_chooses_by_training_groups():
    patches, y = _colour_pairs(36, 0)
    groups = np.repeat([0, 1, 2], 12)
    extra, ey = _colour_pairs(72, 1)
    wrong, wy = _colour_pairs(72, 1, sign=-1.0)  # the same tiles with the opposite relation
    extra_groups = np.repeat([0, 1, 2], 24)
    fit = {"encoder": _mean_colour, "handcrafted": False}
    good = Predictor(**fit).fit(patches, y, extra_patches=extra, extra_targets=ey, extra_weight="cv", groups=groups,
                                extra_groups=extra_groups)
    bad = Predictor(**fit).fit(patches, y, extra_patches=wrong, extra_targets=wy, extra_weight="cv", groups=groups,
                               extra_groups=extra_groups)
    assert good.fit_info["extra_weight"] > 0 and bad.fit_info["extra_weight"] == 0.0
    assert set(bad.fit_info["extra_weight_cv"]) == {"0.0", "0.25", "0.5", "1.0"}
    real_only = Predictor(**fit).fit(patches, y)
    assert np.allclose(bad.predict(patches), real_only.predict(patches), atol=1e-5)  # weight 0 = real pairs only
    kw = {"extra_patches": extra, "extra_targets": ey, "extra_weight": "cv"}
    with pytest.raises(ValueError, match="groups"):
        Predictor(**fit).fit(patches, y, **kw)
    with pytest.raises(ValueError, match="two groups"):
        Predictor(**fit).fit(patches, y, groups=np.zeros(36), extra_groups=np.zeros(72), **kw)
    with pytest.raises(ValueError, match="ridge head"):
        Predictor(head="mlp", **fit).fit(patches, y, groups=groups, extra_groups=extra_groups, **kw)
    with pytest.raises(ValueError, match="extra_weight"):
        Predictor(**fit).fit(patches, y, extra_patches=extra, extra_targets=ey, extra_weight=-1.0)


def _intensity_patches(u: np.ndarray) -> np.ndarray:
    """Constant uint8 patches of intensity ``u`` (one feature: their mean intensity)."""
    return np.repeat(u.astype(np.uint8)[:, None, None, None], 3, axis=1).repeat(8, axis=2).repeat(8, axis=3)


def _mean_intensity(p: np.ndarray) -> np.ndarray:
    return p.reshape(len(p), -1).mean(axis=1, keepdims=True).astype(np.float32)


def test_predictor_group_norm_learns_the_within_group_relation(tmp_path):
    rng = np.random.default_rng(0)
    u = rng.uniform(60, 120, 40)
    groups = np.repeat(["A", "B"], 20)
    # within each section expression rises with intensity; section B is brighter and lower overall (confounded)
    patches = _intensity_patches(np.where(groups == "B", u + 60, u))
    y = (u / 10 + np.where(groups == "B", -20, 0))[:, None].astype(np.float32)
    u_new = rng.uniform(60, 120, 30)
    truth = u_new / 10
    fit = {"encoder": _mean_intensity, "handcrafted": False, "seed": 0}
    plain = Predictor(**fit).fit(patches, y)
    normed = Predictor(**fit, group_norm=True).fit(patches, y, groups=groups)
    r_plain = np.corrcoef(plain.predict(_intensity_patches(u_new))[:, 0], truth)[0, 1]
    pred = normed.predict(_intensity_patches(u_new))[:, 0]
    assert r_plain < 0 < 0.99 < np.corrcoef(pred, truth)[0, 1]  # pooled fit learns the between-section sign
    # a slide-wide shift (stain, scanner) changes nothing: the new slide is standardised on its own patches
    np.testing.assert_allclose(normed.predict(_intensity_patches(u_new + 40))[:, 0], pred, atol=1e-5)
    assert abs(pred.mean() - y.mean()) < 1e-4  # centred on the training mean
    both = normed.predict(np.concatenate([_intensity_patches(u_new), _intensity_patches(u_new + 40)]),
                          groups=np.repeat(["s1", "s2"], 30))
    np.testing.assert_allclose(both[:30, 0], both[30:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="at least 5"):
        normed.predict(_intensity_patches(u_new[:3]))
    with pytest.raises(ValueError, match="extra_groups"):
        Predictor(**fit, group_norm=True).fit(patches, y, groups=groups, extra_patches=patches, extra_targets=y)
    with pytest.raises(ValueError, match="no real rows"):
        Predictor(**fit, group_norm=True).fit(patches, y, groups=groups, extra_patches=patches, extra_targets=y,
                                              extra_groups=np.repeat(["A", "C"], 20))
    # leave-one-section-out weight: extra rows with the reversed relation flip the fit at weight >= 0.5
    bad = Predictor(**fit, group_norm=True).fit(patches, y, groups=groups, extra_patches=patches,
                                                extra_targets=-3 * y, extra_groups=groups, extra_weight="cv")
    cv = bad.fit_info["extra_weight_cv"]
    # with one feature weights 0 and 0.25 both keep the sign, so their scores tie up to rounding
    assert bad.fit_info["extra_weight"] in (0.0, 0.25) and cv["1.0"] < 0 < cv["0.0"] == pytest.approx(cv["0.25"])
    with pytest.raises(ValueError, match="frozen encoder"):
        Predictor(encoder="cnn", group_norm=True)
    real = np.asarray(rng.integers(0, 255, (40, 3, 32, 32)), dtype=np.uint8)
    saved = Predictor(encoder="handcrafted", group_norm=True).fit(real, y, groups=groups)
    loaded = Predictor.load(saved.save(tmp_path / "p"))
    assert loaded.hparams["group_norm"] is True
    np.testing.assert_array_equal(loaded.predict(real, groups=groups), saved.predict(real, groups=groups))


def test_predictor_group_norm_does_not_blow_up_a_homogeneous_section():
    # two training sections with the same within-section relation; then a new section of one tissue type: its
    # intensity spans 1 unit against ~17 in training (or only 5 spots), so its own sd would inflate it ~17 times
    rng = np.random.default_rng(1)
    u = rng.uniform(60, 120, 80)
    groups = np.repeat(["A", "B"], 40)
    y = (u / 10)[:, None].astype(np.float32)
    fit = {"encoder": _mean_intensity, "handcrafted": False, "seed": 0}
    normed = Predictor(**fit, group_norm=True).fit(_intensity_patches(np.where(groups == "B", u + 30, u)), y,
                                                   groups=groups)
    pooled = normed.stats["x_group_std"]
    assert pooled.shape == (1,) and 15 < pooled[0] < 20  # the within-section sd of the training spots
    spread = normed.predict(_intensity_patches(u[:40])).std()  # a section like the training ones
    for narrow in (90 + np.arange(30) % 2, np.array([90, 90, 91, 90, 91])):
        pred = normed.predict(_intensity_patches(narrow))[:, 0]
        assert np.isfinite(pred).all() and pred.std() < 0.1 * spread, (narrow, pred.std(), spread)
        # the unshrunk standardisation (the behaviour before the shrinkage) gives it the full training spread
        normed.stats.pop("x_group_std")
        assert normed.predict(_intensity_patches(narrow)).std() > 0.8 * spread
        normed.stats["x_group_std"] = pooled
