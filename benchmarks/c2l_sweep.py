"""Generation settings of the c2l condition on one leave-one-section-out fold: strength x guidance.

Same fold, panel, paired spots and predictor (handcrafted features + ridge) as ``c2lst.benchmark``: adapts the
shipped central model once on the paired spots of the training sections (modulation, then the local decoder),
then for each ``strength:guidance`` setting generates 2 tiles per paired spot for the benchmark's spatial-mixup
profiles and reports the synthetic tiles' fidelity (against the paired real tiles) and the held-out section's
mean Pearson r (top-50 HVG panel) with the synthetic pairs added. Also prints the two controls: real pairs
only, and the same mixup profiles on the source spots' own real patches (no generation).

Choosing settings on a held-out section is test-set selection: use one fold to choose, the other folds to
report (as ``benchmarks/README.md`` does).

Run from the project root::

    .venv/bin/python benchmarks/c2l_sweep.py --test C2 --fraction 0.25 --settings 1:2 0.8:2 0.8:1 0.8:0 0.65:2
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from c2lst.benchmark._conditions import CachedFeatures, resize, spatial_mixup
from c2lst.benchmark._data import PATCH_PX, load_sections
from c2lst.benchmark._fold import make_fold
from c2lst.benchmark._run import SECTIONS
from c2lst.core.adaptation import adapt_local
from c2lst.core.predictor import Predictor
from c2lst.core.seeding import derive_seed
from c2lst.datasets import central_default
from c2lst.metrics import fidelity_report, handcrafted_features, nuclei_stats, pearson_per_gene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", default="C2", help="held-out section")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS))
    parser.add_argument("--root", help="her2st folder (default ../shared/data/her2st)")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapt-steps", type=int, default=300)
    parser.add_argument("--decoder-steps", type=int, default=200)
    parser.add_argument("--settings", nargs="+", default=["1:2", "0.8:2"], help="strength:guidance pairs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", help="section cache folder (as the prediction benchmark's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_sections(tuple(args.sections), root=args.root, cache_dir=args.cache)
    fold = make_fold(data, args.test, args.fraction, args.seed)
    test, panel, patches, y, xy, group = fold.test, fold.panel, fold.patches, fold.y, fold.xy, fold.group
    truth = fold.truth()
    hand = CachedFeatures(handcrafted_features, "handcrafted")

    def pcc(extra_p: np.ndarray | None = None, extra_y: np.ndarray | None = None) -> float:
        model = Predictor(encoder=hand, handcrafted=False, seed=args.seed)
        model.fit(patches, y, extra_patches=extra_p, extra_targets=extra_y)
        return float(np.nanmean(pearson_per_gene(truth, model.predict(test.patches))))

    head = f"{args.test} f={args.fraction} seed {args.seed}"
    print(f"{head}: real pairs only: PCC {pcc():.4f}", flush=True)
    z = panel.standardize(y)
    began = time.perf_counter()
    local = adapt_local(central_default(), patches, z, panel.to_dict(), steps=args.adapt_steps, batch_size=32,
                        lr=1e-3, cond_dropout=0.1, lora_rank=0, seed=args.seed, decoder_steps=args.decoder_steps)
    print(f"{head}: adapted in {time.perf_counter() - began:.0f} s, modulation loss {local.summary['loss_first']:.4f} "
          f"-> {local.summary['loss_last']:.4f}", flush=True)
    profiles, src, _ = spatial_mixup(z, xy, group, n_per_profile=2, seed=args.seed)
    seeds = [derive_seed(args.seed, "synthetic", i) for i in range(len(profiles))]
    ey = panel.destandardize(profiles)
    print(f"{head}: mixup profiles on the source spots' real patches: PCC {pcc(patches[src], ey):.4f}", flush=True)
    for setting in args.settings:
        strength, guidance = map(float, setting.split(":"))
        began = time.perf_counter()
        tiles = local.generate(profiles, seeds=seeds, steps=20, guidance_scale=guidance, strength=strength,
                               init_tiles=resize(patches[src], local.central.tile_px) if strength < 1 else None)
        tiles = resize(tiles, PATCH_PX)
        r = fidelity_report(hand(patches), hand(tiles), seed=args.seed)
        print(f"{head}: strength {strength:g} guidance {guidance:g}: Fréchet {r['frechet']:.2f} precision "
              f"{r['precision']:.3f} recall {r['recall']:.3f} coverage {r['coverage']:.3f} out of range "
              f"{r['out_of_range']:.3f} diversity {r['diversity_ratio']:.3f} nuclei "
              f"{nuclei_stats(tiles)[:, 0].mean():.1f} | PCC {pcc(tiles, ey):.4f} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
