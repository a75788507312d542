"""Map genes over a "new" H&E slide and check the grid against the spots measured on it.

A predictor is fitted on every spot of one her2st section (handcrafted features + ridge, real pairs only), the
image of another section is read on its own (``c2lst.io.read_slide``; its µm/px taken from that section's spot
table, as a scanner's metadata would give it) and mapped with ``c2lst.tl.predict_slide``. Each measured spot of
the new section is then matched to its nearest pseudo-spot: the Pearson r per gene of the grid's prediction
against the measured expression, next to that of the same predictor on the spots' own patches. The panel and the
top-50 genes (variance of the log-normalised training spots) come from the training section only.

Usage: python benchmarks/new_slide.py [--train C2] [--new C3] [--root ../shared/data/her2st] [--grid-um 200]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def main() -> None:
    from scipy.spatial import cKDTree

    import c2lst
    from c2lst.datasets._her2st import her2st_root
    from c2lst.metrics import pearson_per_gene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="C2", help="section the predictor is fitted on (all its spots)")
    parser.add_argument("--new", default="C3", help="section whose image is mapped as a new slide")
    parser.add_argument("--root", help="her2st folder (default $C2LST_DATA_DIR or ../shared/data/her2st)")
    parser.add_argument("--grid-um", type=float, default=200.0, help="pseudo-spot pitch in µm")
    a = parser.parse_args()
    c2lst.settings.progress_bar = False
    root = her2st_root(a.root)
    t0 = time.time()
    train = c2lst.datasets.her2st(a.train, root=root)
    c2lst.pp.extract_patches(train)
    c2lst.pp.normalize(train)
    panel = c2lst.pp.gene_panel(train, n_top_genes=256)
    table = train.tables["table"]
    top = [panel.genes[i] for i in np.argsort(-panel.std, kind="stable")[:50]]  # as tl.evaluate's top_hvg
    model = c2lst.tl.predict(train, synthetic=None, panel=panel, seed=0)
    t_fit = time.time() - t0

    new = c2lst.datasets.her2st(a.new, root=root)  # its spots are the ground truth only
    new_table = new.tables["table"]
    mpp = float(new_table.uns["c2lst"]["spatial"]["mpp"])
    image = next((root / a.new).glob("*.jpg"))
    t1 = time.time()
    slide = c2lst.io.read_slide(image, mpp=mpp, library_id=a.new)
    c2lst.tl.predict_slide(slide, model, grid_um=a.grid_um)
    t_slide = time.time() - t1
    grid = slide.tables["c2lst_slide"]
    gxy, sxy = np.asarray(grid.obsm["spatial"]), np.asarray(new_table.obsm["spatial"])  # centres, rows as the tables'
    dist, nearest = cKDTree(gxy).query(sxy)
    near = dist * mpp <= 100.0

    c2lst.pp.normalize(new)  # the new section's own library sizes: ground truth on the same scale
    c2lst.pp.extract_patches(new, patch_px=int(model.fit_info["patch_px"]))
    own = model.predict(np.asarray(new_table.obsm["c2lst_patch"]))
    genes = [g for g in top if g in new_table.var_names]
    cols = [model.genes.index(g) for g in genes]
    lognorm = new_table[:, genes].layers["lognorm"]
    truth = np.asarray(lognorm.todense() if hasattr(lognorm, "todense") else lognorm, dtype=np.float64)
    r_own = pearson_per_gene(truth, own[:, cols])
    r_own_near = pearson_per_gene(truth[near], own[near][:, cols])
    r_grid = pearson_per_gene(truth[near], np.asarray(grid.X)[nearest[near]][:, cols])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"fit on {a.train}: {table.n_obs} spots, {len(model.genes)} panel genes ({t_fit:.1f} s)")
    print(f"new slide {a.new}: {grid.n_obs} pseudo-spots at {a.grid_um:g} µm ({t_slide:.1f} s: read_slide + "
          f"predict_slide); {new_table.n_obs} measured spots, {int(near.sum())} within 100 µm of a pseudo-spot "
          f"(median distance {np.median(dist * mpp):.1f} µm)")
    print(f"top-50 genes of {a.train} ({len(genes)} measured on {a.new}), mean Pearson r: own patches, all spots "
          f"{np.nanmean(r_own):.4f}; own patches, those {int(near.sum())} spots {np.nanmean(r_own_near):.4f}; "
          f"nearest pseudo-spot {np.nanmean(r_grid):.4f}")
    print(f"peak RSS {peak:.0f} MiB, total {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
