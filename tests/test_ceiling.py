"""The autoencoder's realism ceiling: CentralModel/LocalModel.reconstruct and evaluate_synthetic(model=...)."""
from __future__ import annotations

import numpy as np
import pytest

import c2lst
from c2lst.metrics import fidelity_floor, handcrafted_features, reconstruction_ceiling

pytestmark = pytest.mark.usefixtures("no_progress_bar")


@pytest.fixture(scope="module")
def central(tmp_path_factory):
    tiles = np.random.default_rng(0).integers(60, 230, size=(32, 3, 40, 40), dtype=np.uint8)
    return c2lst.tl.pretrain(tiles, config="tiny", steps=6, batch_size=8, seed=0,
                             out=tmp_path_factory.mktemp("central") / "model")


def test_reconstruction_ceiling_metric():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(40, 5))
    patches = rng.integers(0, 256, size=(12, 3, 8, 8), dtype=np.uint8)
    same = reconstruction_ceiling(ref, ref[20:], patches, patches, seed=3)
    floor = fidelity_floor(ref, ref[20:], seed=3)
    # the ceiling is the *_vs_half protocol: same reference half, same size, same seed
    assert same["frechet_ceiling"] == floor["frechet_vs_half"] and same["precision_ceiling"] == floor["precision_vs_half"]
    assert same["mae_ceiling"] == 0
    shifted = reconstruction_ceiling(ref, ref[20:] + 3.0, patches, patches // 2, seed=3)
    assert shifted["frechet_ceiling"] > 10 * same["frechet_ceiling"] and shifted["precision_ceiling"] < 0.5
    assert shifted["mae_ceiling"] == pytest.approx(np.abs(patches - patches // 2.0).mean())
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction_ceiling(ref, ref, patches, patches[:3])


def test_reconstruct_and_ceiling_in_evaluate_synthetic(tiny_sdata, central):
    c2lst.pp.extract_patches(tiny_sdata, patch_um=100, patch_px=32)
    table = tiny_sdata.tables["table"]
    patches = np.asarray(table.obsm["c2lst_patch"])
    recon = central.reconstruct(patches[:5])
    assert recon.shape == (5, 3, 32, 32) and recon.dtype == np.uint8
    assert np.array_equal(recon, central.reconstruct(patches[:5], batch_size=2))  # deterministic, batch-free
    assert not np.array_equal(recon, patches[:5])

    mask = np.zeros(table.n_obs, bool)
    mask[::2] = True
    local = c2lst.tl.adapt(tiny_sdata, central, train_mask=mask, steps=2, batch_size=4, decoder_steps=2, seed=0)
    assert not np.array_equal(local.reconstruct(patches[:5]), recon)  # the local decoder decodes
    c2lst.tl.generate(tiny_sdata, local, source="spots", steps=2, seed=0)
    plain = c2lst.tl.evaluate_synthetic(tiny_sdata, train_mask=mask, table_key="table")
    res = c2lst.tl.evaluate_synthetic(tiny_sdata, train_mask=mask, table_key="table", model=local,
                                      key_added="with_ceiling")
    assert not any(k.endswith("_ceiling") for k in plain)
    assert {k: v for k, v in res.items() if not k.endswith("_ceiling")} == plain
    held = np.asarray(patches[~mask])
    rebuilt = local.reconstruct(held)
    f_ref = handcrafted_features(patches[mask]).astype(np.float64)
    expected = reconstruction_ceiling(f_ref, handcrafted_features(rebuilt).astype(np.float64), held, rebuilt)
    assert {k: res[k] for k in expected} == expected
    assert res["mae_ceiling"] > 0
    params = tiny_sdata.tables["c2lst_synthetic"].uns["with_ceiling"]["params"]
    assert params["ceiling_of"] == "held_out"
    # a second synthetic table beside the first: the spot table is still found without table_key
    c2lst.tl.generate(tiny_sdata, local, source="spots", steps=2, seed=1, key_added="second")
    again = c2lst.tl.evaluate_synthetic(tiny_sdata, synthetic="second", train_mask=mask)
    assert again["n_real"] == mask.sum()
    with pytest.raises(ValueError, match="LocalModel or CentralModel"):
        c2lst.tl.evaluate_synthetic(tiny_sdata, train_mask=mask, table_key="table", model="adapter",
                                    key_added="bad")
