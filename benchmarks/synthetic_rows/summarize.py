"""Mean +- sd over seeds and paired differences against real pairs alone.

Usage: python benchmarks/synthetic_rows/summarize.py [--csv OUT.csv] scores*.jsonl
(``--csv`` also writes every fold x fraction x seed row, sorted, as one CSV).
"""

import argparse

import pandas as pd

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("scores", nargs="+", help="JSON-lines files written by score.py")
parser.add_argument("--csv", help="write the per-fold rows here")
args = parser.parse_args()
df = pd.concat([pd.read_json(f, lines=True) for f in args.scores])
if args.csv:
    df.sort_values(["fraction", "seed", "test"]).to_csv(args.csv, index=False)
cols = [c for c in df if c not in ("test", "fraction", "seed") and not c.endswith("_w")]
for f, d in df.groupby("fraction"):
    per_seed = d.groupby("seed")[cols].mean()
    diff = per_seed.sub(per_seed["real"], axis=0)
    wins = d[cols].sub(d["real"], axis=0).gt(0).sum()
    out = pd.DataFrame(
        {
            "mean": per_seed.mean(),
            "sd": per_seed.std(ddof=1),
            "diff_mean": diff.mean(),
            "diff_sd": diff.std(ddof=1),
            "folds_won": wins,
            "of": len(d),
        }
    )
    print(f"fraction {f}, seeds {sorted(int(s) for s in d.seed.unique())}")
    print(out.round(4).to_string())
    print(per_seed.round(4).to_string())
    print(d.groupby("test")[cols].mean().sub(d.groupby("test")["real"].mean(), axis=0).round(4).to_string())
