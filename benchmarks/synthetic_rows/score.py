# ruff: noqa: E402, B023  (a script: threads are set before torch-using imports; the closures run inside their loop)
"""Score predictor variants (Predictor.fit extra_weight / extra_align) on tiles saved by generate.py.

Usage: python benchmarks/synthetic_rows/score.py FRACTION SEED C2,C3,C4,C5,C6 > scores.jsonl
"""

import os

OUT = os.environ.get("C2LST_EXP", "/tmp/exp2")  # where tiles (npz) are written and read
import json
import sys

import numpy as np

from c2lst.benchmark._conditions import CachedFeatures
from c2lst.benchmark._data import load_sections
from c2lst.benchmark._run import _lognorm, _panel, _select
from c2lst.core.predictor import Predictor
from c2lst.metrics import handcrafted_features, pearson_per_gene

fraction = float(sys.argv[1])
seed = int(sys.argv[2])
tests = sys.argv[3].split(",")
data = load_sections(("C2", "C3", "C4", "C5", "C6"), cache_dir="/tmp/c2cache")
hand = CachedFeatures(handcrafted_features, "h")
rows = []
for test_name in tests:
    d = np.load(f"{OUT}/gen_{test_name}_{fraction}_{seed}.npz")
    test = [s for s in data if s.name == test_name][0]
    train = [s for s in data if s.name != test_name]
    picks = _select(train, fraction, seed)
    counts = np.concatenate([s.counts[p] for s, p in zip(train, picks, strict=False)])
    library = np.concatenate([s.library[p] for s, p in zip(train, picks, strict=False)])
    panel, cols = _panel(counts, library, data[0].genes, 50)
    patches = np.concatenate([s.patches[p] for s, p in zip(train, picks, strict=False)])
    y = np.concatenate([_lognorm(s, cols, panel, p) for s, p in zip(train, picks, strict=False)])
    truth = _lognorm(test, cols, panel)
    ey = panel.destandardize(d["profiles"])
    src = d["src"]
    group = d["group"]

    def run(**kw):
        m = Predictor(encoder=hand, handcrafted=False, seed=seed)
        if kw:
            m.fit(patches, y, extra_patches=d["mix"], extra_targets=ey, groups=group, extra_groups=group[src], **kw)
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
    rows.append(r)
    print(json.dumps(r), flush=True)
