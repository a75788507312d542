"""Re-create the demo section shipped in ``src/c2lst/datasets/data/demo/`` from her2st C2.

Run from the project root: ``.venv/bin/python benchmarks/make_demo_data.py [--data ../shared/data/her2st]``.
The H&E image is cropped to the spot bounding box plus a margin and downsampled to ~1.5 µm/px (JPEG
quality 90, pixel positions rescaled to match); counts are restricted to the 2,000 most variable genes
(variance of log1p counts per median library size), keeping raw integers.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "c2lst" / "datasets" / "data" / "demo"
SECTION = "C2"
TARGET_MPP = 1.5
MARGIN_UM = 200.0
N_GENES = 2000
PITCH_UM = 200.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data" / "her2st")
    args = parser.parse_args()
    src = args.data / SECTION
    spots = pd.read_csv(src / f"{SECTION}_selection.tsv", sep="\t")
    counts = pd.read_csv(src / f"{SECTION}.tsv.gz", sep="\t", index_col=0)

    xy = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    mpp = PITCH_UM / float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))
    Image.MAX_IMAGE_PIXELS = None
    image = Image.open(next(src.glob("*.jpg"))).convert("RGB")
    margin = MARGIN_UM / mpp
    x0, y0 = (max(0, int(np.floor(v - margin))) for v in xy.min(0))
    x1, y1 = int(np.ceil(min(image.width, xy[:, 0].max() + margin))), int(np.ceil(min(image.height, xy[:, 1].max() + margin)))
    crop = image.crop((x0, y0, x1, y1))
    scale = mpp / TARGET_MPP
    size = (round(crop.width * scale), round(crop.height * scale))
    small = crop.resize(size, Image.Resampling.LANCZOS)
    sx, sy = size[0] / crop.width, size[1] / crop.height

    spots = spots.copy()
    spots["pixel_x"] = ((spots["pixel_x"] - x0) * sx).round(2)
    spots["pixel_y"] = ((spots["pixel_y"] - y0) * sy).round(2)

    x = counts.to_numpy(np.float64)
    lib = x.sum(1, keepdims=True)
    lognorm = np.log1p(x / lib * np.median(lib))
    top = np.sort(np.argsort(lognorm.var(0))[::-1][:N_GENES])
    genes = counts.iloc[:, top].astype(np.int64)

    OUT.mkdir(parents=True, exist_ok=True)
    small.save(OUT / f"{SECTION}_HE.jpg", quality=90, optimize=True)
    spots.to_csv(OUT / f"{SECTION}_selection.tsv", sep="\t", index=False)
    genes.to_csv(OUT / f"{SECTION}.tsv.gz", sep="\t", compression={"method": "gzip", "mtime": 0})
    print(f"crop ({x0}, {y0}, {x1}, {y1}) of {image.size} at {mpp:.4f} µm/px -> {size} px at ~{TARGET_MPP} µm/px; "
          f"{genes.shape[0]} spots x {genes.shape[1]} genes -> {OUT}")


if __name__ == "__main__":
    main()
