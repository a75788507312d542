from __future__ import annotations

import numpy as np
import pytest

import c2lst
from c2lst.pp._split import split_mask as split_spots
from c2lst.tl._pipeline import RunResult


def test_split_spots_per_section_and_seeded():
    libs = np.array(["a"] * 10 + ["b"] * 5)
    mask = split_spots(libs, 0.5, seed=1)
    assert mask[:10].sum() == 5 and mask[10:].sum() == 2  # round(2.5) = 2, per section
    assert np.array_equal(mask, split_spots(libs, 0.5, seed=1))
    assert not np.array_equal(mask, split_spots(libs, 0.5, seed=2))
    assert split_spots(libs, 1.0, seed=0).all()
    assert split_spots(np.array(["a", "a"]), 0.9, seed=0).sum() == 1  # always leaves a held-out spot
    with pytest.raises(ValueError, match="fraction"):
        split_spots(libs, 0.0, seed=0)
    with pytest.raises(ValueError, match="section 'c' has 1 spot"):
        split_spots(np.r_[libs, ["c"]], 0.5, seed=0)
    assert split_spots(np.r_[libs, ["c"]], 1.0, seed=0).all()


@pytest.fixture(scope="module")
def tiny_central(tmp_path_factory):
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 255, size=(16, 3, 32, 32), dtype=np.uint8)
    c2lst.settings.progress_bar = False
    return c2lst.tl.pretrain(tiles, config="tiny", steps=4, seed=0)


@pytest.mark.slow
def test_run_chains_every_step(tiny_sdata, tiny_central):
    table = tiny_sdata.tables["table"]
    result = c2lst.tl.run(tiny_sdata, central=tiny_central, fraction=0.6, n_top_genes=10, adapt_steps=2, n_synthetic=1,
                          generate_steps=2, encoder="handcrafted", n_augment=1, batch_key="library_id", seed=0)
    assert isinstance(result, RunResult)
    assert table.uns["c2lst_pred"]["params"]["batch_key"] == "library_id"
    assert table.uns["c2lst_pred"]["params"]["n_augment"] == 1
    assert result.train_mask.sum() == 15 and result.local.central is tiny_central
    assert {"c2lst_patch"} <= set(table.obsm) and {"lognorm", "c2lst_pred"} <= set(table.layers)
    assert "c2lst_synthetic" in tiny_sdata.tables and tiny_sdata.tables["c2lst_synthetic"].n_obs == 15
    # leakage: the panel and the predictor saw the training spots only
    assert result.panel.params["n_train"] == 15
    assert set(table.uns["c2lst_pred"]["params"]["train_spots"]) == set(table.obs_names[result.train_mask])
    assert (result.evaluation["n_test"] == 10).all() and len(result.evaluation) == 10
    assert result.top_genes(2) == list(result.evaluation.nlargest(2, "pearson")["gene"])
    assert "15/25 training spots" in repr(result)
    with pytest.raises(ValueError, match="already exists"):  # a second run refuses to overwrite
        c2lst.tl.run(tiny_sdata, central=tiny_central, fraction=0.6, n_top_genes=10, adapt_steps=2, seed=0)


@pytest.mark.slow
def test_run_copy_and_old_panel_size(tiny_sdata, tiny_central):
    with pytest.warns(FutureWarning, match="`panel_size` is now `n_top_genes`"):
        out, result = c2lst.tl.run(tiny_sdata, central=tiny_central, fraction=0.6, panel_size=8, adapt_steps=1,
                                   n_synthetic=1, generate_steps=2, seed=0, copy=True)
    assert isinstance(result, RunResult) and len(result.panel) == 8
    assert {"c2lst_pred", "lognorm"} <= set(out.tables["table"].layers) and "c2lst_synthetic" in out.tables
    assert "c2lst_adapt" in out.tables["table"].uns
    table = tiny_sdata.tables["table"]  # the input is untouched
    assert not {"c2lst_pred", "lognorm"} & set(table.layers) and "c2lst_synthetic" not in tiny_sdata.tables
    assert "c2lst_patch" not in table.obsm


@pytest.mark.slow
def test_run_with_the_tissue_stage(tiny_sdata, tiny_central):
    result = c2lst.tl.run(tiny_sdata, central=tiny_central, fraction=0.6, n_top_genes=10, adapt_steps=2, n_synthetic=1,
                          generate_steps=2, tissue=8, seed=0)
    record = tiny_sdata.tables["table"].uns["c2lst_adapt"]
    assert record["n_tissue_tiles"] == 8 and result.local.summary["n_tissue"] == 8


def test_run_rejects_mask_and_fraction(tiny_sdata, tiny_central):
    with pytest.raises(ValueError, match="either `train_mask` or `fraction`"):
        c2lst.tl.run(tiny_sdata, central=tiny_central, train_mask=np.ones(25, bool), fraction=0.5)
