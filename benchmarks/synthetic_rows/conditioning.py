# ruff: noqa: E402  (a script: threads are set before torch-using imports)
"""Does the generator change a tile the way the real gene-to-morphology relation says? Tiles of generate.py.

Usage: python benchmarks/synthetic_rows/conditioning.py FRACTION SEED C2,C3,C4,C5,C6 > conditioning.jsonl

For each fold it fits the real-pairs-only predictor (handcrafted features + ridge, the benchmark's floor) on the
paired training spots and reads it on the generated tiles. ``mix`` and ``own`` tiles share their start (the source
spot's patch, strength 0.8) and noise and differ only in the conditioning profile (spatial mixup vs the source
spot's own profile). Printed, as mean per-gene Pearson r over the panel:

- ``delta``: r between predicted(mix) - predicted(own) and profile(mix) - profile(own), over the tiles. Near 0: the
  profile changes the tiles in no way the real relation reads; > 0: the generator encodes it.
- ``mix_profile`` / ``source_patch``: r between the mixup profiles and the prediction on the mix tiles / on the
  source spots' real patches (the same profiles; the start alone already carries the source's morphology).
- ``heldout``: the same predictor's r on the held-out section (the benchmark's score), for scale.
- ``delta_slope`` / ``heldout_slope``: median over genes of the slope of the predicted on the profile change
  (standardised units), and of the prediction on the truth on the held-out section: how strongly the
  generator's change moves the predictor, against how strongly real tissue differences do.
"""


import json

import numpy as np
from _common import arguments, tile_folds

from c2lst.benchmark._conditions import CachedFeatures
from c2lst.core.predictor import Predictor
from c2lst.metrics import handcrafted_features, pearson_per_gene

fraction, seed, tests = arguments()
hand = CachedFeatures(handcrafted_features, "h")
for fold, d in tile_folds(fraction, seed, tests):
    test_name = fold.test.name
    model = Predictor(encoder=hand, handcrafted=False, seed=seed).fit(fold.patches, fold.y)
    src, mix_z = d["src"], d["profiles"]
    own_z = fold.z[src]
    pred_mix, pred_own = (fold.panel.standardize(model.predict(d[k])) for k in ("mix", "own"))
    pred_src = fold.panel.standardize(model.predict(fold.patches[src]))

    def r(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.nanmean(pearson_per_gene(a, b)))

    def slope(x: np.ndarray, y: np.ndarray) -> float:
        """Median over genes of the least-squares slope of y on x."""
        xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
        return float(np.median((xc * yc).sum(axis=0) / np.maximum((xc**2).sum(axis=0), 1e-12)))

    z_test = fold.panel.standardize(fold.truth())
    pred_test = fold.panel.standardize(model.predict(fold.test.patches))

    row = {"test": test_name, "fraction": fraction, "seed": seed, "n_tiles": len(src),
           "delta": r(mix_z - own_z, pred_mix - pred_own), "mix_profile": r(mix_z, pred_mix),
           "own_profile": r(own_z, pred_own), "source_patch": r(mix_z, pred_src),
           "heldout": r(z_test, pred_test), "delta_slope": slope(mix_z - own_z, pred_mix - pred_own),
           "heldout_slope": slope(z_test, pred_test),
           "delta_sd_pred": float((pred_mix - pred_own).std()), "delta_sd_profile": float((mix_z - own_z).std())}
    print(json.dumps(row), flush=True)
