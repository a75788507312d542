"""Real pairs only: how the ridge's penalty is chosen and how features are standardised, on the benchmark's folds.

Every row is one held-out section, paired fraction and seed (``make_fold``, the benchmark's panel and targets);
the columns are the mean Pearson r over the 50 panel genes on the held-out section for each variant, with
handcrafted features (``hand_*``) and, with ``--central``, the shipped central model's features with the
handcrafted ones appended (``cent_*``, what ``encoder="central"`` uses):

- ``loo``: the package's ridge: features standardised on the paired spots, one penalty per gene by leave-one-out
  CV (``RidgeCV``), as ``Predictor`` does (``hand_loo`` is the benchmark's ``handcrafted`` floor);
- ``grp_gene`` / ``grp_shared``: the penalty by leave-one-training-section-out CV instead (per gene / one for all
  genes), maximising the mean per-section Pearson r;
- ``sec_loo`` / ``sec_grp_shared`` / ``sec_grp_gene``: each section's features standardised on that section's own
  patches (the held-out section's on its own patches: images only, no expression), the targets centred per
  training section, so the ridge learns the within-section relation that per-section Pearson r scores.

Not a test and not part of the package. Run from the project root::

    .venv/bin/python benchmarks/predictor_features.py --central > /tmp/predictor_features.jsonl
"""
from __future__ import annotations

import argparse
import json
from functools import partial

import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from c2lst.benchmark._conditions import CachedFeatures
from c2lst.benchmark._data import load_sections
from c2lst.benchmark._fold import make_fold
from c2lst.benchmark._run import SECTIONS
from c2lst.core.predictor import RIDGE_ALPHAS, ridge_per_target
from c2lst.metrics import handcrafted_features, pearson_per_gene

ALPHAS = np.asarray(RIDGE_ALPHAS)


def standardise(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    mean, sd = ref.mean(0), ref.std(0)
    sd[sd < 1e-6] = 1.0
    return (x - mean) / sd


def loo_alpha(x: np.ndarray, z: np.ndarray) -> np.ndarray:
    return RidgeCV(alphas=ALPHAS, alpha_per_target=True).fit(x, z).alpha_


def group_scores(x: np.ndarray, z: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(n_alphas, n_genes)``: per-gene Pearson r of leave-one-group-out ridge fits, mean over held-out groups."""
    out = []
    for held in np.unique(g):
        tr, va = g != held, g == held
        xt, xv = standardise(x[tr], x[tr]), standardise(x[va], x[tr])
        centre = xt.mean(0)
        u, s, vt = np.linalg.svd(xt - centre, full_matrices=False)
        uty = u.T @ (z[tr] - z[tr].mean(0))
        out.append([np.nan_to_num(pearson_per_gene(z[va], (xv - centre) @ (vt.T @ ((s / (s**2 + a))[:, None] * uty))))
                    for a in ALPHAS])
    return np.mean(out, 0)


def held_out_r(truth: np.ndarray, alpha: np.ndarray, x: np.ndarray, xt: np.ndarray, z: np.ndarray) -> float:
    """Mean per-gene Pearson r on the held-out section of a ridge fitted on ``(x, z)`` with penalties ``alpha``."""
    coef, b = ridge_per_target(x, z, np.ones(len(x)), alpha)
    return float(np.nanmean(pearson_per_gene(truth, xt @ coef.T + b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--central", action="store_true", help="also the shipped central model's features")
    parser.add_argument("--cache", default="/tmp/c2cache", help="section array cache")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_sections(SECTIONS, cache_dir=args.cache)
    hand = CachedFeatures(handcrafted_features, "handcrafted")
    kinds = {"hand": lambda p: hand(p).astype(np.float64)}
    if args.central:
        from c2lst.datasets import central_default

        central = central_default()
        cent = CachedFeatures(lambda p: central.features(p, seed=0), "central")
        kinds["cent"] = lambda p: np.concatenate([cent(p), hand(p)], 1).astype(np.float64)
    for fraction in (0.1, 0.25, 0.5, 1.0):
        for seed in (0, 1, 2) if fraction < 1 else (0,):
            for test in SECTIONS:
                fold = make_fold(data, test, fraction, seed)
                g, truth = fold.group, fold.truth()
                z = standardise(fold.y.astype(np.float64), fold.y.astype(np.float64))
                order = np.concatenate([np.flatnonzero(g == h) for h in np.unique(g)])
                zw = np.concatenate([z[g == h] - z[g == h].mean(0) for h in np.unique(g)])
                row = {"test": test, "fraction": fraction, "seed": seed}
                for kind, features in kinds.items():
                    f, ft = features(fold.patches), features(fold.test.patches)
                    score = partial(held_out_r, truth)
                    x, xt = standardise(f, f), standardise(ft, f)
                    gs = group_scores(x, z, g)
                    row[f"{kind}_loo"] = score(loo_alpha(x, z), x, xt, z)
                    row[f"{kind}_grp_gene"] = score(ALPHAS[gs.argmax(0)], x, xt, z)
                    row[f"{kind}_grp_shared"] = score(np.full(z.shape[1], ALPHAS[gs.mean(1).argmax()]), x, xt, z)
                    xw = np.concatenate([standardise(f[g == h], f[g == h]) for h in np.unique(g)])
                    xtw = standardise(ft, ft)
                    gsw = group_scores(xw, zw, g[order])
                    row[f"{kind}_sec_loo"] = score(loo_alpha(xw, zw), xw, xtw, zw)
                    row[f"{kind}_sec_grp_shared"] = score(np.full(z.shape[1], ALPHAS[gsw.mean(1).argmax()]), xw, xtw, zw)
                    row[f"{kind}_sec_grp_gene"] = score(ALPHAS[gsw.argmax(0)], xw, xtw, zw)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
