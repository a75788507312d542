"""Training sets of the benchmark conditions: diffusion-generated pairs through ``c2lst.tl``, cached features."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core.images import resize_tiles
from ..core.recipe import RECIPE, RecipeConfig
from ._fold import Fold

if TYPE_CHECKING:
    from spatialdata import SpatialData


class CachedFeatures:
    """Memoise a ``patches -> (n, F)`` feature function per patch content (sha1 of its bytes).

    Real spot patches recur in every fold, fraction and seed; their features are computed once.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], name: str) -> None:
        self.fn, self.__name__ = fn, name
        self.cache: dict[bytes, np.ndarray] = {}

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """Features of ``patches``, computing only the rows not seen before."""
        keys = [hashlib.sha1(np.ascontiguousarray(p).tobytes()).digest() for p in patches]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            new = np.asarray(self.fn(patches[todo]), dtype=np.float32).reshape(len(todo), -1)
            self.cache.update({keys[i]: row for i, row in zip(todo, new, strict=True)})
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


def fold_sdata(fold: Fold) -> SpatialData:
    """Build the ``SpatialData`` of the paired training spots of ``fold``, as a user would hand it to ``tl``.

    One table ``"table"``: raw counts of the panel genes and one column ``"(other genes)"`` holding the rest of
    each spot's library (her2st library sizes count every gene measured in the section), ``obs["library_id"]``
    (the training section), ``obsm["spatial"]`` (array positions) and ``obsm["c2lst_patch"]`` (the patches).
    Spots are named ``<section>-<row>``, in the fold's order.
    """
    from anndata import AnnData
    from spatialdata import SpatialData

    counts = np.concatenate([s.counts[p][:, fold.cols] for s, p in zip(fold.train, fold.picks, strict=True)])
    library = np.concatenate([s.library[p] for s, p in zip(fold.train, fold.picks, strict=True)])
    rest = np.maximum(library - counts.sum(axis=1, dtype=np.float64), 0.0)
    names = [f"{s.name}-{i}" for s, p in zip(fold.train, fold.picks, strict=True) for i in p]
    table = AnnData(X=np.c_[counts.astype(np.float64), rest],
                    obs=pd.DataFrame({"library_id": pd.Categorical([fold.train[g].name for g in fold.group])},
                                     index=names),
                    var=pd.DataFrame(index=[*map(str, fold.panel.genes), "(other genes)"]))
    table.obsm["spatial"] = np.asarray(fold.xy, dtype=np.float64)
    table.obsm["c2lst_patch"] = np.ascontiguousarray(fold.patches)
    return SpatialData(tables={"table": table})


def diffusion_pairs(central: Any, fold: Fold, *, recipe: RecipeConfig = RECIPE, adapt_batch_size: int | None = None,
                    batch_size: int = 64, out_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """Adapt ``central`` on the fold's paired spots and generate tiles for spatial-mixup profiles, through ``tl``.

    Runs :func:`c2lst.tl.adapt` and :func:`c2lst.tl.generate` (``source="mixup"``) with ``recipe``'s settings on
    :func:`fold_sdata`: the calls a user makes on the same spots give the same tiles, bit for bit.

    Returns
    -------
    ``(synthetic patches at out_px, their lognorm conditioning profiles, source row of each tile in the fold,
    stage timings)``.
    """
    from .. import tl

    sdata = fold_sdata(fold)
    t0 = time.perf_counter()
    local = tl.adapt(sdata, central, panel=fold.panel, steps=recipe.adapt_steps, batch_size=adapt_batch_size,
                     decoder_steps=recipe.decoder_steps, seed=fold.seed)
    t1 = time.perf_counter()
    tl.generate(sdata, local, source="mixup", n_per_profile=recipe.n_per_profile, n_neighbors=recipe.n_neighbors,
                mix_range=recipe.mix_range, library_key="library_id", steps=recipe.generate_steps,
                guidance_scale=recipe.guidance_scale, strength=recipe.strength, seed=fold.seed, batch_size=batch_size)
    t2 = time.perf_counter()
    syn, table = sdata.tables["c2lst_synthetic"], sdata.tables["table"]
    src = table.obs_names.get_indexer(syn.obs["source_spot"])
    tiles = resize_tiles(np.asarray(syn.obsm["c2lst_patch"]), out_px)
    return tiles, np.asarray(syn.X, dtype=np.float32), src, {"adapt_s": t1 - t0, "generate_s": t2 - t1}
