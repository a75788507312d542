"""Benchmark outputs: CSV tables, a markdown summary, the PCC-vs-fraction figure and the folds' tile grids."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..files import MARKER, write_atomic, write_marker
from ..metrics._benchmark import benchmark_summary

SYNTHETIC_COLUMNS = ("frechet", "kid", "precision", "recall", "density", "coverage", "diversity_ratio", "out_of_range",
                     "nuclei_count_wasserstein", "nn_ratio", "share_below_heldout_q")


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean PCC per (condition, fraction): folds averaged within a seed, then mean/sd/min/max over seeds.

    The curve of :func:`c2lst.pl.benchmark`, rows in order of appearance.
    """
    return benchmark_summary(results, "pcc")


def fraction_cells(frame: pd.DataFrame, condition: str, fractions: Sequence[float],
                   render: Callable[[pd.DataFrame], str]) -> list[str]:
    """One table cell per fraction: ``render`` of ``condition``'s rows at that fraction, ``"–"`` where there are none."""
    rows = frame[frame["condition"] == condition]
    return [render(r) if not (r := rows[rows["fraction"] == f]).empty else "–" for f in fractions]


def _mean_sd(r: pd.DataFrame) -> str:
    r = r.iloc[0]
    sd = "" if not np.isfinite(r["std"]) else f" ± {r['std']:.3f}"
    return f"{r['mean']:.3f}{sd} ({int(r['n_folds'])}f×{int(r['n_seeds'])}s)"


def markdown(results: pd.DataFrame, synthetic: pd.DataFrame, meta: dict[str, Any]) -> str:
    """Render the summary tables as markdown."""
    summ = summarize(results)
    fr = sorted(summ["fraction"].unique())
    lines = ["| condition | " + " | ".join(f"f={f:g}" for f in fr) + " |", "|---" * (len(fr) + 1) + "|"]
    for cond in pd.unique(summ["condition"]):
        lines.append(f"| {cond} | " + " | ".join(fraction_cells(summ, cond, fr, _mean_sd)) + " |")
    n_top_genes = meta.get("n_top_genes", meta.get("n_top", 50))  # "n_top": tables written by c2lst 0.1.0
    out = [f"Mean PCC over the top-{n_top_genes} training HVGs on the held-out section "
           "(folds averaged within a seed; ± sd over seeds; nf×ms = folds × seeds).", "", *lines, ""]
    tcols = [c for c in results.columns if c.startswith("t_")]
    mcols = [c for c in results.columns if c.startswith("mem_")]
    cost = results.groupby("condition", sort=False)[tcols + mcols].mean()
    out += ["Mean wall time (s) and peak resident memory (MB) per stage and run:", "",
            "| condition | " + " | ".join(tcols + mcols) + " |", "|---" * (len(tcols + mcols) + 1) + "|"]
    for cond, r in cost.iterrows():
        out.append(f"| {cond} | " + " | ".join("–" if not np.isfinite(v) else f"{v:.1f}" for v in r.to_numpy()) + " |")
    if not synthetic.empty:
        cols = [c for c in SYNTHETIC_COLUMNS if c in synthetic.columns]
        syn = synthetic.groupby(["condition", "fraction"], sort=False)[cols].mean()
        out += ["", "Synthetic tiles vs the paired training tiles (handcrafted features standardised on the real "
                "tiles; memorisation vs the held-out section):", "",
                "| condition | fraction | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for (cond, f), r in syn.iterrows():
            out.append(f"| {cond} | {f:g} | " + " | ".join(f"{v:.3f}" for v in r.to_numpy()) + " |")
    return "\n".join(out) + "\n"


def plot(results: pd.DataFrame, path: Path) -> None:
    """Write :func:`c2lst.pl.benchmark` (mean PCC vs paired fraction per condition) to ``path`` as PNG."""
    import matplotlib.pyplot as plt

    from ..pl import benchmark as plot_benchmark

    fig = plot_benchmark(results, logx=True, show=False)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def write_grid(path: Path, patches: np.ndarray, expression: np.ndarray, genes: Sequence[str], synthetic: Any, *,
               title: str, seed: int) -> None:
    """Write :func:`c2lst.pl.synthetic_grid` of a fold's paired patches beside the tiles generated for them to ``path``.

    ``patches`` and ``expression`` (log-normalised, columns ``genes``) are the paired training spots'; ``synthetic``
    is the fold's synthetic table. Rows are three k-means clusters of the panel expression of the paired spots; a
    tile joins the cluster nearest its conditioning profile.
    """
    import matplotlib.pyplot as plt
    from anndata import AnnData

    from ..pl import synthetic_grid

    real = AnnData(X=np.asarray(expression, dtype=np.float64), var=pd.DataFrame(index=[str(g) for g in genes]))
    real.layers["lognorm"] = real.X
    real.obsm["c2lst_patch"] = patches
    fig = synthetic_grid(real, synthetic=synthetic, groupby="cluster", n_clusters=3, seed=seed, show=False)
    fig.suptitle(title, x=0.02, ha="left", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def write_outputs(results: pd.DataFrame, synthetic: pd.DataFrame, out: Path, *, meta: dict[str, Any]) -> None:
    """Write ``results.csv``, ``synthetic.csv``, ``summary.md``, ``meta.json`` and ``pcc_vs_fraction.png``."""
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        write_marker(out, "benchmark")
    write_atomic(out / "results.csv", lambda tmp: results.to_csv(tmp, index=False))
    write_atomic(out / "synthetic.csv", lambda tmp: synthetic.to_csv(tmp, index=False))
    text = markdown(results, synthetic, meta)
    write_atomic(out / "summary.md", lambda tmp: Path(tmp).write_text(text))
    write_atomic(out / "meta.json", lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
    plot(results, out / "pcc_vs_fraction.png")
