"""Pretraining throughput on this CPU against the matmul peak, fp32 and bf16 autocast, in one run.

For the "cpu" configuration, with ``--threads`` torch threads, measures:

- the 2048 x 2048 matmul peak (GFLOP/s), fp32 and bf16 (bf16 only where ``c2lst.core.runtime.native_bf16()``:
  AVX512-BF16 or AMX, probed through torch; without them bf16 is emulated and not worth timing);
- the bare UNet training step (forward, backward, clipping, AdamW; random latents, no data), img/s and
  achieved GFLOP/s (FLOPs counted with ``torch.utils.flop_counter``);
- end to end, ``c2lst.tl.pretrain`` on PCam tiles (``../shared/data/histology/pcam``): img/s of its UNet
  phase (data loading, augmentation, encoding, noise, EMA and loss bookkeeping included) and of its
  autoencoder phase, and the end-to-end share of the bare step.

Writes one row per precision to ``--csv`` (default ``benchmarks/measured/train_throughput.csv``). Timings are
only meaningful on an otherwise idle machine. Run from the project root:
``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_throughput.py``.
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import c2lst
from c2lst.core import get_config
from c2lst.core.networks import build_unet
from c2lst.core.runtime import native_bf16

ROOT = Path(__file__).resolve().parents[1]
PCAM = ROOT / ".." / "shared" / "data" / "histology" / "pcam"


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def bare_unet_step(cfg, batch: int, steps: int, bf16: bool) -> tuple[float, float]:
    """Img/s and GFLOP per image of the UNet training step alone."""
    torch.manual_seed(0)
    unet = build_unet(cfg).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4)
    z = torch.randn(batch, cfg.latent_channels, cfg.latent_px, cfg.latent_px)
    noise = torch.randn_like(z)
    t = torch.randint(0, cfg.num_train_timesteps, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = unet(z, t).sample
        F.mse_loss(pred.float(), noise).backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - start), counter.get_total_flops() / batch / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bare-steps", type=int, default=20, help="timed steps of the bare UNet step")
    parser.add_argument("--pretrain-steps", type=int, default=100,
                        help="steps of each tl.pretrain run (the configuration's share goes to the autoencoder)")
    parser.add_argument("--n-tiles", type=int, default=2000, help="PCam tiles the pretraining reads")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "measured" / "train_throughput.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c2lst.settings.progress_bar = False
    cfg = get_config("cpu")
    native = native_bf16()
    files = sorted((PCAM / "0").glob("*.jpg")) + sorted((PCAM / "1").glob("*.jpg"))
    order = np.random.default_rng(0).permutation(len(files))[: args.n_tiles]
    tiles = c2lst.io.read_histology([str(files[i]) for i in order], mpp=0.97, min_tissue=0.0)
    rows = []
    for mp in ("no", "bf16") if native else ("no",):
        bf16 = mp == "bf16"
        peak = matmul_peak(torch.bfloat16 if bf16 else torch.float32)
        bare, gflop = bare_unet_step(cfg, args.batch_size, args.bare_steps, bf16)
        model = c2lst.tl.pretrain(tiles, config=cfg, steps=args.pretrain_steps, batch_size=args.batch_size, seed=0,
                                  mixed_precision=mp)
        s = model.summary
        rows.append({"mixed_precision": mp, "threads": args.threads, "batch_size": args.batch_size,
                     "native_bf16": native, "cpu": platform.processor() or platform.machine(),
                     "matmul_peak_gflops": peak, "bare_unet_img_per_s": bare, "unet_step_gflop_per_img": gflop,
                     "bare_unet_share_of_peak": bare * gflop / peak,
                     "pretrain_unet_img_per_s": s["unet_img_per_s"],
                     "pretrain_autoencoder_img_per_s": s["autoencoder_img_per_s"],
                     "end_to_end_share_of_bare": s["unet_img_per_s"] / bare,
                     "unet_loss": s["unet_loss"], "autoencoder_loss": s["autoencoder_loss"]})
        print(pd.Series(rows[-1]).to_string(), flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.csv, index=False)
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
