"""Benchmark curves: prediction accuracy vs fraction of training spots, per condition."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..metrics._benchmark import benchmark_summary, paired_difference
from ._show import figure_doc, finish

METRIC_CANDIDATES = ("pcc", "pcc_top50", "mean_pcc", "pearson")
REQUIRED = ("condition", "fraction", "seed")


def _metric_column(df: pd.DataFrame, metric: str | None) -> str:
    if metric is not None:
        if metric not in df.columns:
            raise ValueError(f"metric column {metric!r} not in the results; columns: {list(df.columns)}.")
        return metric
    for name in METRIC_CANDIDATES:
        if name in df.columns:
            return name
    pcc = [c for c in df.columns if str(c).startswith(("pcc", "pearson"))]
    if not pcc:
        raise ValueError(f"no Pearson column found in {list(df.columns)}; name it with `metric=`.")
    return pcc[0]


def _seed_count(summary: pd.DataFrame) -> str:
    """Return the legend's seed count of one condition and the fractions with fewer: ``3 seeds, 2 at f = 1``."""
    n = summary["n_seeds"].astype(int)
    most = int(n.max())
    text = f"{most} seed{'s' if most > 1 else ''}"
    fewer = summary[n < most]
    for count, group in fewer.groupby(n[n < most], sort=True):
        text += f", {int(count)} at f = {', '.join(f'{f:g}' for f in sorted(group['fraction']))}"
    return text


@figure_doc
def benchmark(
    results: pd.DataFrame | str | Path,
    *,
    metric: str | None = None,
    conditions: list[str] | None = None,
    logx: bool = False,
    baseline: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Mean Pearson correlation vs fraction of training spots, one line per condition, with the seed spread.

    Parameters
    ----------
    results
        Benchmark results (from :func:`c2lst.benchmark.run_benchmark`) or the path of its ``results.csv``: one
        row per condition, fraction, seed (and held-out section), with columns ``condition``, ``fraction``,
        ``seed`` and a Pearson column (``pcc``).
    metric
        Column to plot; by default the first of ``pcc``, ``pcc_top50``, ``mean_pcc``, ``pearson`` present (else
        the first column starting with ``pcc`` or ``pearson``).
    conditions
        Conditions to draw, in this order (default: all, in order of appearance). A condition's colour is set by
        its place among all conditions of ``results``, so figures of subsets of the same results match.
    logx
        Logarithmic fraction axis.
    baseline
        A condition to subtract: each row's metric minus the baseline's at the same fraction, seed and held-out
        section (the paired difference; the seeds' paired spots and folds are shared, so this spread is the one
        that says whether a condition gains), with a zero line for the baseline itself.
    {ax}
    {show_save}

    Returns
    -------
    The matplotlib Figure: the line is the mean over seeds, the error bar one (sample) standard deviation and the
    shaded band the min-max range over seeds; with ``baseline``, of the paired differences.
    """
    df = pd.read_csv(results) if isinstance(results, str | Path) else results.copy()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"benchmark results lack columns {missing}; expected {list(REQUIRED)} + a Pearson column.")
    if df.empty:
        raise ValueError("the benchmark results are empty.")
    col = _metric_column(df, metric)
    every = list(dict.fromkeys(df["condition"].astype(str)))  # colours follow this order, whichever are drawn
    order = every if conditions is None else list(conditions)
    unknown = [c for c in order if c not in set(df["condition"].astype(str))]
    if unknown:
        raise ValueError(f"conditions {unknown} not in the results; available: {sorted(set(df['condition'].astype(str)))}.")
    df["condition"] = df["condition"].astype(str)
    ylabel = f"mean Pearson r ({col})"
    if baseline is not None:
        df, order = paired_difference(df, col, baseline, order), [c for c in order if c != baseline]
        ylabel = f"{col} minus {baseline}, paired"
    summary = benchmark_summary(df[df["condition"].isin(order)], col)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    else:
        fig = ax.figure
    for cond in order:
        s = summary[summary["condition"] == cond].sort_values("fraction")
        line = ax.errorbar(s["fraction"].to_numpy(float), s["mean"].to_numpy(float), yerr=s["std"].fillna(0.0).to_numpy(float), marker="o", ms=4, capsize=3,
                           color=f"C{every.index(cond) % 10}",
                           label=f"{cond} ({_seed_count(s)})")
        ax.fill_between(s["fraction"].to_numpy(float), s["min"].to_numpy(float), s["max"].to_numpy(float), color=line[0].get_color(), alpha=0.15, linewidth=0)
    if baseline is not None:
        ax.axhline(0.0, color="0.3", lw=1, ls="--", label=baseline)
    if logx:
        ax.set_xscale("log")
    fractions = sorted(summary["fraction"].unique())
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.set_xlabel("fraction of training spots paired")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return finish(fig, show=show, save=save)
