"""Fidelity of a central model's unconditional samples: the numbers of the default model's card.

Samples ``--n`` tiles from the central model (guidance 0, the central model alone: zero-initialised
modulation) with DPM-Solver++ and compares them, in ``c2lst.metrics`` handcrafted colour/texture/nuclei
features standardised on the real set, with

- ``--n`` real tiles drawn from the model's training images (``scripts/train_central_default.py`` tiles the
  same permissively licensed images), and the **floor**: two disjoint real draws of the same size;
- the her2st demo section's 187 spot patches (``c2lst.datasets.demo``, never seen by the central model), next
  to the training tiles' own distance to them (the domain gap that adaptation has to close).

Reported: Fréchet distance, KID, precision/recall/density/coverage, diversity ratio, out-of-range share and the
Wasserstein distances of nuclei count, nuclear area and haematoxylin density. Also saves a grid of samples.

Run from the project root::

    .venv/bin/python benchmarks/central_fidelity.py --histology ../shared/data/histology --json fidelity.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import torch

import c2lst
from c2lst.core import CentralModel
from c2lst.core.models import LocalModel
from c2lst.metrics import composition_distances, fidelity_report, handcrafted_features

ROOT = Path(__file__).resolve().parents[1]


def training_tiles(histology: Path) -> np.ndarray:
    """The tiles the default central model is trained on (the training script's own tiling)."""
    spec = importlib.util.spec_from_file_location("train_central", ROOT / "scripts" / "train_central_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.histology_tiles(histology)[0]


def sample(central: CentralModel, n: int, *, steps: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """Unconditional samples of the central model (DPM-Solver++, guidance 0)."""
    genes = np.zeros((n, 1), np.float32)
    return LocalModel.unadapted(central).generate(genes, seeds=[seed * 100_003 + i for i in range(n)],
                                                  sampler="dpmsolver++", steps=steps, guidance_scale=0.0,
                                                  batch_size=batch_size)


def save_grid(tiles: np.ndarray, path: Path, cols: int = 16) -> None:
    """Write up to ``2 * cols`` tiles as one PNG row block."""
    from PIL import Image

    t = tiles[: 2 * cols]
    rows = -(-len(t) // cols)
    pad = np.full((rows * cols - len(t), *t.shape[1:]), 255, np.uint8)
    g = np.concatenate([t, pad]).reshape(rows, cols, *t.shape[1:])  # (r, c, 3, h, w)
    img = g.transpose(0, 3, 1, 4, 2).reshape(rows * t.shape[2], cols * t.shape[3], 3)
    Image.fromarray(img).save(path, optimize=True)


def rounded(d: dict[str, float]) -> dict[str, float]:
    return {k: float(f"{v:.4g}") for k, v in d.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--central", type=Path, default=None, help="saved central model (default: the bundled one)")
    p.add_argument("--histology", type=Path, default=ROOT / ".." / "shared" / "data" / "histology")
    p.add_argument("--n", type=int, default=256, help="synthetic tiles, and real tiles per real draw")
    p.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=Path, default=None, help="save a PNG of 32 samples here")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    c2lst.settings.progress_bar = False
    central = CentralModel.load(a.central) if a.central else c2lst.datasets.central_default()
    print(central, flush=True)

    tiles = training_tiles(a.histology)
    order = np.random.default_rng(a.seed).permutation(len(tiles))
    real_a, real_b = tiles[order[: a.n]], tiles[order[a.n: 2 * a.n]]
    sdata = c2lst.datasets.demo()
    c2lst.pp.extract_patches(sdata)
    her2st = np.asarray(sdata.tables["table"].obsm["c2lst_patch"])

    start = time.perf_counter()
    synthetic = sample(central, a.n, steps=a.steps, seed=a.seed)
    seconds = time.perf_counter() - start
    if a.grid is not None:
        save_grid(synthetic, a.grid)

    f = {name: handcrafted_features(x) for name, x in
         [("a", real_a), ("b", real_b), ("syn", synthetic), ("her2st", her2st)]}
    res = {
        "central": str(a.central or "central_default"), "n": a.n, "sampler": f"dpmsolver++-{a.steps}",
        "threads": a.threads, "sampling_s": round(seconds, 1),
        "floor_real_vs_real": rounded(fidelity_report(f["a"], f["b"], seed=a.seed)),
        "samples_vs_real": rounded(fidelity_report(f["a"], f["syn"], seed=a.seed)),
        "composition_floor": rounded(composition_distances(real_a, real_b)),
        "composition_samples": rounded(composition_distances(real_a, synthetic)),
        "her2st_vs_training_tiles": rounded(fidelity_report(f["her2st"], f["a"], seed=a.seed)),
        "her2st_vs_samples": rounded(fidelity_report(f["her2st"], f["syn"], seed=a.seed)),
    }
    print(json.dumps(res, indent=1))
    if a.json is not None:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
