"""How much does the gene adapter depend on the profile? Held-out denoising loss, own vs shuffled profiles.

An inner split of the training sections only: the outer test section (``--exclude``) is never loaded into a fit
or a score, the adapter is trained on ``--fraction`` of the spots of the remaining sections except ``--val``, and
scored on every spot of ``--val``. For each adaptation setting (``name=steps:lr:cond_dropout``) it prints the
denoising loss (``LocalModel.denoising_losses``, identical seeded noise and timesteps for every conditioning)
with each spot's own profile, with the profiles shuffled among the spots, and of the central model, overall and
per timestep quarter; and the share of the adaptation's gain that depends on which profile is given,
``(shuffled - own) / (central - own)``.

Run from the project root::

    .venv/bin/python benchmarks/adapter_conditioning.py --exclude C2 --val C3 \\
        --variants base=300:1e-3:0.1 long=1200:1e-3:0.1 --cache /tmp/c2cache
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from c2lst.benchmark._data import load_sections
from c2lst.benchmark._fold import make_fold
from c2lst.benchmark._run import SECTIONS
from c2lst.core.adaptation import adapt_local
from c2lst.core.models import CentralModel
from c2lst.datasets import central_default


def _variant(text: str) -> tuple[str, int, float, float]:
    name, _, spec = text.partition("=")
    steps, lr, dropout = spec.split(":")
    return name, int(steps), float(lr), float(dropout)


def _row(losses: dict[str, np.ndarray], t: np.ndarray, n_train_timesteps: int) -> dict[str, float]:
    out: dict[str, float] = {}
    quarters = np.minimum(4 * t // n_train_timesteps, 3)
    for label, mask in [("all", np.ones_like(t, bool))] + [(f"t{q}", quarters == q) for q in range(4)]:
        own, shuf, cen = (float(losses[k][mask].mean()) for k in ("own", "shuffled", "central"))
        out |= {f"{label}_own": own, f"{label}_shuffled": shuf, f"{label}_central": cen,
                f"{label}_gap_pct": 100 * (shuf - own) / shuf,
                f"{label}_specific": (shuf - own) / (cen - own) if cen != own else float("nan")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exclude", default="C2", help="the outer test section (never used)")
    parser.add_argument("--val", default="C3", help="inner validation section (scored, not trained on)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS))
    parser.add_argument("--root", help="her2st folder (default ../shared/data/her2st)")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=["base=300:1e-3:0.1"], help="name=steps:lr:cond_dropout")
    parser.add_argument("--n-draws", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", help="section cache folder (as the prediction benchmark's)")
    parser.add_argument("--central", help="a saved central model directory (default: the shipped central_default())")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = [s for s in args.sections if s != args.exclude]
    fold = make_fold(load_sections(tuple(names), root=args.root, cache_dir=args.cache), args.val, args.fraction,
                     args.seed)
    central = CentralModel.load(args.central) if args.central else central_default()
    z_val = fold.panel.standardize(fold.truth())
    rng = np.random.default_rng(args.seed)
    perm_val, perm_train = rng.permutation(len(z_val)), rng.permutation(len(fold.z))
    for name, steps, lr, dropout in map(_variant, args.variants):
        began = time.perf_counter()
        local = adapt_local(central, fold.patches, fold.z, fold.panel.to_dict(), steps=steps, batch_size=32, lr=lr,
                            cond_dropout=dropout, lora_rank=0, seed=args.seed)
        seconds = time.perf_counter() - began
        row = {"variant": name, "steps": steps, "lr": lr, "cond_dropout": dropout, "exclude": args.exclude,
               "val": args.val, "fraction": args.fraction, "seed": args.seed, "n_train": len(fold.z),
               "n_val": len(z_val), "adapt_s": round(seconds, 1), "loss_first": local.summary["loss_first"],
               "loss_last": local.summary["loss_last"]}
        for split, patches, z, perm in (("val", fold.test.patches, z_val, perm_val),
                                        ("train", fold.patches, fold.z, perm_train)):
            kw = {"seed": args.seed, "n_draws": args.n_draws}
            own, t = local.denoising_losses(patches, z, **kw)
            losses = {"own": own, "shuffled": local.denoising_losses(patches, z[perm], **kw)[0],
                      "central": local.denoising_losses(patches, z, conditional=False, **kw)[0]}
            row |= {f"{split}_{k}": v for k, v in _row(losses, t, central.config.num_train_timesteps).items()}
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
