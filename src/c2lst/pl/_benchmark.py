"""Benchmark curves: prediction accuracy vs fraction of training spots, per condition."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

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


def benchmark_summary(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, standard deviation, min and max over seeds of ``metric`` per condition and fraction.

    When a ``test_section`` (or ``section``, ``library_id``) column is present, each seed's value is first
    averaged over the sections (evaluation stays per section; the curve shows the mean section).
    """
    section = next((c for c in ("test_section", "section", "library_id") if c in results.columns), None)
    per_seed = results.groupby(["condition", "fraction", "seed"] + ([section] if section else []), observed=True)[metric].mean()
    if section:
        per_seed = per_seed.groupby(level=["condition", "fraction", "seed"], observed=True).mean()
    grouped = per_seed.groupby(level=["condition", "fraction"], observed=True)
    return pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=0), "min": grouped.min(), "max": grouped.max(),
                         "n_seeds": grouped.size()}).reset_index()


@figure_doc
def benchmark(
    results: pd.DataFrame | str | Path,
    *,
    metric: str | None = None,
    conditions: list[str] | None = None,
    logx: bool = False,
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
        Conditions to draw, in this order (default: all, in order of appearance).
    logx
        Logarithmic fraction axis.
    {ax}
    {show_save}

    Returns
    -------
    The matplotlib Figure: the line is the mean over seeds, the error bar one standard deviation and the
    shaded band the min-max range over seeds.
    """
    df = pd.read_csv(results) if isinstance(results, str | Path) else results.copy()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"benchmark results lack columns {missing}; expected {list(REQUIRED)} + a Pearson column.")
    if df.empty:
        raise ValueError("the benchmark results are empty.")
    col = _metric_column(df, metric)
    order = list(dict.fromkeys(df["condition"].astype(str))) if conditions is None else list(conditions)
    unknown = [c for c in order if c not in set(df["condition"].astype(str))]
    if unknown:
        raise ValueError(f"conditions {unknown} not in the results; available: {sorted(set(df['condition'].astype(str)))}.")
    df["condition"] = df["condition"].astype(str)
    summary = benchmark_summary(df[df["condition"].isin(order)], col)
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
    else:
        fig = ax.figure
    for cond in order:
        s = summary[summary["condition"] == cond].sort_values("fraction")
        line = ax.errorbar(s["fraction"].to_numpy(float), s["mean"].to_numpy(float), yerr=s["std"].to_numpy(float), marker="o", ms=4, capsize=3,
                           label=f"{cond} ({int(s['n_seeds'].max())} seed{'s' if s['n_seeds'].max() > 1 else ''})")
        ax.fill_between(s["fraction"].to_numpy(float), s["min"].to_numpy(float), s["max"].to_numpy(float), color=line[0].get_color(), alpha=0.15, linewidth=0)
    if logx:
        ax.set_xscale("log")
    fractions = sorted(summary["fraction"].unique())
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.set_xlabel("fraction of training spots paired")
    ax.set_ylabel(f"mean Pearson r ({col})")
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=8)
    return finish(fig, show=show, save=save)
