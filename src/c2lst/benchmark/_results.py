"""The benchmark results page (``benchmarks/README.md``), written from the committed tables in one call."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.recipe import RECIPE
from ..files import write_atomic
from ..io._histology import TISSUE_DETECTOR
from ..metrics._benchmark import benchmark_summary, paired_difference
from ._data import DIFFUSION
from ._report import fraction_cells

ORDER = ("handcrafted", "real", "augment", "mixup", "spatial_mixup", "c2l", "c2l_oracle", "c2l_tissue", "local_only",
         "local_only_tissue", "refined_tissue", "c2l_augment", "real_central", "real_adapted", "real_adapted_only")
CURRENT, CURRENT_SYNTHETIC = "current_loso.csv", "current_synthetic.csv"  # c2lst benchmark rows of the current code
REALISM = ("frechet_vs_half", "frechet_floor", "precision_vs_half", "precision_floor", "coverage_vs_half",
           "nuclei_count_real", "nuclei_count_synthetic", "frechet_ceiling", "frechet_heldout_floor",
           "precision_ceiling", "precision_heldout_floor", "coverage_ceiling", "mae_ceiling")
META = "other_measurements.json"


def _table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    out = ["| " + " | ".join(map(str, columns)) + " |", "|" + "---|" * len(columns)]
    return out + ["| " + " | ".join(map(str, r)) + " |" for r in rows]


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.4f}" if not np.isfinite(sd) else f"{mean:.4f} ± {sd:.4f}"


def _signed(mean: float, sd: float) -> str:
    return f"{mean:+.4f}" if not np.isfinite(sd) else f"{mean:+.4f} ± {sd:.4f}"


def _source(name: str, meta: dict) -> list[str]:
    info = meta.get("csv_tables", {}).get(name, {})
    out = [f"Rows: `benchmarks/measured/{name}`."]
    if info.get("note"):
        out.append(info["note"])
    if info.get("command"):
        out += ["", "```bash", info["command"], "```"]
    return out + [""]


def _loso(rows: pd.DataFrame) -> list[str]:
    conds = [c for c in ORDER if c in set(rows["condition"])] + sorted(set(rows["condition"]) - set(ORDER))
    fr = sorted(rows["fraction"].unique())
    summ = benchmark_summary(rows, "pcc")

    def mean_sd(r: pd.DataFrame) -> str:
        r = r.iloc[0]
        return f"{_pm(r['mean'], r['std'])} ({int(r['n_folds'])}×{int(r['n_seeds'])})"

    body = [[c, *fraction_cells(summ, c, fr, mean_sd)] for c in conds]
    out = ["Mean Pearson r over the 50-gene panel on the held-out section: the five folds averaged within a seed, "
           "then mean ± sd over seeds (folds × seeds in brackets).", ""]
    out += _table(["condition", *[f"f = {f:g}" for f in fr]], body) + [""]
    paired = [c for c in conds if c != "handcrafted"]  # the floor has its own standardisation: not paired with real
    diff = paired_difference(rows[rows["condition"].isin(paired)], "pcc", "real", paired)
    diff = diff.groupby(["condition", "fraction", "seed"], sort=False)["pcc"].mean().rename("diff").reset_index()

    def signed(d: pd.DataFrame) -> str:
        seed0 = d[d["seed"] == 0]["diff"]
        s0 = f"; seed 0 {seed0.iloc[0]:+.4f}" if len(seed0) and len(d) > 1 else ""
        return f"{_signed(d['diff'].mean(), d['diff'].std(ddof=1))} ({int((d['diff'] > 0).sum())}/{len(d)} seeds > 0{s0})"

    body = [[c, *fraction_cells(diff, c, fr, signed)] for c in conds if c not in ("handcrafted", "real")]
    out += ["Paired difference to `real` (real pairs alone, the same per-section predictor) on the same folds: "
            "mean ± sd over seeds, the seeds above zero, and seed 0's.", ""]
    return out + _table(["condition", *[f"f = {f:g}" for f in fr]], body) + [""]


GENERATORS = DIFFUSION  # the conditions with a generator's rows (per-fold table)


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Name the variant in the condition: ``+local``, ``+pcaK``, ``+loraR``, ``+glass``, ``+gG``, ``+SAMPLER``, etc.

    ``+local``: ``local_unconditional``; ``+pcaK``: ``n_comps=K``; ``+loraR``: ``lora_rank=R``; ``+glass``: tissue
    tiles cut by an earlier tissue detector, which took stain-tinted glass for tissue (``tissue_detector`` below
    ``io._histology.TISSUE_DETECTOR``); ``+gG``: tiles generated with guidance scale G other than the recipe's;
    ``+vsREF``: guidance against another reference branch than the recipe's (``+vsmean``: the mean profile);
    ``+SAMPLER``: with a sampler other than the recipe's; ``+sN``, ``+aN``: N denoising or adaptation steps other than
    the recipe's (rows without the column: the recipe's of their day); ``+groupcv``: ridge penalties by leave-one-section-out
    (``alpha_cv="groups"``), the last suffix.
    """
    label = df["condition"].astype(str).to_numpy(dtype=object)
    tagged = df  # the columns the suffixes read: guidance 1 has no reference branch, so it gets no +vsREF
    if "guidance_reference" in df.columns and "guidance_scale" in df.columns:
        tagged = df.assign(guidance_reference=df["guidance_reference"].where(df["guidance_scale"] != 1, ""))
    if "local_unconditional" in df.columns:
        flag = df["local_unconditional"].astype("boolean").fillna(False).to_numpy(dtype=bool)
        label = np.where(flag, label + "+local", label)
    suffixes = (  # column, its value in rows without it, the suffix of a value (None: no suffix)
        ("n_comps", 0, lambda n: f"+pca{int(n)}" if n > 0 else None),
        ("lora_rank", 0, lambda n: f"+lora{int(n)}" if n > 0 else None),
        ("tissue_detector", 0, lambda v: "+glass" if 0 < v < TISSUE_DETECTOR else None),
        ("guidance_scale", np.nan, lambda v: f"+g{v:g}" if np.isfinite(v) and v != RECIPE.guidance_scale else None),
        ("guidance_reference", "", lambda v: f"+vs{v}" if v and v != RECIPE.guidance_reference else None),
        ("sampler", "", lambda v: f"+{v}" if v and v != RECIPE.sampler else None),
        ("generate_steps", 0, lambda n: f"+s{int(n)}" if n > 0 and n != RECIPE.generate_steps else None),
        ("adapt_steps", 0, lambda n: f"+a{int(n)}" if n > 0 and n != RECIPE.adapt_steps else None),
    )
    for column, missing, suffix in suffixes:
        if column in df.columns:
            tags = [suffix(v) for v in tagged[column].fillna(missing).to_numpy()]
            label = np.array([c + t if t else c for c, t in zip(label, tags, strict=True)], dtype=object)
    if "alpha_cv" in df.columns:
        label = np.where(df["alpha_cv"].fillna("loo").to_numpy() == "groups", label + "+groupcv", label)
    return df.assign(condition=label)


def _per_fold(rows: pd.DataFrame) -> list[str]:
    """Per held-out section: each generator's r and its paired difference to ``real``, averaged over its seeds."""
    present = set(rows["condition"])
    gens = [c for c in ORDER if c in present and c in GENERATORS]
    gens += sorted(c for c in present if "+" in c and c.split("+")[0] in GENERATORS)
    if not gens or "real" not in present:
        return []
    wide = rows.pivot_table(index=["fraction", "seed", "test_section"], columns="condition", values="pcc")
    body, header = [], {}
    for f, d in wide.groupby(level="fraction"):
        d = d.dropna(subset=["real"])
        real = d.groupby(level="test_section")["real"].mean()
        cells = {}
        for g in [g for g in gens if g in d and d[g].notna().any()]:
            dg = d[[g, "real"]].dropna()
            per_test = dg.groupby(level="test_section").mean()
            cells[g] = (per_test[g], per_test[g] - per_test["real"])
            n_g = dg.index.get_level_values("seed").nunique()
            header[g] = g if n_g == d.index.get_level_values("seed").nunique() else f"{g} ({n_g} seed{'s' * (n_g > 1)})"
        if not cells:
            continue
        n_seeds = d.index.get_level_values("seed").nunique()
        for test in real.index:
            body.append([f"{f:g}", n_seeds, test, f"{real[test]:.4f}",
                         *[f"{cells[g][0][test]:.4f} ({cells[g][1][test]:+.4f})" if g in cells and test in cells[g][0]
                           else "–" for g in gens]])
        body.append([f"{f:g}", n_seeds, "**mean**", f"{real.mean():.4f}",
                     *[f"{cells[g][0].mean():.4f} ({cells[g][1].mean():+.4f}; {int((cells[g][1] > 0).sum())}/"
                       f"{len(cells[g][1])} folds up)" if g in cells else "–" for g in gens]])
    if not body:
        return []
    return ["Per held-out section, averaged over the seeds (r, and the paired difference to `real` on the same seeds):",
            "", *_table(["f", "seeds", "held out", "real", *[header.get(g, g) for g in gens]], body), ""]


def _realism(df: pd.DataFrame) -> list[str]:
    """Means per generator of the like-for-like realism metrics and of the realism ceiling on held-out sections."""
    cols = [c for c in REALISM if c in df.columns]
    body = [[cond, f"{f:g}", len(d), *[f"{d[c].mean():.3f}" for c in cols]]
            for (cond, f), d in df.groupby(["condition", "fraction"], sort=True)]
    return ["Means over the rows (folds × seeds) per generator and paired fraction f. *_vs_half: the tiles generated for the paired spots' "
            "profiles against one half of those spots' patches, at the other half's size; *_floor: the two real "
            "halves against each other. *_ceiling: the generator's autoencoder (with its local decoder) "
            "reconstructing half B of the held-out section's patches, against half A; *_heldout_floor: half B "
            "itself against half A; mae_ceiling: mean absolute pixel error of those reconstructions (0-255). "
            "Handcrafted features.", "", *_table(["generator", "f", "rows", *cols], body), ""]


CONDITIONING = ("cond_conditioning_gain", "cond_profile_gain", "cond_profile_share", "cond_own_wins", "cond_delta_r",
                "cond_delta_r_pooled", "cond_delta_r_real", "cond_delta_slope", "cond_delta_slope_real", "cond_r_generated",
                "cond_r_real")


def _pm_present(values: pd.Series) -> str:
    """``mean ± sd`` over the rows that have a value (``mean`` for one, ``–`` for none; ``(k)`` when not all do)."""
    present = values.dropna()
    if present.empty:
        return "–"
    text = f"{present.mean():.3f} ± {present.std(ddof=1):.3f}" if len(present) > 1 else f"{present.mean():.3f}"
    return text if len(present) == len(values) else f"{text} ({len(present)})"


def _conditioning(df: pd.DataFrame) -> list[str]:
    """Means per generator of ``tl.evaluate_conditioning``'s scores on the held-out sections (rows that have them)."""
    cols = [c for c in CONDITIONING if c in df.columns]
    if not cols:
        return []
    df = df.dropna(subset=cols[:1])
    if df.empty:
        return []
    body = [[cond, f"{f:g}", len(d), *[_pm_present(d[c]) for c in cols]]
            for (cond, f), d in df.groupby(["condition", "fraction"], sort=True)]
    return ["### Conditioning on the held-out section", "",
            "tl.evaluate_conditioning on every spot of the held-out section (never seen by the adapter), each contrasted "
            "with a partner spot of its section; the predictor reading the generated tiles is the fold's `real` one. "
            "Mean ± sd over the rows (folds × seeds) that have these columns, per paired fraction f. conditioning_gain: share of the "
            "unconditional denoising error the own profile removes; profile_share: the part of that gain a partner's "
            "profile does not give; delta_r: per-gene r between the change of the predictor's reading and the change "
            "of the profile, tiles of one seed; delta_slope: how far the reading moves per unit of profile change; "
            "*_real: the same on the two spots' real patches (the reference; measured from 2026-12-07, – before); "
            "r_generated / r_real: the predictor on the own-profile tiles / on the real patches.", "", *_table(["generator", "f", "rows", *[c.removeprefix("cond_") for c in cols]], body), ""]


def _stack(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c not in ("tiles", "test", "fraction", "seed")]
    body = []
    for (tiles, f), d in df.groupby(["tiles", "fraction"], sort=True):
        per_seed = d.groupby("seed")[cols].mean()
        over_aug = per_seed["stack"] - per_seed["aug"]
        over_real = per_seed["stack"] - per_seed["sec"]
        body.append([tiles, f"{f:g}", len(per_seed), *[f"{per_seed[c].mean():.4f}" for c in ("sec", "aug", "c2l", "stack")],
                     _signed(over_aug.mean(), over_aug.std(ddof=1)), _signed(over_real.mean(), over_real.std(ddof=1))])
    out = ["Five-fold means (averaged over seeds) and paired differences over seeds, per generator's tiles:", ""]
    out += _table(["tiles", "f", "seeds", "real (sec)", "augment (aug)", "c2l rows", "stack",
                   "stack − augment", "stack − real"], body) + [""]
    grid = [c for c in cols if c.startswith("stack_")]
    if grid:
        body = [[tiles, f"{f:g}", *[f"{(d[c] - d['sec']).mean():+.4f}" for c in grid]]
                for (tiles, f), d in df.groupby(["tiles", "fraction"], sort=True)]
        out += ["Weights of the stack (augmented copies A, c2l rows C), mean gain over real pairs:", ""]
        out += _table(["tiles", "f", *[c.replace("stack_", "A, C = ").replace("_", ", ") for c in grid]], body) + [""]
    return out


def _weighing(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c not in ("test", "fraction", "seed", "real") and not c.endswith("_w")]
    body = []
    for f, d in df.groupby("fraction", sort=True):
        per_seed = d.groupby("seed")[["real", *cols]].mean()
        diff = per_seed[cols].sub(per_seed["real"], axis=0)
        body.append([f"{f:g}", len(per_seed), f"{per_seed['real'].mean():.4f}",
                     *[f"{diff[c].mean():+.4f}" for c in cols]])
    out = ["Gain over real pairs alone (five-fold mean, averaged over seeds):", ""]
    return out + _table(["f", "seeds", "real", *cols], body) + [""]


def _rows_as_table(df: pd.DataFrame) -> list[str]:
    """Every row and column, numbers to four significant digits."""
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    return _table(list(df.columns), [[cell(v) for v in r] for r in df.itertuples(index=False)]) + [""]


def _another_patient(df: pd.DataFrame) -> list[str]:
    """Mean r over the held-out sections per case and fraction, for each ``group_norm`` variant."""
    variants = list(dict.fromkeys(df["group_norm"]))
    rows = []
    for (case, frac), d in df.groupby(["case", "fraction"], sort=False):
        wide = d.pivot(index="test", columns="group_norm", values="mean_pearson")
        wins = [f"{int((wide[v] > wide[variants[0]]).sum())} / {len(wide)}" for v in variants[1:]]
        rows.append([case, f"{frac:g}", *(f"{wide[v].mean():.4f}" for v in variants), *wins])
    return _table(["held-out section", "f", *variants, *(f"{v} > {variants[0]}" for v in variants[1:])], rows) + [""]


def _rerun(df: pd.DataFrame, committed: pd.DataFrame | None) -> list[str]:
    """Compare the rows re-created by ``c2lst benchmark`` with the committed ones (same fold, fraction and seed)."""
    old = {"real": "real", "c2l": "align_0.25"}  # the committed columns of these conditions (one standardisation)
    body = []
    for cond, d in df.groupby("condition", sort=False):
        diffs = []
        for _, r in d.iterrows():
            if committed is not None and old.get(cond) in committed:
                hit = committed[(committed["test"] == r["test_section"]) & (committed["fraction"] == r["fraction"])
                                & (committed["seed"] == r["seed"])]
                if len(hit):
                    diffs.append(r["pcc"] - float(hit[old[cond]].iloc[0]))
        body.append([cond, len(d), f"{d['pcc'].mean():.6f}", len(diffs),
                     f"{np.max(np.abs(diffs)):.1e}" if diffs else "–"])
    return _table(["condition", "folds re-run", "mean re-run r", "folds committed", "largest |difference|"],
                  body) + [""]


def _current(folder: Path, meta: dict) -> list[str]:
    """Render the rows ``c2lst benchmark`` measured on the current code, when ``current_loso.csv`` is there."""
    if not (folder / CURRENT).is_file():
        return []
    rows = labelled(pd.read_csv(folder / CURRENT, float_precision="round_trip"))
    out = ["## The current code: leave one section out (her2st C2–C6)", "",
           "Each fold trains on four sections, of which a fraction f of each section's spots is paired (seeded), and "
           "scores the fifth. Panel, normalisation and every fitted quantity come from the paired spots only.", "",
           *_source(CURRENT, meta), *_loso(rows), *_per_fold(rows)]
    if (folder / CURRENT_SYNTHETIC).is_file():
        out += ["### Realism of the generated tiles and the ceiling", "", *_source(CURRENT_SYNTHETIC, meta),
                *_realism(synthetic := labelled(pd.read_csv(folder / CURRENT_SYNTHETIC)))]
        out += _conditioning(synthetic)
    return out


def write_results_page(measured: str | Path = "benchmarks/measured", *, out: str | Path | None = None) -> Path:
    """Write the benchmark results page from the committed tables of ``measured``.

    Reads ``loso_per_section.csv`` (the leave-one-section-out rows of every condition), ``stack_scores.csv``,
    ``synthetic_rows_scores.csv``, ``local_only_scores.csv``, ``another_patient.csv``, ``rerun_through_tl.csv`` (each optional but the first) and ``other_measurements.json`` (the commands behind
    each table and the tables of the other benchmark scripts), and renders every summary from the rows: no
    number on the page is typed by hand.

    Parameters
    ----------
    measured
        Folder of the committed tables (``c2lst benchmark`` outputs and scores).
    out
        Page to write; default ``README.md`` in ``measured``'s parent folder. Written atomically.

    Returns
    -------
    The path written.

    Raises
    ------
    ValueError
        When ``measured`` has no ``loso_per_section.csv``.
    """
    folder = Path(measured)
    main = folder / "loso_per_section.csv"
    if not main.is_file():
        raise ValueError(f"{main} not found: pass the folder of the committed benchmark tables "
                         "(benchmarks/measured), with loso_per_section.csv from `c2lst benchmark`.")
    meta = json.loads((folder / META).read_text()) if (folder / META).is_file() else {}
    path = Path(out) if out is not None else folder.parent / "README.md"
    rows = pd.read_csv(main, float_precision="round_trip")
    lines = ["# Benchmark results", "",
             "Written by `python -m c2lst.benchmark report benchmarks/measured` "
             "(`c2lst.benchmark.write_results_page`) from the tables in `benchmarks/measured/`; do not edit by hand. "
             "How the recipe got here, and what was tried: `docs/benchmark_history.md`.", "",
             "Code version: the first section holds the rows `c2lst benchmark` measured on the current code "
             "(2026-12-05 to 2026-12-07). The later sections hold the committed rows, measured with the code up to commit 9869514 "
             "(2026-11-25 to 2026-12-04), partly by one-off scripts that are now conditions and options of `c2lst benchmark`, which now runs "
             "every condition through `c2lst.tl` (`tl.adapt`, `tl.generate`, `tl.predict`, `tl.evaluate`; feature-space "
             "mixup fits the predictor directly) with the recipe `c2lst.core.recipe.RECIPE` (panel 50, 300 adaptation "
             "steps, since 2026-12-05 with the modulation's unconditional local component (rows labelled +local; "
             "`--no-local-unconditional` gives the rows without it), spatial mixup within a section with w ~ U(0.5, 1), strength 0.8, "
             "2 tiles per spot; since 2026-12-06 ancestral DDPM with 50 steps and guidance 1, before that "
             "DPM-Solver++ with 20 steps and guidance 2 (the rows measured before carry sampler dpmsolver++ and "
             "guidance_scale 2, labelled +g2+dpmsolver++); synthetic rows at weight 0.25 with aligned moments). Each table gives the command that "
             "re-creates its rows.", "",
             *_current(folder, meta),
             "## Prediction from H&E: leave one section out (her2st C2–C6), the committed rows", "",
             "Each fold trains on four sections, of which a fraction f of each section's spots is paired (seeded), and "
             "scores the fifth. Panel, normalisation and every fitted quantity come from the paired spots only. "
             "Figure: `benchmarks/measured/pcc_vs_fraction.png`.", "",
             *_source(main.name, meta), *_loso(rows)]
    sections = (("Classic augmentation stacked with the c2l rows", "stack_scores.csv", _stack),
                ("How the predictor weighs the synthetic rows", "synthetic_rows_scores.csv", _weighing),
                ("The local-only ablation (no central pretraining)", "local_only_scores.csv", _weighing),
                ("group_norm on another patient (simulated), seed 0", "another_patient.csv", _another_patient),
                ("Pretraining throughput on this CPU, fp32 and bf16", "train_throughput.csv", _rows_as_table),
                ("The committed rows re-created through c2lst.tl", "rerun_through_tl.csv",
                 lambda d: _rerun(d, pd.read_csv(folder / "synthetic_rows_scores.csv")
                                  if (folder / "synthetic_rows_scores.csv").is_file() else None)))
    for title, name, render in sections:
        if (folder / name).is_file():
            lines += [f"## {title}", "", *_source(name, meta), *render(pd.read_csv(folder / name))]
    if meta.get("tables"):
        lines += ["## Other measurements", ""]
        if meta.get("provenance"):
            lines += [meta["provenance"], ""]
        for t in meta["tables"]:
            inline = "\n" not in t["command"] and "`" not in t["command"]  # one plain line: inline, a shorter page
            command = [f"Command: `{t['command']}`"] if inline else ["```bash", t["command"], "```"]
            lines += [f"### {t['title']}", "", *command, "", *_table(t["columns"], t["rows"]), ""]
            if t.get("note"):
                lines += [t["note"], ""]
    text = "\n".join(lines).rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: Path(tmp).write_text(text))
    return path
