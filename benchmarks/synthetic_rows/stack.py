# ruff: noqa: E402, B023  (a script: threads are set before torch-using imports; the closures run inside their loop)
"""Stack classic augmentation with the c2l rows of generate.py (``Predictor.fit(n_augment=...)`` + extra rows).

Per-section predictor (``Predictor(group_norm=True)``, as section_norm.py). The augmented copies (flip/rot90/stain
jitter of each paired training patch, ``n_augment=2``, seeded by the fold's seed) and the c2l rows are two sets of
rows, each standardised per section on its own moments and fitted at its own weight. Columns: ``sec`` (real pairs
alone), ``aug`` (+ the copies at weight 1: the benchmark's ``augment``), ``c2l`` (+ the c2l rows at weight 0.25: its
``c2l``), ``stack`` (both at those weights: its ``c2l_augment``), and ``stack_<A>_<C>`` (copies at weight A, c2l
rows at weight C: how much the choice of weights matters, read on the test sections, so not a setting to pick).

Usage: python benchmarks/synthetic_rows/stack.py FRACTION SEED C2,C3,C4,C5,C6 > stack.jsonl
"""

import json

import numpy as np
import torch

torch.set_num_threads(1)
from _common import arguments, tile_folds

from c2lst.benchmark._conditions import CachedFeatures
from c2lst.core.predictor import Predictor
from c2lst.metrics import handcrafted_features, pearson_per_gene

N_AUGMENT = 2
fraction, seed, tests = arguments()
hand = CachedFeatures(handcrafted_features, "h")
for fold, d in tile_folds(fraction, seed, tests):
    truth, group = fold.truth(), fold.group
    synthetic = {"extra_patches": d["mix"], "extra_targets": fold.panel.destandardize(d["profiles"]),
                 "extra_groups": group[d["src"]]}

    def run(augment_weight: float | None, c2l_weight: float | None) -> float:
        kw: dict = {"groups": group}
        if augment_weight is not None:
            kw.update(n_augment=N_AUGMENT, augment_weight=augment_weight)
        if c2l_weight is not None:
            kw.update(synthetic, extra_weight=c2l_weight)
        m = Predictor(encoder=hand, handcrafted=False, seed=seed, group_norm=True).fit(fold.patches, fold.y, **kw)
        return float(np.nanmean(pearson_per_gene(truth, m.predict(fold.test.patches))))

    r = {"test": fold.test.name, "fraction": fraction, "seed": seed, "sec": run(None, None), "aug": run(1.0, None),
         "c2l": run(None, 0.25), "stack": run(1.0, 0.25)}
    for a in (0.5, 1.0):
        for c in (0.25, 0.5):
            r[f"stack_{a}_{c}"] = run(a, c)
    print(json.dumps(r), flush=True)
