"""Peak memory of central pretraining on 100k streamed tiles (``read_histology(lazy=True)``).

Tiles of 100 µm at 64 px are cut from the real images in ``../shared/data`` (the five her2st HER2+
sections, ~0.78 µm/px from their spot pitch; the PatchCamelyon JPEGs, 0.97 µm/px; MoNuSeg, 0.5 µm/px) one
image at a time into an on-disk tile store (``read_histology(lazy=True)``). Their addresses are repeated to
make 100,000 tile references (the distinct tiles are fewer; the references are what a training run of that
size streams from). Then:

0. (cutting: the images are decoded one at a time; the largest, a 9,300 x 9,900 px her2st JPEG, sets this
   phase's peak, whatever the number of tiles)
1. every one of the 100k references goes once through a ``torch`` ``DataLoader`` (batch 64, worker
   processes), reading the pixels (the full data pipeline, nothing kept);
2. ``c2lst.tl.pretrain`` trains the given configuration for a few steps, sampling from all 100k references.

A thread samples the memory of this process and its data-loader workers every 0.2 s: the peak of their
summed PSS (proportional set size, shared pages counted once) is the number to keep under 2 GB; the peak
summed RSS (shared pages counted in every process) is printed as an upper bound. For comparison, the 100k
tiles alone would take 1.2 GB as an in-memory uint8 array.

Run from the project root (writes the JSON it prints with ``--json``)::

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/pretrain_streaming.py \
        --json benchmarks/measured/pretrain_streaming.json
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader

import c2lst
from c2lst.io._build import median_nn_spacing
from c2lst.io._histology import TileStream

ROOT = Path(__file__).resolve().parents[1]
N_REFS = 100_000


class Peak(threading.Thread):
    """Peak summed PSS and RSS (bytes) of this process and its children, sampled every ``every`` s."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.every, self.pss, self.rss, self.stop = every, 0, 0, threading.Event()
        self.phase_pss: dict[str, float] = {}
        self._since = 0

    def mark(self, phase: str) -> None:
        """Record the peak PSS (GB) since the previous mark as ``phase``'s."""
        self.phase_pss[phase] = round(self._since / 1e9, 3)
        self._since = 0

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            pss = rss = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                pss, rss = pss + info.pss, rss + info.rss
            self.pss, self.rss, self._since = max(self.pss, pss), max(self.rss, rss), max(self._since, pss)
            time.sleep(self.every)


def her2st_mpp(section: Path) -> float:
    import pandas as pd

    spots = pd.read_csv(next(section.glob("*_selection.tsv")), sep="\t")
    return 200.0 / median_nn_spacing(spots[["pixel_x", "pixel_y"]].to_numpy(np.float64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=None, help="training batch (default: the config's)")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(2)
    c2lst.settings.progress_bar = False
    peak = Peak()
    peak.start()
    t0 = time.perf_counter()

    sections = sorted(p for p in (a.data / "her2st").iterdir() if p.is_dir())
    files = [next(s.glob("*.jpg")) for s in sections]
    mpp = {f.name: her2st_mpp(s) for f, s in zip(files, sections, strict=True)}
    pcam = sorted((a.data / "histology" / "pcam").rglob("*.jpg"))
    monuseg = sorted((a.data / "histology" / "monuseg").glob("*.png"))
    mpp |= {f.name: 0.97 for f in pcam} | {f.name: 0.5 for f in monuseg}
    histo = c2lst.io.read_histology([*files, *pcam, *monuseg], mpp=mpp, tile_um=100.0, tile_px=64, lazy=True)
    distinct = histo.tiles
    t_index = time.perf_counter() - t0
    time.sleep(0.5)
    peak.mark("cut")
    reps = np.resize(np.arange(len(distinct)), N_REFS)
    stream = TileStream(distinct.path, distinct.index[reps], tile_px=distinct.tile_px,
                        fingerprint=hashlib.sha256(f"{distinct.fingerprint} x{N_REFS}".encode()).hexdigest())
    refs = dataclasses.replace(histo, tiles=stream, source=histo.source[reps])
    n_files = histo.params["n_files"]
    print(f"cut {len(distinct)} distinct tiles of {n_files} files in {t_index:.0f} s; {len(stream)} references")

    # 1. all 100k references through the data pipeline once
    t1 = time.perf_counter()
    loader = DataLoader(stream, batch_size=64, num_workers=a.num_workers, collate_fn=np.stack)
    n, total = 0, 0.0
    for batch in loader:
        n += len(batch)
        total += float(batch.mean()) * len(batch)
    t_pass = time.perf_counter() - t1
    time.sleep(0.5)
    peak.mark("pass")
    print(f"read {n} tiles in {t_pass:.0f} s ({n / t_pass:.0f} tiles/s), mean pixel {total / n:.1f}")

    # 2. pretraining, sampling from all 100k references
    t2 = time.perf_counter()
    model = c2lst.tl.pretrain(refs, config=a.config, steps=a.steps, batch_size=a.batch_size, seed=0,
                              num_workers=a.num_workers)
    t_train = time.perf_counter() - t2
    time.sleep(0.5)
    peak.mark("train")
    peak.stop.set()
    peak.join()
    s = model.summary
    result = {
        "command": "PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/pretrain_streaming.py " + " ".join(sys.argv[1:]),
        "tile_references": len(stream), "distinct_tiles": len(distinct), "files": n_files,
        "tiles_read_in_pass": n, "pass_seconds": round(t_pass, 1), "cut_seconds": round(t_index, 1),
        "config": a.config, "steps": a.steps, "batch_size": s["batch_size"], "num_workers": a.num_workers,
        "train_seconds": round(t_train, 1), "autoencoder_loss": s.get("autoencoder_loss"), "unet_loss": s["unet_loss"],
        "peak_pss_gb": round(peak.pss / 1e9, 3), "peak_rss_sum_gb": round(peak.rss / 1e9, 3),
        "peak_pss_gb_by_phase": peak.phase_pss,
        "in_memory_tiles_gb": round(len(stream) * 3 * 64 * 64 / 1e9, 3),
        "tile_store_gb": round(distinct.path.stat().st_size / 1e9, 3), "torch_threads": 2, "cpus": psutil.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__,
        "note": "2-core machine shared with other jobs: times are indicative only",
    }
    print(json.dumps(result, indent=2))
    print(f"peak memory (PSS, main + workers): {peak.pss / 1e9:.2f} GB "
          f"({'under' if peak.pss < 2e9 else 'OVER'} 2 GB); summed RSS {peak.rss / 1e9:.2f} GB")
    if a.json:
        a.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
