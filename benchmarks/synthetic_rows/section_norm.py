# ruff: noqa: E402, B023  (a script: threads are set before torch-using imports; the closures run inside their loop)
"""Score the c2l tiles of generate.py with ``Predictor(group_norm=True)`` (``tl.predict(batch_key=...)``).

Each training section's features are standardised on that section's own patches and its targets centred on its own
mean; the held-out section's features on its own patches (images only). The synthetic rows of a section are
standardised on their own moments and their profiles centred on the source section's real mean. Columns: ``real`` /
``sec`` (real pairs alone: the floor / per-section), ``sec_W`` (per-section with the c2l rows at weight W),
``align_W`` (the floor's standardisation with the c2l rows aligned at weight W, as score.py), ``sec_cv`` /
``sec_cv_w`` (per-section, the weight chosen by leave-one-training-section-out CV, and that weight).

Usage: python benchmarks/synthetic_rows/section_norm.py FRACTION SEED C2,C3,C4,C5,C6 > scores.jsonl
"""

import json

import numpy as np
import torch

torch.set_num_threads(1)
from _common import arguments, tile_folds

from c2lst.benchmark._conditions import CachedFeatures
from c2lst.core.predictor import Predictor
from c2lst.metrics import handcrafted_features, pearson_per_gene

fraction, seed, tests = arguments()
hand = CachedFeatures(handcrafted_features, "h")
for fold, d in tile_folds(fraction, seed, tests):
    truth, group, src = fold.truth(), fold.group, d["src"]
    ey = fold.panel.destandardize(d["profiles"])

    def run(norm: bool, w: float | str | None = None) -> float:
        m = Predictor(encoder=hand, handcrafted=False, seed=seed, group_norm=norm)
        kw = {"groups": group} if norm else {}
        if w is not None:
            kw.update(extra_patches=d["mix"], extra_targets=ey, extra_weight=w, extra_align="moments",
                      extra_groups=group[src])
            kw.setdefault("groups", group)
        m.fit(fold.patches, fold.y, **kw)
        cv_w[norm] = m.fit_info.get("extra_weight")
        return float(np.nanmean(pearson_per_gene(truth, m.predict(fold.test.patches))))

    cv_w: dict[bool, float | None] = {}
    r = {"test": fold.test.name, "fraction": fraction, "seed": seed, "real": run(False), "sec": run(True)}
    for w in (0.25, 0.5, 1.0):
        r[f"sec_{w}"] = run(True, w)
        r[f"align_{w}"] = run(False, w)
    r["sec_cv"] = run(True, "cv")
    r["sec_cv_w"] = cv_w[True]
    print(json.dumps(r), flush=True)
