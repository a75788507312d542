"""Generalisation to "another patient": a held-out her2st section with fewer UMIs and a shifted stain.

Each held-out section is scored as is, as another patient (its counts binomially thinned to ~``--umi`` UMI per
spot and its patches' stain shifted in HED space: H and E scaled, plus an offset; seeded), and as another patient
with one tissue type (only its spots on one side of the median of its expression PC1: a section more homogeneous
than the training ones). The predictor (handcrafted features + ridge, real pairs only) is trained on the other
sections' spots at each fraction, without and with per-section standardisation (``batch_key``), the latter with
each section's feature sd shrunk toward the pooled one by ``GROUP_STD_PRIOR`` patches (100, the default) and
unshrunk (0, the behaviour before). Prints the held-out section's mean per-gene Pearson r, writes every row to
``--out``.

    PYTHONPATH=src python benchmarks/another_patient.py            # C2-C6 held out in turn, f = 1 and 0.25
"""
from __future__ import annotations

import argparse
import logging
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from skimage.color import hed2rgb, rgb2hed

import c2lst
from c2lst.core.predictor import extra_rows  # where group_norm reads GROUP_STD_PRIOR

PATCH = "c2lst_patch"


def read_section(root: Path, name: str) -> ad.AnnData:
    folder = root / name
    sdata = c2lst.io.read_legacy_st(folder / f"{name}.tsv.gz", folder / f"{name}_selection.tsv",
                                    next(folder.glob("*.jpg")), library_id=name)
    c2lst.pp.extract_patches(sdata, patch_um=100.0, patch_px=64)
    table = sdata.tables["table"]
    table.obs_names = [f"{name}_{s}" for s in table.obs_names]
    return ad.AnnData(X=table.X, obs=table.obs[["library_id"]].copy(), var=table.var[[]].copy(),
                      obsm={PATCH: np.asarray(table.obsm[PATCH])})


def thin_counts(x: np.ndarray, umi: float, rng: np.random.Generator) -> np.ndarray:
    """Binomial thinning of every count so that the mean library size is ``umi``."""
    p = min(1.0, umi / float(x.sum(axis=1).mean()))
    return rng.binomial(x.astype(np.int64), p).astype(np.float32)


def shift_stain(patches: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """One stain change for the whole section: H and E scaled by ``1 +- strength`` and offset in HED space."""
    scale = 1.0 + rng.uniform(-strength, strength, 3) * np.array([1.0, 1.0, 0.0])
    offset = rng.uniform(-0.02, 0.02, 3) * np.array([1.0, 1.0, 0.0]) * strength / 0.3
    hed = rgb2hed(np.moveaxis(patches, 1, -1))
    rgb = hed2rgb(hed * scale + offset)
    return np.moveaxis(np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8), -1, 1)


def perturb(table: ad.AnnData, umi: float, strength: float, seed: int) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    x = table.X.toarray() if hasattr(table.X, "toarray") else np.asarray(table.X)
    out = table.copy()
    out.X = thin_counts(x, umi, rng)
    out.obsm[PATCH] = shift_stain(np.asarray(table.obsm[PATCH]), rng, strength)
    return out


def one_tissue_type(held: ad.AnnData, original: ad.AnnData) -> ad.AnnData:
    """``held``'s spots at or above the median of the first principal component of ``original``'s expression."""
    x = original.X.toarray() if hasattr(original.X, "toarray") else np.asarray(original.X)
    expr = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)[:, x.mean(axis=0) > 1]
    pc1 = np.linalg.svd(expr - expr.mean(axis=0), full_matrices=False)[0][:, 0]
    return held[pc1 >= np.median(pc1)].copy()


def train_mask(adata: ad.AnnData, test: str, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros(adata.n_obs, dtype=bool)
    for sec in pd.unique(adata.obs["library_id"]):
        if sec == test:
            continue
        rows = np.flatnonzero(adata.obs["library_id"].to_numpy() == sec)
        mask[rng.choice(rows, int(round(fraction * len(rows))), replace=False)] = True
    return mask


def score(adata: ad.AnnData, mask: np.ndarray, test: str, batch_key: str | None, n_top_genes: int, seed: int) -> float:
    c2lst.tl.predict(adata, train_mask=mask, synthetic=None, encoder="handcrafted", batch_key=batch_key,
                     n_top_genes=n_top_genes, seed=seed, key_added="pred", overwrite=True)
    c2lst.tl.evaluate(adata, layer="pred", train_mask=mask, key_added="ev", overwrite=True)
    return float(adata.uns["ev"]["summary"][test]["mean_pearson"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/her2st")
    ap.add_argument("--sections", default="C2,C3,C4,C5,C6")
    ap.add_argument("--test", default=None, help="held-out sections (default: every one of --sections)")
    ap.add_argument("--fractions", default="1,0.25")
    ap.add_argument("--umi", type=float, default=650.0, help="mean UMI per spot of the other patient")
    ap.add_argument("--stain", type=float, default=0.3, help="H and E scaled by up to 1 +- this")
    ap.add_argument("--n-top-genes", "--n-top", dest="n_top_genes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--priors", default="100,0", help="GROUP_STD_PRIOR values to score group_norm with")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "measured/another_patient.csv")
    args = ap.parse_args()
    c2lst.settings.verbosity = logging.ERROR
    warnings.filterwarnings("ignore", message="dropped")  # the reader's note on spots without counts
    names = args.sections.split(",")
    tables = {n: read_section(args.root, n) for n in names}
    rows = []
    cases = ("as is", "another patient", "another patient, one tissue type")
    for test in (args.test.split(",") if args.test else names):
        other = perturb(tables[test], args.umi, args.stain, args.seed)
        for case, held in zip(cases, (tables[test], other, one_tissue_type(other, tables[test])), strict=True):
            adata = ad.concat([tables[n] for n in names if n != test] + [held], join="inner")
            umi = float(np.asarray(held.X.sum(axis=1)).mean())
            for f in map(float, args.fractions.split(",")):
                mask = train_mask(adata, test, f, args.seed)
                for prior in [None, *map(int, args.priors.split(","))]:
                    if prior is not None:
                        extra_rows.GROUP_STD_PRIOR = prior
                    start = time.perf_counter()
                    r = score(adata, mask, test, None if prior is None else "library_id", args.n_top_genes, args.seed)
                    rows.append({"test": test, "case": case, "n_spots": held.n_obs, "umi_per_spot": round(umi, 1),
                                 "fraction": f, "group_norm": "off" if prior is None else f"prior {prior}",
                                 "mean_pearson": r, "seconds": round(time.perf_counter() - start, 1)})
                    print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out, index=False)
    table = df.pivot_table(index=["case", "fraction"], columns="group_norm", values="mean_pearson", sort=False)
    print(table.round(4).to_string())


if __name__ == "__main__":
    main()
