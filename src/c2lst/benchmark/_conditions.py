"""Training sets of the benchmark conditions: diffusion-generated pairs through ``c2lst.tl``, cached features."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
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


def fold_sdata(fold: Fold, *, held_out: bool = False) -> SpatialData:
    """Build the ``SpatialData`` of the paired training spots of ``fold``, as a user would hand it to ``tl``.

    One table ``"table"``: raw counts of the panel genes and one column ``"(other genes)"`` holding the rest of
    each spot's library (her2st library sizes count every gene measured in the section), ``obs["library_id"]``
    (the section), ``obs["paired"]`` (the training spots), ``obsm["spatial"]`` (array positions) and
    ``obsm["c2lst_patch"]`` (the patches). Spots are named ``<section>-<row>``, the paired spots first in the
    fold's order, then (``held_out=True``) every spot of the held-out section, unpaired.
    """
    from anndata import AnnData
    from spatialdata import SpatialData

    parts = [(s, p) for s, p in zip(fold.train, fold.picks, strict=True)]
    if held_out:
        parts.append((fold.test, np.arange(len(fold.test.patches))))
    counts = np.concatenate([s.counts[p][:, fold.cols] for s, p in parts]).astype(np.float64)
    library = np.concatenate([s.library[p] for s, p in parts])
    rest = np.maximum(library - counts.sum(axis=1), 0.0)
    n_paired = len(fold.patches)
    obs = pd.DataFrame({"library_id": pd.Categorical([s.name for s, p in parts for _ in p]),
                        "paired": np.arange(len(library)) < n_paired},
                       index=[f"{s.name}-{i}" for s, p in parts for i in p])
    table = AnnData(X=np.c_[counts, rest], obs=obs, var=pd.DataFrame(index=[*map(str, fold.panel.genes),
                                                                            "(other genes)"]))
    table.obsm["spatial"] = np.concatenate([s.xy[p] for s, p in parts]).astype(np.float64)
    table.obsm["c2lst_patch"] = np.ascontiguousarray(np.concatenate([s.patches[p] for s, p in parts]))
    return SpatialData(tables={"table": table})


def adapt_fold(central: Any, fold: Fold, sdata: SpatialData, *, recipe: RecipeConfig = RECIPE,
               adapt_batch_size: int | None = None, tissue: np.ndarray | None = None) -> Any:
    """:func:`c2lst.tl.adapt` of ``central`` on the fold's paired spots (``obs["paired"]``) with ``recipe``'s settings."""
    from .. import tl

    paired = sdata.tables["table"].obs["paired"].to_numpy(dtype=bool)
    return tl.adapt(sdata, central, panel=fold.panel, train_mask=paired, steps=recipe.adapt_steps,
                    batch_size=adapt_batch_size, decoder_steps=recipe.decoder_steps, table_key="table",
                    seed=fold.seed, overwrite=True, tissue=tissue,
                    local_unconditional=recipe.local_unconditional or tissue is not None, n_comps=recipe.n_comps,
                    lora_rank=recipe.lora_rank)


def diffusion_pairs(central: Any, fold: Fold, *, recipe: RecipeConfig = RECIPE, adapt_batch_size: int | None = None,
                    batch_size: int = 64, out_px: int, sdata: SpatialData | None = None,
                    key_added: str = "c2lst_synthetic", tissue: np.ndarray | None = None,
                    adapt_on: Fold | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float], Any]:
    """Adapt ``central`` on the fold's paired spots (or ``adapt_on``'s), generate tiles for their mixup profiles, via ``tl``.

    Runs :func:`c2lst.tl.adapt` (``train_mask``: the paired spots) and :func:`c2lst.tl.generate`
    (``source="mixup"``) with ``recipe``'s settings on ``sdata`` (default :func:`fold_sdata`): the calls a user
    makes on the same spots give the same tiles, bit for bit. The synthetic table ``sdata.tables[key_added]``
    keeps the tiles resized to ``out_px``, the size of the real patches the predictor reads. ``tissue``: unlabelled
    tissue tiles of the fold's training sections for the local stage (``tl.adapt(tissue=...)``). ``adapt_on``: adapt
    on this fold's paired spots (its own :func:`fold_sdata`) instead, with the same panel, and generate for
    ``fold``'s paired spots (``tl.generate(spots=)``; the ``c2l_oracle`` condition:
    :func:`~c2lst.benchmark._fold.every_spot`).

    Raises
    ------
    ValueError
        When ``adapt_on`` has another gene panel than ``fold``.

    Returns
    -------
    ``(patches, profiles, source_rows, timings, local)``
        The synthetic patches at ``out_px``, their lognorm conditioning profiles, the source row of each tile in
        the fold, the stage timings and the adapted :class:`~c2lst.LocalModel`.
    """
    from .. import tl

    sdata = fold_sdata(fold) if sdata is None else sdata
    table = sdata.tables["table"]
    t0 = time.perf_counter()
    if adapt_on is not None and adapt_on.panel is not fold.panel:
        raise ValueError("`adapt_on` must keep the fold's gene panel; build it with every_spot(fold).")
    teacher, teacher_sdata = (fold, sdata) if adapt_on is None else (adapt_on, fold_sdata(adapt_on))
    local = adapt_fold(central, teacher, teacher_sdata, recipe=recipe, adapt_batch_size=adapt_batch_size,
                       tissue=tissue)
    t1 = time.perf_counter()
    paired = table.obs["paired"].to_numpy(dtype=bool) if adapt_on is not None else None  # else: the adapter's spots
    tl.generate(sdata, local, source="mixup", spots=paired, n_per_profile=recipe.n_per_profile, n_neighs=recipe.n_neighs,
                mix_range=recipe.mix_range, library_key="library_id", steps=recipe.generate_steps,
                sampler=recipe.sampler,
                guidance_scale=recipe.guidance_scale, guidance_reference=recipe.guidance_reference,
                strength=recipe.strength, seed=fold.seed, batch_size=batch_size,
                table_key="table", key_added=key_added, overwrite=True)
    t2 = time.perf_counter()
    syn = sdata.tables[key_added]
    src = table.obs_names.get_indexer(syn.obs["source_spot"])
    tiles = resize_tiles(np.asarray(syn.obsm["c2lst_patch"]), out_px)
    syn.obsm["c2lst_patch"] = tiles
    return tiles, np.asarray(syn.X, dtype=np.float32), src, {"adapt_s": t1 - t0, "generate_s": t2 - t1}, local


def synthetic_table(sdata: SpatialData, key: str, src: np.ndarray, patches: np.ndarray, profiles: np.ndarray,
                    genes: Sequence[str]) -> str:
    """Add ``sdata.tables[key]``, pairs of ``patches`` and lognorm ``profiles`` shaped like ``tl.generate``'s table.

    ``src`` are the rows of the source spots in ``sdata.tables["table"]`` (``obs["source_spot"]``). Used for the
    ``spatial_mixup`` ablation (real patches with mixup profiles). Returns ``key``.
    """
    from anndata import AnnData

    names = sdata.tables["table"].obs_names.to_numpy()[src]
    table = AnnData(X=np.asarray(profiles, dtype=np.float32), obs=pd.DataFrame(
        {"source_spot": names}, index=[f"{key}-{i}" for i in range(len(src))]), var=pd.DataFrame(index=list(genes)))
    table.obsm["c2lst_patch"] = np.ascontiguousarray(patches)
    table.uns["c2lst"] = {"synthetic": True}
    sdata.tables[key] = table
    return key
