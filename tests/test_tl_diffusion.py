"""tl.pretrain / tl.adapt / tl.generate on the tiny synthetic section (tiny config, CPU, 1 thread)."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import c2lst
from c2lst.core import CentralModel
from c2lst.core.models import LocalModel
from c2lst.core.recipe import RECIPE
from c2lst.pp import GenePanel

pytestmark = pytest.mark.usefixtures("no_progress_bar")


@pytest.fixture
def sdata(tiny_patched):
    return tiny_patched


@pytest.fixture(scope="module")
def central(tiny_central) -> CentralModel:
    return tiny_central


def test_pretrain_bad_inputs(tmp_path):
    tiles = np.random.default_rng(0).integers(0, 255, size=(20, 3, 32, 32), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        c2lst.tl.pretrain(tiles.astype(np.float32), config="tiny", steps=4)
    with pytest.raises(ValueError, match="shape"):
        c2lst.tl.pretrain(tiles[:, 0], config="tiny", steps=4)
    with pytest.raises(ValueError, match="at least 16"):
        c2lst.tl.pretrain(tiles[:5], config="tiny", steps=4)
    with pytest.raises(ValueError, match="no tile"):
        c2lst.tl.pretrain(tiles[:0], config="tiny", steps=4)
    for steps in (0, -3, 1):
        with pytest.raises(ValueError, match="`steps`"):
            c2lst.tl.pretrain(tiles, config="tiny", steps=steps)
    with pytest.raises(ValueError, match="unknown model configuration"):
        c2lst.tl.pretrain(tiles, config="huge", steps=4)
    with pytest.raises(ValueError, match="needs `out`"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=4, resume=True)
    with pytest.raises(ValueError, match="mixed_precision"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=4, mixed_precision="fp8")
    with pytest.raises(ValueError, match="HistologyTiles"):
        c2lst.tl.pretrain([1, 2, 3], config="tiny", steps=4)


def test_pretrain_out_rules(central, tmp_path):
    out = tmp_path / "model"
    tiles = np.random.default_rng(1).integers(60, 230, size=(16, 32, 32, 3), dtype=np.uint8)  # channel-last
    model = c2lst.tl.pretrain(tiles, config="tiny", steps=4, seed=0, out=out)
    assert (out / "c2lst_central.json").is_file() and (out / "unet" / "config.json").is_file()
    assert (out / "autoencoder" / "diffusion_pytorch_model.safetensors").is_file()
    assert CentralModel.load(out).weights_sha256 == model.weights_sha256
    with pytest.raises(ValueError, match="already holds a central model"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=4, seed=1, out=out)
    # resuming a finished identical run returns it
    again = c2lst.tl.pretrain(tiles, config="tiny", steps=4, seed=0, out=out, resume=True)
    assert again.weights_sha256 == model.weights_sha256
    other = c2lst.tl.pretrain(tiles, config="tiny", steps=4, seed=1, out=out, overwrite=True)
    assert CentralModel.load(out).weights_sha256 == other.weights_sha256 != model.weights_sha256
    with pytest.raises(ValueError, match="different central model"):
        model.save(out)


def test_pretrain_refines_init(central, tmp_path):
    """``init``: the autoencoder and latent scale are kept, every step trains the UNet from init's weights."""
    import torch

    tiles = np.random.default_rng(3).integers(30, 200, size=(24, 3, 32, 32), dtype=np.uint8)
    out = tmp_path / "refined"
    refined = c2lst.tl.pretrain(tiles, init=central, steps=3, batch_size=4, seed=0, out=out)
    assert refined.config.to_dict() == central.config.to_dict()
    assert refined.scaling_factor == central.scaling_factor
    ae0, ae1 = central.autoencoder.state_dict(), refined.autoencoder.state_dict()
    assert all(torch.equal(ae0[k], ae1[k]) for k in ae0)
    u0, u1 = central.unet.state_dict(), refined.unet.state_dict()
    assert any(not torch.equal(u0[k], u1[k]) for k in u0)
    s = refined.summary
    assert s["autoencoder_steps"] == 0 and s["unet_steps"] == 3 and "autoencoder_loss" not in s
    assert s["init_weights_sha256"] == central.weights_sha256 and s["init_summary"]["steps"] == 8
    # it starts from init's UNet: with a vanishing learning rate the refined UNet is init's
    still = c2lst.tl.pretrain(tiles, init=central, steps=2, batch_size=4, lr=1e-12, seed=0).unet.state_dict()
    assert all(torch.allclose(u0[k], still[k], atol=1e-8) for k in u0)
    # same seed, same refined weights; a saved directory works as init; the finished run is found again
    again = c2lst.tl.pretrain(tiles, init=central, steps=3, batch_size=4, seed=0, out=out, resume=True)
    assert again.weights_sha256 == refined.weights_sha256
    central_dir = tmp_path / "central"
    central.save(central_dir)
    from_dir = c2lst.tl.pretrain(tiles, init=central_dir, steps=3, batch_size=4, seed=0)
    assert from_dir.weights_sha256 == refined.weights_sha256
    # resuming without init must not return the refined model
    with pytest.raises(ValueError, match="already holds a central model"):
        c2lst.tl.pretrain(tiles, config="tiny", steps=3, batch_size=4, seed=0, out=out, resume=True)
    with pytest.raises(ValueError, match="differs from the configuration of `init`"):
        c2lst.tl.pretrain(tiles, init=central, config="cpu", steps=3)
    with pytest.raises(ValueError, match="not a saved central model"):
        c2lst.tl.pretrain(tiles, init=tmp_path / "missing", steps=3)


def test_pretrain_inputs_histology_and_sdata(sdata):
    tiles = np.random.default_rng(2).integers(60, 230, size=(20, 3, 64, 64), dtype=np.uint8)
    histo = SimpleNamespace(tiles=tiles, mpp=1.5625)  # the HistologyTiles interface
    m = c2lst.tl.pretrain(histo, config="tiny", steps=2, batch_size=4)
    assert m.summary["n_images"] == 20 and m.summary["source"] == "SimpleNamespace"
    # SpatialData: spot patches when present (25 spots)...
    m = c2lst.tl.pretrain(sdata, config="tiny", steps=2, batch_size=4)
    assert m.summary["n_images"] == 25
    # ...else the image element is tiled at the configuration's µm/px (600 px at 2 µm/px, 100 µm tiles)
    del sdata.tables["table"].obsm["c2lst_patch"]
    m = c2lst.tl.pretrain(sdata, config="tiny", steps=2, batch_size=4)
    assert m.summary["n_images"] == 144


def test_adapt_records_and_rules(sdata, central, tmp_path):
    table = sdata.tables["table"]
    central.save(tmp_path / "central")
    local = c2lst.tl.adapt(sdata, tmp_path / "central", train_fraction=0.6, steps=3, batch_size=4, seed=0)
    assert isinstance(local, LocalModel) and local.central.weights_sha256 == central.weights_sha256
    rec = table.uns["c2lst_adapt"]
    assert len(rec["train_spots"]) == 15 and set(rec["train_spots"]) <= set(table.obs_names)
    assert rec["central"]["weights_sha256"] == central.weights_sha256
    panel = GenePanel.from_table(table)  # chosen on the training spots, stored
    assert rec["panel_genes"] == list(panel.genes) and panel.params["n_train"] == 15
    assert local.n_conditioned <= 0.05 * central.n_params
    assert local.decoder is not None and rec["params"]["decoder_steps"] == 3  # min(200, steps)
    assert rec["decoder_loss_first"] > 0 and rec["n_conditioned"] == local.n_conditioned
    with pytest.raises(ValueError, match="decoder_steps"):
        c2lst.tl.adapt(sdata, central, steps=2, decoder_steps=-1, overwrite=True)
    assert c2lst.tl.adapt(sdata, central, steps=2, batch_size=4, decoder_steps=0, overwrite=True).decoder is None
    with pytest.raises(ValueError, match="already exists"):
        c2lst.tl.adapt(sdata, central, steps=2, batch_size=4)
    # an existing panel is used, not replaced
    local2 = c2lst.tl.adapt(sdata, central, steps=2, batch_size=4, overwrite=True)
    assert local2.panel["genes"] == list(panel.genes)
    assert table.uns["c2lst_adapt"]["train_spots"] == list(table.obs_names)
    # key_added names the record; copy=True writes into a copy and returns (copy, model)
    c2lst.tl.adapt(sdata, central, steps=1, batch_size=4, decoder_steps=0, key_added="other")
    assert table.uns["other"]["params"]["steps"] == 1 and "adapt" not in table.uns.get("c2lst", {})
    before = set(table.uns)
    out, local3 = c2lst.tl.adapt(sdata, central, steps=1, batch_size=4, decoder_steps=0, key_added="copied", copy=True)
    assert isinstance(local3, LocalModel) and out is not sdata and "copied" in out.tables["table"].uns
    assert set(table.uns) == before
    with pytest.raises(ValueError, match="either `train_mask` or `train_fraction`"):
        c2lst.tl.adapt(sdata, central, train_mask=np.arange(5), train_fraction=0.5, overwrite=True)
    with pytest.raises(ValueError, match="train_fraction"):
        c2lst.tl.adapt(sdata, central, train_fraction=1.5, overwrite=True)
    with pytest.raises(ValueError, match="cond_dropout"):
        c2lst.tl.adapt(sdata, central, cond_dropout=1.0, overwrite=True)
    with pytest.raises(ValueError, match="`central`"):
        c2lst.tl.adapt(sdata, 3, overwrite=True)
    with pytest.raises(ValueError, match="extract_patches"):
        c2lst.tl.adapt(sdata, central, patch_key="nope", overwrite=True)


def test_lora_is_optional(sdata, central, monkeypatch):
    pytest.importorskip("peft")  # a test dependency; without it the error below is what users see
    plain = c2lst.tl.adapt(sdata, central, steps=1, batch_size=2)
    lora = c2lst.tl.adapt(sdata, central, lora_rank=2, steps=1, batch_size=2, overwrite=True)
    assert lora.lora_rank == 2 and lora.n_trainable > plain.n_trainable
    assert sdata.tables["table"].uns["c2lst_adapt"]["params"]["lora_rank"] == 2
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(ValueError, match="peft"):
        c2lst.tl.adapt(sdata, central, lora_rank=2, steps=1, batch_size=2, overwrite=True)


def test_generate_sources(sdata, central):
    table = sdata.tables["table"]
    mask = np.zeros(table.n_obs, bool)
    mask[::2] = True  # 13 training spots
    local = c2lst.tl.adapt(sdata, central, train_mask=mask, steps=3, batch_size=4, seed=0)
    panel = GenePanel.from_dict(local.panel)
    expr = panel.expression(table)

    c2lst.tl.generate(sdata, local, source="spots", n_per_profile=2, steps=3, seed=0)
    syn = sdata.tables["c2lst_synthetic"]
    patches = np.asarray(syn.obsm["c2lst_patch"])
    assert syn.n_obs == 26 and patches.shape == (26, 3, 32, 32) and patches.dtype == np.uint8
    assert list(syn.var_names) == list(panel.genes)
    np.testing.assert_allclose(syn.X, np.repeat(expr[mask], 2, axis=0), rtol=1e-6)
    assert list(syn.obs.columns) == ["source_spot", "partner_spot", "mix_weight", "seed", "profile_index"]
    assert set(syn.obs["source_spot"]) == set(table.obs_names[mask])
    assert syn.obs["seed"].nunique() == 26 and syn.uns["c2lst_synthetic"]["params"]["sampler"] == RECIPE.sampler
    assert syn.uns["c2lst_synthetic"]["params"]["guidance_reference"] == RECIPE.guidance_reference
    assert not np.array_equal(patches[0], patches[1])  # two seeds of one profile
    with pytest.raises(ValueError, match="already exists"):
        c2lst.tl.generate(sdata, local, steps=3)
    c2lst.tl.generate(sdata, local, source="spots", n_per_profile=2, steps=3, seed=0, key_added="again")
    assert np.array_equal(np.asarray(sdata.tables["again"].obsm["c2lst_patch"]), patches)
    c2lst.tl.generate(sdata, local, source="spots", n_per_profile=2, steps=3, seed=0, key_added="again",
                      overwrite=True, sampler="ddim")
    assert not np.array_equal(np.asarray(sdata.tables["again"].obsm["c2lst_patch"]), patches)

    c2lst.tl.generate(sdata, local, source="mixup", n_per_profile=3, n_neighs=2, steps=3, seed=1, key_added="mix")
    mix = sdata.tables["mix"]
    train = set(table.obs_names[mask])
    assert mix.n_obs == 39 and set(mix.obs["partner_spot"]) <= train
    assert (mix.obs["partner_spot"] != mix.obs["source_spot"]).all()
    w = mix.obs["mix_weight"].to_numpy()
    assert ((w >= 0.5) & (w <= 1.0)).all()  # the recipe's range (c2lst.core.recipe.RECIPE.mix_range)
    assert mix.uns["mix"]["params"]["train_spots"] == list(table.obs_names[mask])  # what the adapter saw
    rows = table.obs_names.get_indexer(mix.obs["source_spot"]), table.obs_names.get_indexer(mix.obs["partner_spot"])
    np.testing.assert_allclose(mix.X, w[:, None] * expr[rows[0]] + (1 - w[:, None]) * expr[rows[1]], rtol=1e-5,
                               atol=1e-6)

    # n_neighbors is n_neighs' old name: it warns and still works; both is an error
    with pytest.warns(FutureWarning, match="`n_neighbors` is now `n_neighs`"):
        c2lst.tl.generate(sdata, local, source="mixup", n_per_profile=3, n_neighbors=2, steps=3, seed=1, key_added="old")
    assert np.array_equal(sdata.tables["old"].obsm["c2lst_patch"], mix.obsm["c2lst_patch"])
    with pytest.raises(ValueError, match="pass `n_neighs` only"):
        c2lst.tl.generate(sdata, local, source="mixup", n_neighbors=2, n_neighs=2, key_added="both")
    # copy=True: the copy holds the new table, the input does not
    out = c2lst.tl.generate(sdata, local, source="spots", steps=2, seed=0, key_added="copied", copy=True)
    assert "copied" in out.tables and "copied" not in sdata.tables and out.images.keys() == sdata.images.keys()

    # partners come from the source spot's own section (`library_key`; default obs["library_id"] when present)
    table.obs["half"] = np.where(np.arange(table.n_obs) < 12, "A", "B")
    c2lst.tl.generate(sdata, local, source="mixup", n_per_profile=2, steps=2, seed=1, mix_range=(0.2, 0.8),
                      library_key="half", key_added="sec")
    lib = table.obs["half"]
    sec = sdata.tables["sec"].obs
    assert (lib[sec["source_spot"]].to_numpy() == lib[sec["partner_spot"]].to_numpy()).all()
    assert sec["mix_weight"].between(0.2, 0.8).all()
    with pytest.raises(ValueError, match="library_key"):
        c2lst.tl.generate(sdata, local, source="mixup", library_key="slide", key_added="bad")
    with pytest.raises(ValueError, match="mix_range"):
        c2lst.tl.generate(sdata, local, source="mixup", mix_range=(0.8, 0.2), key_added="bad")
    with pytest.raises(ValueError, match="guidance_reference"):
        c2lst.tl.generate(sdata, local, guidance_reference="none", key_added="bad")
    assert "bad" not in sdata.tables

    # image-to-image: each patch starts from its source spot's patch
    kw = {"source": "mixup", "n_per_profile": 1, "steps": 4, "sampler": "dpmsolver++", "seed": 1}  # deterministic
    c2lst.tl.generate(sdata, local, strength=0.25, key_added="i2i", **kw)
    i2i = sdata.tables["i2i"]
    assert i2i.uns["i2i"]["params"]["strength"] == 0.25
    own = np.asarray(table.obsm["c2lst_patch"])[table.obs_names.get_indexer(i2i.obs["source_spot"])].astype(float)
    near = np.abs(np.asarray(i2i.obsm["c2lst_patch"]).astype(float) - own).mean()
    c2lst.tl.generate(sdata, local, strength=1.0, key_added="noise", **kw)
    far = np.abs(np.asarray(sdata.tables["noise"].obsm["c2lst_patch"]).astype(float) - own).mean()  # from noise
    assert near < far, (near, far)

    user = expr[:3]
    c2lst.tl.generate(sdata, local, source=user, steps=2, key_added="user")
    assert sdata.tables["user"].n_obs == 3
    df = pd.DataFrame(user, columns=list(panel.genes), index=["a", "b", "c"]).iloc[:, ::-1]
    c2lst.tl.generate(sdata, local, source=df, steps=2, key_added="user_df")
    assert list(sdata.tables["user_df"].obs["source_spot"]) == ["a", "b", "c"]
    assert np.array_equal(np.asarray(sdata.tables["user_df"].obsm["c2lst_patch"]),
                          np.asarray(sdata.tables["user"].obsm["c2lst_patch"]))

    # spots: measured spots the model was not adapted on as the sources (profiles, mixup partners, patches)
    other = ~mask
    c2lst.tl.generate(sdata, local, source="mixup", spots=other, n_per_profile=2, n_neighs=2, steps=2, seed=1,
                      strength=0.5, key_added="others")
    others = sdata.tables["others"]
    assert set(others.obs["source_spot"]) == set(table.obs_names[other]) >= set(others.obs["partner_spot"])
    assert others.uns["others"]["params"]["spots"] == "given" and mix.uns["mix"]["params"]["spots"] == "train_spots"
    c2lst.tl.generate(sdata, local, source="spots", spots=mask, steps=2, seed=0, key_added="same")
    c2lst.tl.generate(sdata, local, source="spots", steps=2, seed=0, key_added="default")
    assert np.array_equal(np.asarray(sdata.tables["same"].obsm["c2lst_patch"]),  # the training spots, given or not
                          np.asarray(sdata.tables["default"].obsm["c2lst_patch"]))
    with pytest.raises(ValueError, match="integer"):  # an index list is not read as a mask
        c2lst.tl.generate(sdata, local, spots=np.flatnonzero(other), key_added="bad")
    with pytest.raises(ValueError, match="selects no spot"):
        c2lst.tl.generate(sdata, local, spots=np.zeros(table.n_obs, bool), key_added="bad")
    with pytest.raises(ValueError, match="user profiles"):
        c2lst.tl.generate(sdata, local, source=user, spots=other, key_added="bad")
    assert "bad" not in sdata.tables

    bad = user.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        c2lst.tl.generate(sdata, local, source=bad, steps=2, key_added="bad")
    with pytest.raises(ValueError, match="expected"):
        c2lst.tl.generate(sdata, local, source=user[:, :3], steps=2, key_added="bad")
    with pytest.raises(ValueError, match="lacks"):
        c2lst.tl.generate(sdata, local, source=df.iloc[:, 1:], steps=2, key_added="bad")
    with pytest.raises(ValueError, match="source"):
        c2lst.tl.generate(sdata, local, source="everything", key_added="bad")
    with pytest.raises(ValueError, match="unknown sampler"):
        c2lst.tl.generate(sdata, local, sampler="euler", key_added="bad")
    with pytest.raises(ValueError, match="source='spots' or 'mixup'"):
        c2lst.tl.generate(sdata, local, source=user, strength=0.5, key_added="bad")
    with pytest.raises(ValueError, match="strength"):
        c2lst.tl.generate(sdata, local, strength=0.0, key_added="bad")
    with pytest.raises(ValueError, match="SpatialData"):
        c2lst.tl.generate(table, local, key_added="bad")
    with pytest.raises(ValueError, match="LocalModel"):
        c2lst.tl.generate(sdata, central, key_added="bad")


def test_central_default_missing_is_clear(tmp_path, monkeypatch):
    from c2lst.datasets import _central

    monkeypatch.setattr(_central, "CENTRAL_DIR", tmp_path / "central_default")
    with pytest.raises(ValueError, match="no bundled central model"):
        c2lst.datasets.central_default()


def test_central_default_is_shipped():
    """The bundled model loads, is the "cpu" configuration and carries its model card."""
    from c2lst.datasets._central import CENTRAL_DIR

    model = c2lst.datasets.central_default()
    assert model.config.name == "cpu" and model.config.tile_px == 64
    card = (CENTRAL_DIR / "README.md").read_text()
    assert "scripts/train_central_default.py" in card
    assert not any(p.suffix in {".pt", ".pth", ".bin", ".pkl"} for p in CENTRAL_DIR.rglob("*"))
    size_mb = sum(p.stat().st_size for p in CENTRAL_DIR.rglob("*") if p.is_file()) / 2**20
    assert size_mb < 50


def test_mixed_precision_auto_follows_the_hardware(monkeypatch):
    """'auto' is bf16 only where bf16 runs natively (probed, never assumed); other values pass through."""
    import torch

    from c2lst.core import runtime

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for probes, expected in (({"_is_avx512_bf16_supported": True}, "bf16"), ({"_is_amx_tile_supported": True}, "bf16"),
                             ({}, "no")):
        for name in runtime._CPU_BF16_PROBES:
            value = probes.get(name, False)
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value, raising=False)
        assert runtime.native_bf16() is (expected == "bf16")
        assert runtime.resolve_mixed_precision("auto") == expected
        assert runtime.resolve_mixed_precision("no") == "no" and runtime.resolve_mixed_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="mixed_precision"):
        runtime.resolve_mixed_precision("fp8")
