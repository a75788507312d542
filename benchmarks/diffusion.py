"""Throughput, FLOPs and sampler fidelity of the central latent-diffusion model ("cpu" configuration).

Measures, on the CPU with ``--threads`` torch threads:

- the 2048 x 2048 matmul peak (fp32 and bf16), the reference for achieved GFLOP/s;
- FLOPs of one forward of the autoencoder (encode + decode) and of the UNet, and of one UNet training
  step (forward + backward), counted with ``torch.utils.flop_counter.FlopCounterMode``;
- pretraining throughput (img/s) of both phases, fp32 and bf16 autocast (short ``c2lst.tl.pretrain`` runs);
- generation throughput (patches/s) and fidelity of DDPM-1000, DDIM-50 and DPM-Solver++-20 from the same
  seeds, plus DPM-Solver++-20 under bf16 autocast (a few patches, compared pixel-wise with fp32). Fidelity = Fréchet distance of ``c2lst.metrics``
  handcrafted colour/texture/nuclei features (standardised on the real set) between the synthetic patches
  and real held-out PCam tiles (``../shared/data/histology/pcam``, never used for training here).

The model: ``--central DIR`` (a saved central model), else the bundled ``c2lst.datasets.central_default()``,
else a short pretraining on PCam tiles (``--pretrain-steps``; an undertrained model, so fidelity values are
only comparable between samplers). Generation is unconditional (the central model: guidance 0).

Run from the project root: ``.venv/bin/python benchmarks/diffusion.py [--n-samples 16] [--threads 2]``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import c2lst
from c2lst.core import CentralModel, get_config
from c2lst.core.models import LocalModel
from c2lst.io._histology import HistologyTiles
from c2lst.metrics import frechet_distance, handcrafted_features, standardize_on_real

ROOT = Path(__file__).resolve().parents[1]
PCAM = ROOT / ".." / "shared" / "data" / "histology" / "pcam"
SAMPLERS = [("ddpm", 1000), ("ddim", 50), ("dpmsolver++", 20)]


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a[:64, :64] @ b[:64, :64]
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def flops(fn) -> float:
    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def pcam_tiles(n_train: int, n_heldout: int) -> tuple[HistologyTiles, np.ndarray]:
    files = sorted((PCAM / "0").glob("*.jpg")) + sorted((PCAM / "1").glob("*.jpg"))
    order = np.random.default_rng(0).permutation(len(files))
    train = [str(files[i]) for i in order[:n_train]]
    heldout = [str(files[i]) for i in order[-n_heldout:]]
    return (c2lst.io.read_histology(train, mpp=0.97, min_tissue=0.0),
            c2lst.io.read_histology(heldout, mpp=0.97, min_tissue=0.0).tiles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--central", type=Path, default=None, help="directory of a saved central model")
    parser.add_argument("--pretrain-steps", type=int, default=60,
                        help="steps of the fp32 throughput pretraining (also the fallback model)")
    parser.add_argument("--n-samples", type=int, default=8, help="patches per sampler")
    parser.add_argument("--n-real", type=int, default=256, help="real held-out tiles for fidelity")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    c2lst.settings.progress_bar = False
    cfg = get_config("cpu")
    res: dict[str, object] = {"threads": args.threads, "n_samples": args.n_samples}

    # bf16 matmul without AVX512-BF16/AMX runs at ~0.5 GFLOP/s here: one repetition is enough
    res["matmul_gflops"] = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16, reps=1)}
    print("matmul peak GFLOP/s", res["matmul_gflops"], flush=True)

    # pretraining throughput through both phases (fp32); this run is also the fallback model. bf16 autocast is
    # tens of times slower on a CPU without bf16 instructions, so its run is minimal
    train, real = pcam_tiles(n_train=2000, n_heldout=args.n_real)
    for mp, steps, batch in (("no", args.pretrain_steps, 32), ("bf16", 2, 8)):
        model = c2lst.tl.pretrain(train, config=cfg, steps=steps, batch_size=batch, seed=0, mixed_precision=mp)
        s = model.summary
        res[f"pretrain_{mp}"] = {"steps": steps, "batch_size": batch, "autoencoder_img_per_s": s["autoencoder_img_per_s"],
                                 "unet_img_per_s": s["unet_img_per_s"]}
        print("pretrain", mp, res[f"pretrain_{mp}"], flush=True)
        if mp == "no":
            fallback = model
    if args.central is not None:
        central, origin = CentralModel.load(args.central), str(args.central)
    else:
        try:
            central, origin = c2lst.datasets.central_default(), "central_default"
        except ValueError:
            central = fallback
            origin = f"fallback pretraining, {args.pretrain_steps} steps on {len(train)} PCam tiles (undertrained)"
    res["central"] = origin
    print("central:", origin, central, flush=True)

    # FLOPs per forward / training step
    x = torch.zeros(1, 3, cfg.tile_px, cfg.tile_px)
    z = torch.zeros(1, cfg.latent_channels, cfg.latent_px, cfg.latent_px)
    t = torch.tensor([500])
    unet = central.unet
    ae = central.autoencoder
    with torch.no_grad():
        f_unet = flops(lambda: unet(z, t))
        f_ae = flops(lambda: ae.decode(ae.encode(x)[0]))

    def train_step() -> None:
        unet.requires_grad_(True)
        unet(z, t).sample.square().mean().backward()
        unet.zero_grad(set_to_none=True)
        unet.requires_grad_(False)

    f_train = flops(train_step)
    res["gflop_per_image"] = {"unet_forward": f_unet / 1e9, "autoencoder_forward": f_ae / 1e9,
                              "unet_train_step": f_train / 1e9}
    print("GFLOP per image", res["gflop_per_image"], flush=True)

    for mp in ("no", "bf16"):
        res[f"pretrain_{mp}"]["unet_train_gflops"] = res[f"pretrain_{mp}"]["unet_img_per_s"] * f_train / 1e9

    # generation: same seeds for every sampler; unconditional (guidance 0 = the central model)
    local = LocalModel.unadapted(central)
    genes = np.zeros((args.n_samples, 1), np.float32)
    seeds = list(range(args.n_samples))
    real_f = handcrafted_features(real)
    gen: dict[str, dict[str, float]] = {}
    images = {}
    for sampler, steps in SAMPLERS:
        start = time.perf_counter()
        images[sampler] = local.generate(genes, seeds=seeds, sampler=sampler, steps=steps, guidance_scale=0.0,
                                         batch_size=args.n_samples)
        sec = time.perf_counter() - start
        rz, sz = standardize_on_real(real_f, handcrafted_features(images[sampler]))
        gen[f"{sampler}-{steps}"] = {"seconds": sec, "patches_per_s": args.n_samples / sec,
                                     "unet_gflops": f_unet * steps * args.n_samples / sec / 1e9,
                                     "frechet": frechet_distance(rz, sz)}
        print(f"{sampler}-{steps}", gen[f"{sampler}-{steps}"], flush=True)
    # bf16 autocast sampling: a few patches, compared pixel-wise with the fp32 patches of the same seeds
    n_bf16 = min(4, args.n_samples)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = local.generate(genes[:n_bf16], seeds=seeds[:n_bf16], steps=20, guidance_scale=0.0)
    sec = time.perf_counter() - start
    gen["dpmsolver++-20-bf16"] = {
        "seconds": sec, "patches_per_s": n_bf16 / sec, "unet_gflops": f_unet * 20 * n_bf16 / sec / 1e9,
        "mean_abs_diff_vs_fp32": float(np.abs(bf16.astype(float) - images["dpmsolver++"][:n_bf16]).mean()),
    }
    print("dpmsolver++-20-bf16", gen["dpmsolver++-20-bf16"], flush=True)
    res["generation"] = gen
    ddpm, dpm = gen["ddpm-1000"], gen["dpmsolver++-20"]
    res["dpm_vs_ddpm"] = {"speedup": ddpm["seconds"] / dpm["seconds"],
                          "frechet_ratio": dpm["frechet"] / ddpm["frechet"]}
    print("DPM-Solver++-20 vs DDPM-1000", res["dpm_vs_ddpm"], flush=True)
    print(json.dumps(res, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
