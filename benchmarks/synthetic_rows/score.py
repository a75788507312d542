# ruff: noqa: E402, B023  (a script: threads are set before torch-using imports; the closures run inside their loop)
"""Score predictor variants (Predictor.fit extra_weight / extra_align) on tiles saved by generate.py.

Columns: ``real`` (real pairs alone); ``raw_W`` / ``align_W`` (the c2l tiles at weight W, features standardised on
the real spots' / on their own moments; ``cv``: W by leave-one-training-section-out CV); ``smix_W`` (the
generator's ablation: the same spatial-mixup profiles paired with their source spot's real patch).

Usage: python benchmarks/synthetic_rows/score.py FRACTION SEED C2,C3,C4,C5,C6 > scores.jsonl
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
    test, panel, patches, y, group = fold.test, fold.panel, fold.patches, fold.y, fold.group
    truth = fold.truth()
    ey = panel.destandardize(d["profiles"])
    src = d["src"]

    def run(extra=d["mix"], **kw):
        m = Predictor(encoder=hand, handcrafted=False, seed=seed)
        if kw:
            m.fit(patches, y, extra_patches=extra, extra_targets=ey, groups=group, extra_groups=group[src], **kw)
        else:
            m.fit(patches, y)
        return float(np.nanmean(pearson_per_gene(truth, m.predict(test.patches)))), m.fit_info.get("extra_weight")

    r = {"test": test_name, "fraction": fraction, "seed": seed}
    r["real"], _ = run()
    for w in (0.25, 0.5, 1.0):
        r[f"raw_{w}"], _ = run(extra_weight=w)
        r[f"align_{w}"], _ = run(extra_weight=w, extra_align="moments")
    r["raw_cv"], r["raw_cv_w"] = run(extra_weight="cv")
    r["align_cv"], r["align_cv_w"] = run(extra_weight="cv", extra_align="moments")
    for w in (0.25, 1.0):
        r[f"smix_{w}"], _ = run(patches[src], extra_weight=w)
    print(json.dumps(r), flush=True)
