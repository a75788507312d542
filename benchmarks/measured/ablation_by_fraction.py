"""The local-only ablation (d) against the c2l rows (c) per fraction for one seed, from the committed tables.

Usage::

    python benchmarks/measured/ablation_by_fraction.py [--seed 0]

Reads ``loso_per_section.csv`` (per-section predictor, column ``pcc``) and ``stack_scores.csv`` (columns ``aug`` and
``stack`` per ``tiles``) beside this script and prints, per fraction where both generators were scored, the five-fold
means, the paired differences with the number of folds above zero, and the gain of each generator's rows on top of
classic augmentation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    seed = parser.parse_args().seed
    rows = pd.read_csv(HERE / "loso_per_section.csv")
    stack = pd.read_csv(HERE / "stack_scores.csv")
    scores = rows[rows.seed == seed].pivot_table(index=["fraction", "test_section"], columns="condition", values="pcc")
    stacked = stack[stack.seed == seed].pivot_table(index=["fraction", "test"], columns="tiles", values=["aug", "stack"])
    both = sorted(set(scores.dropna(subset=["c2l", "local_only"]).index.get_level_values(0))
                  & set(stacked.dropna().index.get_level_values(0)))

    def paired(diff: pd.Series) -> str:
        return f"{diff.mean():+.4f} ({(diff > 0).sum()}/{len(diff)})"

    for f in both:
        q, st = scores.loc[f], stacked.loc[f]
        over_aug = {t: st["stack"][t] - st["aug"][t] for t in ("c2l", "local_only")}
        print(f"f = {f}: real {q.real.mean():.4f}, c2l {q.c2l.mean():.4f}, local_only {q.local_only.mean():.4f}, "
              f"augment {st['aug']['c2l'].mean():.4f}")
        print(f"  local_only - real {paired(q.local_only - q.real)}; c2l - local_only {paired(q.c2l - q.local_only)}: "
              + ", ".join(f"{k} {v:+.4f}" for k, v in (q.c2l - q.local_only).items()))
        print(f"  over augment: c2l {paired(over_aug['c2l'])}, local_only {paired(over_aug['local_only'])}, "
              f"c2l - local_only {(over_aug['c2l'] - over_aug['local_only']).mean():+.4f}")


if __name__ == "__main__":
    main()
