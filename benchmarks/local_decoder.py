"""Does the central decoder fit the local tissue, and does a local decoder fix it? Leave-one-section-out on her2st.

For each held-out section: a fraction ``--fraction`` of each *other* section's spots (seeded as in the
prediction benchmark) are the local training patches. The held-out section's patches are encoded with the
frozen central encoder and decoded twice: with the central decoder, and with a copy of it fine-tuned on the
training patches for ``--steps`` steps (``c2lst.core.adaptation.adapt_decoder``, the decoder ``tl.adapt``
trains). Both reconstructions are compared with the real held-out patches in ``c2lst.metrics``
handcrafted features (Fréchet, precision/recall, out-of-range share, diversity ratio, nuclei per patch),
next to the floor of real training patches against the held-out ones.

Run from the project root::

    .venv/bin/python benchmarks/local_decoder.py --threads 2 --json /tmp/local_decoder.json
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from c2lst.benchmark._data import load_sections
from c2lst.benchmark._fold import select_pairs
from c2lst.benchmark._run import SECTIONS
from c2lst.core.adaptation import adapt_decoder
from c2lst.core.images import to_model, to_uint8
from c2lst.core.runtime import make_accelerator
from c2lst.datasets import central_default
from c2lst.metrics import fidelity_report, handcrafted_features, nuclei_stats


def reconstruct(autoencoder: torch.nn.Module, patches: np.ndarray, tile_px: int) -> np.ndarray:
    """Decode the encoder's latent means of ``patches`` (uint8 in, uint8 out)."""
    with torch.no_grad():
        mean, _ = autoencoder.encode(to_model(patches, tile_px))
        return to_uint8(autoencoder.decode(mean))


def row(name: str, real: np.ndarray, f_real: np.ndarray, patches: np.ndarray, seed: int) -> dict[str, float]:
    """Fidelity of ``patches`` against the held-out ``real`` patches."""
    r = fidelity_report(f_real, handcrafted_features(patches), seed=seed)
    return {"decoder": name, "frechet": r["frechet"], "precision": r["precision"], "recall": r["recall"],
            "out_of_range": r["out_of_range"], "diversity_ratio": r["diversity_ratio"],
            "nuclei": float(nuclei_stats(patches)[:, 0].mean()), "nuclei_real": float(nuclei_stats(real)[:, 0].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS))
    parser.add_argument("--root", help="her2st folder (default ../shared/data/her2st)")
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=None, help="section cache folder (as the prediction benchmark's)")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_sections(tuple(args.sections), root=args.root, cache_dir=args.cache)
    central = central_default()
    px = central.tile_px
    rows = []
    for i, test in enumerate(data):
        train = [s for j, s in enumerate(data) if j != i]
        picks = select_pairs(train, args.fraction, args.seed)
        patches = np.concatenate([s.patches[p] for s, p in zip(train, picks, strict=True)])
        f_real = handcrafted_features(test.patches)
        began = time.perf_counter()
        local, summary = adapt_decoder(central.autoencoder, to_model(patches, px), steps=args.steps, batch_size=32,
                                       lr=central.config.adapt_lr, grad_weight=central.config.ae_grad_weight,
                                       seed=args.seed, accelerator=make_accelerator("no"))
        seconds = time.perf_counter() - began
        for name, tiles in (("floor: real training patches", patches),
                            ("central decoder", reconstruct(central.autoencoder, test.patches, px)),
                            ("local decoder", reconstruct(local, test.patches, px))):
            rows.append({"test_section": test.name, "n_train": len(patches), "decoder_s": seconds,
                         "loss_first": summary["loss_first"], "loss_last": summary["loss_last"],
                         **row(name, test.patches, f_real, tiles, args.seed)})
            r = rows[-1]
            print(f"{test.name} {name:30s} Fréchet {r['frechet']:8.2f}  precision {r['precision']:.3f}  recall "
                  f"{r['recall']:.3f}  out of range {r['out_of_range']:.3f}  diversity {r['diversity_ratio']:.3f}  "
                  f"nuclei {r['nuclei']:.1f} (real {r['nuclei_real']:.1f})", flush=True)
        print(f"{test.name}: {len(patches)} training patches, {args.steps} decoder steps in {seconds:.1f} s, loss "
              f"{summary['loss_first']:.4f} -> {summary['loss_last']:.4f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
