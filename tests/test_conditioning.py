"""tl.evaluate_conditioning and its metrics: does the adapted model use the expression profile?"""
from __future__ import annotations

import numpy as np
import pytest

import c2lst
from c2lst.core.models import LocalModel
from c2lst.core.modulation import GeneModulation
from c2lst.core.recipe import RECIPE
from c2lst.metrics import conditioning_scores, profile_response
from c2lst.tl._conditioning import partner_spots

pytestmark = pytest.mark.usefixtures("no_progress_bar")


def test_conditioning_scores_values():
    s = conditioning_scores(np.array([1.0, 1.0]), np.array([1.5, 1.5]), np.array([2.0, 2.0]))
    assert s["conditioning_gain"] == pytest.approx(0.5) and s["profile_gain"] == pytest.approx(1 / 3)
    assert s["profile_share"] == pytest.approx(0.5) and s["own_wins"] == 1.0 and s["n"] == 2
    flat = conditioning_scores(np.ones(3), np.ones(3), np.ones(3))  # a profile that changes nothing
    assert flat["conditioning_gain"] == 0 and np.isnan(flat["profile_share"]) and flat["own_wins"] == 0
    with pytest.raises(ValueError, match="same number"):
        conditioning_scores(np.ones(3), np.ones(2), np.ones(3))


def test_profile_response_follows_the_change():
    rng = np.random.default_rng(0)
    dy = rng.normal(size=(20, 4))
    assert profile_response(2 * dy + 1, dy)["delta_r"] == pytest.approx(1.0)
    assert profile_response(0.1 * dy + 1, dy)["delta_slope"] == pytest.approx(0.1)  # aligned, a tenth as far
    assert profile_response(0.1 * dy + 1, dy)["delta_r_pooled"] == pytest.approx(1.0)
    assert profile_response(-dy, dy)["delta_r_pooled"] == pytest.approx(-1.0)
    noise = profile_response(rng.normal(size=(20, 4)), dy)
    assert abs(noise["delta_r"]) < 0.5 and noise["n_genes"] == 4
    with pytest.raises(ValueError, match="same shape"):
        profile_response(dy[:, :3], dy)


def test_partner_spots_stay_in_their_section():
    sections = np.array(["a"] * 5 + ["b"] * 3)
    partner = partner_spots(sections, seed=1)
    assert (partner != np.arange(8)).all() and (sections[partner] == sections).all()
    assert sorted(partner) == list(range(8))  # each spot is the partner of exactly one spot
    assert np.array_equal(partner, partner_spots(sections, seed=1))
    with pytest.raises(ValueError, match="at least two spots"):
        partner_spots(np.array(["a", "a", "b"]), seed=0)


def test_evaluate_conditioning(tiny_patched, tiny_central):
    sdata, central = tiny_patched, tiny_central
    table = sdata.tables["table"]
    mask = np.zeros(table.n_obs, bool)
    mask[::2] = True  # 13 training spots, 12 held out
    # a zero-initialised adapter computes the central model whatever the profile: no gain, no share
    panel = c2lst.pp.gene_panel(sdata, n_top_genes=8, train_mask=mask)
    zero = LocalModel(central, GeneModulation.for_unet(central.unet, len(panel), hidden=8, cond_dim=8),
                      panel.to_dict(), summary={"train_spots": list(table.obs_names[mask])})
    flat = c2lst.tl.evaluate_conditioning(sdata, zero, n_draws=2, key_added="zero")
    assert flat["n"] == 12 and flat["conditioning_gain"] == 0 and np.isnan(flat["profile_share"])
    assert table.uns["zero"]["params"]["spots"] == list(table.obs_names[~mask])

    local = c2lst.tl.adapt(sdata, central, train_mask=mask, steps=6, batch_size=4, decoder_steps=0, seed=0,
                           overwrite=True)
    predictor = c2lst.tl.predict(sdata, train_mask=mask, synthetic=None, seed=0)
    scores = c2lst.tl.evaluate_conditioning(sdata, local, predictor=predictor, n_draws=2, steps=2)
    assert scores["loss_own"] != scores["loss_unconditional"] and scores["loss_own"] != scores["loss_partner"]
    for key in ("delta_r", "delta_r_pooled", "delta_r_real", "r_generated", "r_real"):
        assert -1 <= scores[key] <= 1
    assert np.isfinite(scores["delta_slope"])
    # the reference: the same response score on the held-out spots' real patches and their partners' patches
    held = np.flatnonzero(~mask)
    names = list(table.obs_names[held])
    partner = np.array([names.index(n) for n in table.uns["c2lst_conditioning"]["params"]["partners"]])
    read = predictor.predict(np.asarray(table.obsm["c2lst_patch"])[held], groups=np.zeros(len(held), dtype=int))
    pcols = [predictor.genes.index(g) for g in panel.genes if g in predictor.genes]
    y = panel.expression(table)[held][:, [list(panel.genes).index(predictor.genes[c]) for c in pcols]]
    read = read[:, pcols]
    on_real = profile_response(read - read[partner], y - y[partner])
    assert scores["delta_r_real"] == pytest.approx(on_real["delta_r"])
    assert scores["delta_slope_real"] == pytest.approx(on_real["delta_slope"])
    assert scores["delta_r_real"] != pytest.approx(scores["delta_r"])
    rec = table.uns["c2lst_conditioning"]
    assert rec["scores"] == scores and len(rec["params"]["partners"]) == 12
    assert rec["params"]["guidance_reference"] == "unconditional"
    assert set(rec["params"]["partners"]) == set(rec["params"]["spots"])
    again = c2lst.tl.evaluate_conditioning(sdata, local, predictor=predictor, n_draws=2, steps=2, overwrite=True)
    assert again == scores  # same seed, same scores
    with pytest.raises(ValueError, match="already exists"):
        c2lst.tl.evaluate_conditioning(sdata, local, n_draws=1)
    out, copied = c2lst.tl.evaluate_conditioning(sdata, local, n_draws=1, key_added="copied", copy=True)
    assert "copied" in out.tables["table"].uns and "copied" not in table.uns and copied["n"] == 12
    with pytest.raises(ValueError, match="booleans"):
        c2lst.tl.evaluate_conditioning(sdata, local, spots=np.flatnonzero(~mask), overwrite=True)
    with pytest.raises(ValueError, match="LocalModel"):
        c2lst.tl.evaluate_conditioning(sdata, central, overwrite=True)
    with pytest.raises(ValueError, match="guidance_reference"):
        c2lst.tl.evaluate_conditioning(sdata, local, guidance_reference="zero", overwrite=True)
    with pytest.raises(ValueError, match="fitted Predictor"):
        c2lst.tl.evaluate_conditioning(sdata, local, predictor="ridge", overwrite=True)
    everyone = c2lst.tl.adapt(sdata, central, steps=1, batch_size=4, decoder_steps=0, overwrite=True)
    with pytest.raises(ValueError, match="every spot"):
        c2lst.tl.evaluate_conditioning(sdata, everyone, overwrite=True)


def test_adapt_local_unconditional(tiny_patched, tiny_central):
    sdata, central = tiny_patched, tiny_central
    import torch

    table = sdata.tables["table"]
    local = c2lst.tl.adapt(sdata, central, steps=4, batch_size=4, decoder_steps=0, seed=0, local_unconditional=True)
    assert local.modulation.local and table.uns["c2lst_adapt"]["params"]["local_unconditional"] is True
    # the unconditional branch is the locally adapted model now, no longer the central one
    z = torch.randn(2, central.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([10, 500])
    with torch.no_grad():
        off = local.eps(z, t, torch.zeros(2, local.n_genes), keep=torch.zeros(2))
        ref = central.unet(z, t).sample
    assert not torch.allclose(off, ref)
    plain = c2lst.tl.adapt(sdata, central, steps=2, batch_size=4, decoder_steps=0, overwrite=True,
                           local_unconditional=False)
    assert not plain.modulation.local and table.uns["c2lst_adapt"]["params"]["local_unconditional"] is False
    default = c2lst.tl.adapt(sdata, central, steps=1, batch_size=4, decoder_steps=0, overwrite=True)
    assert default.modulation.local is RECIPE.local_unconditional  # the recipe's choice
    with pytest.raises(ValueError, match="local_unconditional"):
        c2lst.tl.adapt(sdata, central, steps=1, local_unconditional="yes", overwrite=True)
    with pytest.raises(ValueError, match="`tissue` tiles train"):
        c2lst.tl.adapt(sdata, central, steps=1, tissue=4, local_unconditional=False, overwrite=True)


def test_adapt_pca_conditioning(tiny_patched, tiny_central, tmp_path):
    sdata, central = tiny_patched, tiny_central
    import torch

    table = sdata.tables["table"]
    local = c2lst.tl.adapt(sdata, central, steps=3, batch_size=4, decoder_steps=0, seed=0, n_comps=3)
    mod = local.modulation
    assert mod.n_comps == 3 and mod.projection.shape == (local.n_genes, 3)
    assert table.uns["c2lst_adapt"]["params"]["n_comps"] == 3 and local.summary["n_comps"] == 3
    panel = c2lst.pp.GenePanel.from_dict(local.panel)
    genes = panel.standardize(panel.expression(table))
    scores = (genes - genes.mean(axis=0)) @ mod.projection.numpy()
    np.testing.assert_allclose(np.cov(scores.T), np.eye(3), atol=1e-4)  # whitened principal axes
    # saved and loaded with the adapter: the same predictions
    local.save(tmp_path / "adapter")
    back = LocalModel.load(tmp_path / "adapter", central)
    z = torch.randn(3, central.config.latent_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    t, g = torch.tensor([5, 300, 900]), torch.from_numpy(genes[:3])
    with torch.no_grad():
        assert torch.equal(local.eps(z, t, g), back.eps(z, t, g))
        ref = central.unet(z, t).sample
        fresh = GeneModulation.for_unet(central.unet, local.n_genes, hidden=8, cond_dim=8, n_comps=3)
        fresh.fit_projection(torch.from_numpy(genes))
        with fresh.applied(central.unet, g):  # zero-initialised: still exactly the central model
            assert torch.equal(central.unet(z, t).sample, ref)
        assert not torch.equal(fresh.embed(g), fresh.embed(torch.from_numpy(genes[3:6])))  # the profile is read
    with pytest.raises(ValueError, match="n_comps"):
        c2lst.tl.adapt(sdata, central, steps=1, n_comps=-1, overwrite=True)
    with pytest.raises(ValueError, match="n_comps"):
        GeneModulation.for_unet(central.unet, 4, hidden=8, cond_dim=8, n_comps=5)
