"""What the synthetic_rows scripts share: the command line, where the tiles are, the sections.

Environment: C2LST_EXP (tile folder, default /tmp/exp2), C2LST_TAG (tile file suffix: one set per adaptation
setting or central model), C2LST_CENTRAL (a saved central model directory; default the shipped
``central_default()``), C2LST_LOCAL_ONLY (N: the benchmark's ``local_only`` generator instead, a model of the
central configuration pretrained from random initialisation for N steps on the training sections' patches only,
saved once per held-out section and seed under C2LST_EXP and reused at every fraction; C2LST_LOCAL_ONLY_SEED=S
adapts the seed-S model at every seed instead, as the central model is one fixed model at every seed). Section
arrays are cached in /tmp/c2cache.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

OUT = os.environ.get("C2LST_EXP", "/tmp/exp2")
TAG = os.environ.get("C2LST_TAG", "")
CENTRAL = os.environ.get("C2LST_CENTRAL")
LOCAL_ONLY = int(os.environ.get("C2LST_LOCAL_ONLY", "0"))
LOCAL_ONLY_SEED = os.environ.get("C2LST_LOCAL_ONLY_SEED")


def arguments() -> tuple[float, int, list[str]]:
    """``FRACTION SEED C2,C3,...`` from the command line."""
    return float(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")


def sections() -> list[Any]:
    """The her2st sections C2-C6 (benchmark arrays, cached)."""
    from c2lst.benchmark._data import load_sections
    from c2lst.benchmark._run import SECTIONS

    return load_sections(SECTIONS, cache_dir="/tmp/c2cache")


def tiles_path(test: str, fraction: float, seed: int) -> str:
    """The ``.npz`` generate.py writes for one fold, fraction and seed."""
    return f"{OUT}/gen_{test}_{fraction}_{seed}{TAG}.npz"


def tile_folds(fraction: float, seed: int, tests: list[str]) -> Iterator[tuple[Any, Any]]:
    """Each held-out section's fold (``make_fold``) with the tiles generate.py saved for it."""
    import numpy as np

    from c2lst.benchmark._fold import make_fold

    data = sections()
    for test in tests:
        yield make_fold(data, test, fraction, seed), np.load(tiles_path(test, fraction, seed))


def load_central() -> Any:
    """The central model to adapt: ``$C2LST_CENTRAL`` (a ``CentralModel.save`` directory), else the shipped one."""
    from c2lst.core.models import CentralModel
    from c2lst.datasets import central_default

    return CentralModel.load(CENTRAL) if CENTRAL else central_default()


def generator_for(fold: Any, seed: int, central: Any) -> Any:
    """The model to adapt on ``fold``: ``central``, or with ``$C2LST_LOCAL_ONLY`` the fold's local-only model.

    The local-only model is the benchmark's (``_local_only_central``: ``central``'s configuration, random
    initialisation, the training sections' patches, ``seed``); it is trained once per held-out section and seed
    and saved to ``$C2LST_EXP/local_only_<test>_<seed>_<steps>``. With ``$C2LST_LOCAL_ONLY_SEED`` the model of
    that pretraining seed is used at every ``seed``: it sees the same images (all training-section patches) at every
    fraction and seed, so only its initialisation and batch order depend on the seed.
    """
    import time
    from pathlib import Path

    import numpy as np

    from c2lst.benchmark._run import _local_only_central
    from c2lst.core.models import CentralModel

    if not LOCAL_ONLY:
        return central
    seed = int(LOCAL_ONLY_SEED) if LOCAL_ONLY_SEED is not None else seed
    path = Path(OUT) / f"local_only_{fold.test.name}_{seed}_{LOCAL_ONLY}"
    if (path / "c2lst_central.json").is_file():
        return CentralModel.load(path)
    t = time.time()
    model = _local_only_central(central, np.concatenate([s.patches for s in fold.train]), steps=LOCAL_ONLY, seed=seed)
    model.save(path)
    print(fold.test.name, seed, f"local-only pretraining {LOCAL_ONLY} steps {time.time() - t:.0f}s", model.summary,
          flush=True)
    return model
