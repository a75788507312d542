"""Collect the measured leave-one-section-out scores into one results table and draw PCC vs fraction.

The conditions of a ``run_benchmark(group_norm=True)`` run (its ``results.csv``), the c2l / local-only rows that
``benchmarks/synthetic_rows/section_norm.py`` scored on saved tiles (column ``sec_<W>``: per-section standardisation,
the synthetic rows at weight W) and the c2l tiles stacked with classic augmentation that
``benchmarks/synthetic_rows/stack.py`` scored (column ``stack``: the benchmark's ``c2l_augment``) go into one long table in the benchmark's ``results.csv`` format (condition,
test_section, fraction, seed, pcc), which ``c2lst.pl.benchmark`` draws and ``c2lst.benchmark.summarize`` summarises.
Every condition except the ``handcrafted`` floor uses the per-section predictor.

Usage::

    python benchmarks/measured/collect.py --results /tmp/gn/results.csv \\
        --c2l sec.jsonl sec_10.jsonl --local-only sec_local.jsonl --c2l-augment stack.jsonl \\
        --out benchmarks/measured/loso_per_section.csv --figure benchmarks/measured/pcc_vs_fraction.png

(``sec.jsonl``: section_norm.py at f = 0.1, 0.25, 0.5 x seeds 0-2 on the c2l tiles; ``sec_10.jsonl``: f = 1, seed 0;
``sec_local.jsonl``: ``C2LST_TAG=_local`` at f = 0.25, seeds 0-2; ``stack.jsonl``: stack.py on the c2l tiles, f = 0.1,
0.25, 0.5 x seeds 0-2 and f = 1, seed 0.) It prints the summary and the paired differences
against ``real``.

``--results`` may also be a table this script wrote: new scores are then added to it (a row of the same condition,
section, fraction and seed is replaced), e.g. ``--results benchmarks/measured/loso_per_section.csv --c2l sec_10_1.jsonl``.
"""
from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import pandas as pd

from c2lst.benchmark import summarize
from c2lst.pl import benchmark as plot_benchmark
from c2lst.pl._benchmark import _paired_difference

COLUMNS = ["condition", "test_section", "fraction", "seed", "pcc"]


def score_rows(paths: list[str], condition: str, column: str) -> pd.DataFrame:
    """``column`` of a scoring script's JSON lines (section_norm.py, stack.py) as benchmark rows of ``condition``."""
    if not paths:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.concat([pd.read_json(p, lines=True) for p in paths]).drop_duplicates(["test", "fraction", "seed"])
    return pd.DataFrame({"condition": condition, "test_section": df["test"], "fraction": df["fraction"],
                         "seed": df["seed"], "pcc": df[column]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="results.csv of run_benchmark(group_norm=True), or a table this script wrote")
    parser.add_argument("--c2l", nargs="*", default=[], help="section_norm.py output for the c2l tiles")
    parser.add_argument("--local-only", nargs="*", default=[], help="section_norm.py output for the local-only tiles")
    parser.add_argument("--c2l-augment", nargs="*", default=[], help="stack.py output for the c2l tiles")
    parser.add_argument("--weight", type=float, default=0.25, help="synthetic-row weight to report (sec_<W>)")
    parser.add_argument("--out", required=True, help="CSV to write")
    parser.add_argument("--figure", help="PNG to write")
    a = parser.parse_args()
    run = pd.read_csv(a.results, float_precision="round_trip")[COLUMNS]
    parts = [run, score_rows(a.c2l, "c2l", f"sec_{a.weight}"), score_rows(a.local_only, "local_only", f"sec_{a.weight}"),
             score_rows(a.c2l_augment, "c2l_augment", "stack")]
    rows = pd.concat([p for p in parts if len(p)], ignore_index=True)
    rows = rows.drop_duplicates(["condition", "test_section", "fraction", "seed"], keep="last")
    order = [c for c in ("handcrafted", "real", "augment", "mixup", "spatial_mixup", "c2l", "local_only", "c2l_augment")
             if c in set(rows["condition"])]
    rows["condition"] = pd.Categorical(rows["condition"], categories=order, ordered=True)
    rows = rows.sort_values(["condition", "fraction", "seed", "test_section"], kind="stable")
    rows["condition"] = rows["condition"].astype(str)
    rows.to_csv(a.out, index=False)
    summ = summarize(rows)
    print(summ.round(4).to_string(index=False))
    paired = [c for c in order if c != "handcrafted"]  # the floor has its own standardisation: not paired with real
    diff = _paired_difference(rows[rows["condition"].isin(paired)], "pcc", "real", paired)
    print(summarize(diff).round(4).to_string(index=False))
    if a.figure:
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
        plot_benchmark(rows, conditions=order, logx=True, ax=left, show=False)
        left.set_title("mean Pearson r, 5 folds (± sd over seeds)")
        plot_benchmark(rows, conditions=paired, baseline="real", logx=True, ax=right, show=False)
        right.set_title("paired difference to real pairs alone (colours as on the left)")
        right.get_legend().remove()  # the same colours as the left panel's legend, which would cover the curves here
        fig.savefig(a.figure, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
