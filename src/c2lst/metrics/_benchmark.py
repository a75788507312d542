"""Summary statistics of benchmark result tables (one row per condition, fraction, seed and held-out section)."""
from __future__ import annotations

import pandas as pd

SECTION_COLUMNS = ("test_section", "section", "library_id")


def benchmark_summary(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean, standard deviation, min and max over seeds of ``metric`` per condition and fraction.

    When a ``test_section`` (or ``section``, ``library_id``) column is present, each seed's value is first
    averaged over the sections (evaluation stays per section; the curve shows the mean section) and ``n_folds``
    counts the sections. ``std`` is the sample standard deviation over seeds (``ddof=1``; NaN for one seed), the
    ± of the benchmark's ``summary.md``. Rows are in order of first appearance in ``results``.
    """
    section = section_column(results)
    keys = ["condition", "fraction", "seed"] + ([section] if section else [])
    per_seed = results.groupby(keys, observed=True, sort=False)[metric].mean()
    if section:
        per_seed = per_seed.groupby(level=["condition", "fraction", "seed"], observed=True, sort=False).mean()
    grouped = per_seed.groupby(level=["condition", "fraction"], observed=True, sort=False)
    out = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1), "min": grouped.min(), "max": grouped.max(),
                        "n_seeds": grouped.size()})
    if section:
        out["n_folds"] = results.groupby(["condition", "fraction"], observed=True, sort=False)[section].nunique()
    return out.reset_index()


def section_column(df: pd.DataFrame) -> str | None:
    """Return the held-out section column of benchmark results: the first of :data:`SECTION_COLUMNS` present."""
    return next((c for c in SECTION_COLUMNS if c in df.columns), None)


def paired_difference(df: pd.DataFrame, metric: str, baseline: str, order: list[str]) -> pd.DataFrame:
    """``metric`` minus the ``baseline`` condition's at the same fraction, seed (and held-out section)."""
    if baseline not in set(df["condition"]):
        raise ValueError(f"baseline {baseline!r} is not a condition of the results; available: "
                         f"{sorted(set(df['condition']))}.")
    section = section_column(df)
    keys = ["fraction", "seed"] + ([section] if section else [])
    base = df[df["condition"] == baseline]
    if base.duplicated(keys).any():
        raise ValueError(f"the baseline {baseline!r} has more than one row per {keys}; pass one run per key.")
    merged = df.merge(base[keys + [metric]].rename(columns={metric: "_base"}), on=keys, how="left")
    unpaired = merged[merged["_base"].isna() & merged["condition"].isin(order)]
    if len(unpaired):
        raise ValueError(f"{len(unpaired)} rows have no {baseline!r} row at the same {keys} (e.g. "
                         f"{unpaired[keys].iloc[0].to_dict()}); run the baseline there too or drop them.")
    merged[metric] = merged[metric] - merged.pop("_base")
    return merged
