# ruff: noqa: E402, B023  (a script: threads are set before torch-using imports; the closures run inside their loop)
"""Adapt the central model ($C2LST_CENTRAL, default the shipped one) per fold; save c2l tiles under $C2LST_EXP.

Usage: python benchmarks/synthetic_rows/generate.py FRACTION SEED C2,C3,C4,C5,C6
Saves mixup-profile tiles and own-profile tiles (same start, same noise) and prints the held-out denoising loss
with own / shuffled profiles and unconditionally. Section arrays are cached in /tmp/c2cache. Another number of
modulation steps than the benchmark's: C2LST_ADAPT_STEPS (default 300), with a file suffix C2LST_TAG (which score.py
and conditioning.py read too). The benchmark's local_only generator: C2LST_LOCAL_ONLY=2000 (see _common).
"""

import os
import time

import numpy as np
import torch
from _common import arguments, generator_for, load_central, sections, tiles_path

torch.set_num_threads(2)
from c2lst.benchmark._conditions import resize, spatial_mixup
from c2lst.benchmark._data import PATCH_PX
from c2lst.benchmark._fold import make_fold
from c2lst.core.adaptation import adapt_local
from c2lst.core.seeding import derive_seed

ADAPT_STEPS = int(os.environ.get("C2LST_ADAPT_STEPS", "300"))
fraction, seed, tests = arguments()
data = sections()
central = load_central()
for test_name in tests:
    fold = make_fold(data, test_name, fraction, seed)
    panel, patches, xy, group, z = fold.panel, fold.patches, fold.xy, fold.group, fold.z
    t = time.time()
    local = adapt_local(
        generator_for(fold, seed, central),
        patches,
        z,
        panel.to_dict(),
        steps=ADAPT_STEPS,
        batch_size=32,
        lr=1e-3,
        cond_dropout=0.1,
        lora_rank=0,
        seed=seed,
        decoder_steps=200,
    )
    ta = time.time() - t
    test = fold.test
    zt = panel.standardize(fold.truth())
    perm = np.random.default_rng(seed).permutation(len(zt))
    dl = {
        k: local.denoising_loss(test.patches, g, seed=seed, n_draws=4, conditional=c)
        for k, g, c in (("true", zt, True), ("shuffled", zt[perm], True), ("central", zt, False))
    }
    dtr = {
        k: local.denoising_loss(patches, g, seed=seed, n_draws=4, conditional=c)
        for k, g, c in (
            ("true", z, True),
            ("shuffled", z[np.random.default_rng(seed).permutation(len(z))], True),
            ("central", z, False),
        )
    }
    print(
        test_name,
        fraction,
        seed,
        "denoising loss held-out",
        {k: round(v, 5) for k, v in dl.items()},
        "train",
        {k: round(v, 5) for k, v in dtr.items()},
        flush=True,
    )
    profiles, src, partner = spatial_mixup(z, xy, group, n_per_profile=2, seed=seed)
    seeds = [derive_seed(seed, "synthetic", i) for i in range(len(profiles))]
    init = resize(patches[src], central.tile_px)
    t = time.time()
    mix = resize(
        np.asarray(local.generate(profiles, seeds=seeds, steps=20, guidance_scale=2.0, init_tiles=init, strength=0.8)),
        PATCH_PX,
    )
    own = resize(
        np.asarray(local.generate(z[src], seeds=seeds, steps=20, guidance_scale=2.0, init_tiles=init, strength=0.8)),
        PATCH_PX,
    )
    tg = time.time() - t
    np.savez_compressed(
        tiles_path(test_name, fraction, seed),
        mix=mix,
        own=own,
        profiles=profiles,
        src=src,
        partner=partner,
        group=group,
    )
    print(test_name, fraction, seed, f"adapt {ta:.0f}s generate {tg:.0f}s", flush=True)
