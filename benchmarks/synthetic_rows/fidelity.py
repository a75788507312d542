# ruff: noqa: E402  (a script: threads are set before torch-using imports)
"""The benchmark's synthetic-set metrics for tiles saved by generate.py (one JSON line per fold).

The c2l condition's ``synthetic.csv`` columns: fidelity (Fréchet, KID, PRDC, diversity, out-of-range share) and
cellular composition against the fold's paired real patches, and the memorisation audit against the held-out
section, in the handcrafted feature space. Tile set: C2LST_TAG (e.g. ``_local``, ``_refined``).

Usage: python benchmarks/synthetic_rows/fidelity.py FRACTION SEED C2,C3,C4,C5,C6 > fidelity.jsonl
"""

import json

import torch

torch.set_num_threads(1)
from _common import TAG, arguments, tile_folds

from c2lst.benchmark._conditions import CachedFeatures
from c2lst.benchmark._run import _synthetic_metrics
from c2lst.metrics import handcrafted_features

fraction, seed, tests = arguments()
hand = CachedFeatures(handcrafted_features, "h")
for fold, d in tile_folds(fraction, seed, tests):
    m = _synthetic_metrics(hand, fold.patches, d["mix"], fold.test.patches, seed)
    print(json.dumps({"test": fold.test.name, "fraction": fraction, "seed": seed, "tiles": TAG or "c2l", **m}),
          flush=True)
