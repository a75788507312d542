"""The locally adapted model's features as the predictor's encoder (LocalModel.features, tl.predict(central=local))."""
from __future__ import annotations

import numpy as np
import pytest

import c2lst
from c2lst.core.models import LocalModel
from c2lst.core.modulation import GeneModulation
from c2lst.core.predictor import Predictor

pytestmark = pytest.mark.usefixtures("no_progress_bar")


def test_local_features(tiny_patched, tiny_central):
    sdata, central = tiny_patched, tiny_central
    patches = np.asarray(sdata.tables["table"].obsm["c2lst_patch"])[:6]
    ref = central.features(patches, t=50, seed=3)
    # an adapter without local component (zero-initialised or not) gives the central model's features exactly
    zero = LocalModel(central, GeneModulation.for_unet(central.unet, 4, hidden=8, cond_dim=8, local=True),
                      {"genes": list("abcd")})
    assert np.array_equal(zero.features(patches, t=50, seed=3), ref)
    plain = c2lst.tl.adapt(sdata, central, steps=3, batch_size=4, decoder_steps=0, seed=0, local_unconditional=False,
                           key_added="plain")
    assert np.array_equal(plain.features(patches, t=50, seed=3), ref)  # the profile never enters
    local = c2lst.tl.adapt(sdata, central, steps=3, batch_size=4, decoder_steps=0, seed=0, local_unconditional=True,
                           key_added="local")
    feats = local.features(patches, t=50, seed=3)
    assert feats.shape == ref.shape and feats.dtype == np.float32 and not np.allclose(feats, ref)
    assert np.array_equal(local.features(patches, t=50, seed=3), feats)  # seeded
    np.testing.assert_allclose(local.features(patches[2:3], t=50, seed=3), feats[2:3], atol=1e-5)  # its own noise
    assert local.identity()["central"] == central.identity()
    assert local.identity()["adapter_sha256"] != plain.identity()["adapter_sha256"]


def test_predict_with_adapted_features(tiny_patched, tiny_central, tmp_path):
    sdata, central = tiny_patched, tiny_central
    table = sdata.tables["table"]
    mask = np.zeros(table.n_obs, bool)
    mask[::2] = True
    local = c2lst.tl.adapt(sdata, central, train_mask=mask, steps=3, batch_size=4, decoder_steps=0, seed=0,
                           local_unconditional=True)
    model = c2lst.tl.predict(sdata, train_mask=mask, synthetic=None, encoder="central", central=local, n_top_genes=8,
                             seed=0, handcrafted=False)
    assert model.central is local and model.params["central_identity"] == local.identity()
    n_feat = local.features(np.asarray(table.obsm["c2lst_patch"])[:1]).shape[1]
    assert len(model.stats["x_mean"]) == n_feat  # the adapted model's features alone
    pred = np.asarray(table[:, list(model.genes)].layers["c2lst_pred"])
    with_hand = c2lst.tl.predict(sdata, train_mask=mask, synthetic=None, encoder="central", central=local,
                                 n_top_genes=8, seed=0, key_added="with_hand")
    assert len(with_hand.stats["x_mean"]) > n_feat
    # saved and loaded with the same adapted model: the same predictions; the central model alone is refused
    model.save(tmp_path / "pred")
    back = Predictor.load(tmp_path / "pred", central=local)
    np.testing.assert_array_equal(back.predict(np.asarray(table.obsm["c2lst_patch"])), pred)
    with pytest.raises(ValueError, match="read its features from"):
        Predictor.load(tmp_path / "pred", central=central)
