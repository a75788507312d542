"""Refine the shipped central model on multi-organ H&E (MoNuSeg, breast among them) with ``tl.pretrain(init=...)``.

The shipped central model is 99% PatchCamelyon lymph node. This script continues its UNet training
(autoencoder and latent scale kept) on MoNuSeg's 44 TCGA images (breast, kidney, liver, prostate, bladder,
colon, stomach, lung, brain), mixed 1:1 with PCam tiles it was trained on so it keeps what it knows. No her2st
tissue. MoNuSeg is CC BY-NC-SA (non-commercial): the result is for benchmarks only and is never shipped.

MoNuSeg images are 500 px at 0.5 µm/px (250 µm): each is resampled to the model's 1.5625 µm/px (160 px) and cut
into 64 px (100 µm) tiles at a 16 px stride (49 overlapping tiles per image; training adds flips, rot90 and
stain jitter).

Run from the project root, then adapt it in the benchmark scripts with ``C2LST_CENTRAL=OUT``::

    .venv/bin/python benchmarks/central_refine.py --out /tmp/central_refined --steps 1000 --lr 3e-4
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import c2lst
from c2lst.datasets import central_default

ROOT = Path(__file__).resolve().parents[1]
MONUSEG_MPP = 0.5


def monuseg_tiles(folder: Path, *, tile_px: int, mpp: float, stride: int) -> np.ndarray:
    """Overlapping ``tile_px`` tiles of every MoNuSeg PNG, resampled to ``mpp`` µm/px (Lanczos)."""
    from PIL import Image

    tiles = []
    for path in sorted(folder.glob("*.png")):
        im = Image.open(path).convert("RGB")
        side = round(im.width * MONUSEG_MPP / mpp)
        a = np.asarray(im.resize((side, round(im.height * MONUSEG_MPP / mpp)), Image.LANCZOS)).transpose(2, 0, 1)
        tiles += [a[:, y:y + tile_px, x:x + tile_px] for y in range(0, a.shape[1] - tile_px + 1, stride)
                  for x in range(0, a.shape[2] - tile_px + 1, stride)]
    return np.ascontiguousarray(np.stack(tiles))


def main() -> None:
    """Tile, refine, save, and write ``refine.json`` (settings, data, wall time) next to the model."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--histology", type=Path, default=ROOT / ".." / "shared" / "data" / "histology")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--stride", type=int, default=16, help="MoNuSeg tile stride in model pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    central = central_default()
    cfg = central.config
    mono = monuseg_tiles(a.histology / "monuseg", tile_px=cfg.tile_px, mpp=cfg.mpp, stride=a.stride)
    pcam_files = sorted((a.histology / "pcam").glob("*/*.jpg"))
    pick = np.random.default_rng(a.seed).choice(len(pcam_files), size=min(len(pcam_files), len(mono)), replace=False)
    pcam = c2lst.io.read_histology([str(pcam_files[i]) for i in np.sort(pick)], mpp=0.97,
                                   tile_um=cfg.tile_px * cfg.mpp, tile_px=cfg.tile_px).tiles
    tiles = np.concatenate([mono, pcam])
    print(f"{len(mono)} MoNuSeg tiles + {len(pcam)} PCam tiles", flush=True)
    t0 = time.time()
    model = c2lst.tl.pretrain(tiles, init=central, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                              out=a.out, overwrite=True)
    wall = time.time() - t0
    record = {"init": "c2lst.datasets.central_default()", "init_weights_sha256": central.weights_sha256,
              "steps": a.steps, "lr": a.lr, "batch_size": a.batch_size, "seed": a.seed, "stride": a.stride,
              "n_monuseg_tiles": len(mono), "n_pcam_tiles": len(pcam), "wall_time_s": round(wall, 1),
              "unet_loss": model.summary["unet_loss"], "threads": a.threads,
              "licence": "MoNuSeg CC BY-NC-SA 4.0: benchmark use only, do not ship"}
    (a.out / "refine.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
