"""One call from a section's spots to an evaluated, synthetic-augmented predictor."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _logging as logg
from .. import pp
from .._deprecation import renamed_kwargs
from .._docs import doc_params
from .._utils import LIBRARY_KEY, as_mask, returned, section_labels, spot_table, writable
from ..core.recipe import RECIPE
from ..pp._split import split_mask
from ._adapt import adapt
from ._evaluate import evaluate
from ._generate import generate
from ._predict import predict

if TYPE_CHECKING:
    import pandas as pd
    from spatialdata import SpatialData

    from ..core.models import CentralModel, LocalModel
    from ..io._histology import HistologyTiles
    from ..pp import GenePanel


@dataclass
class RunResult:
    """What :func:`c2lst.tl.run` produced.

    Attributes
    ----------
    central
        The central model used.
    local
        The adapted local model (save it with ``local.save(path)`` to share the adapter only).
    panel
        The gene panel chosen on the training spots.
    train_mask
        Boolean mask of the training spots over the table.
    evaluation
        Per-section, per-gene evaluation on the held-out spots (:func:`c2lst.tl.evaluate`: columns ``section``,
        ``gene``, ``pearson``, ...), ``None`` when every spot was used for training.
    """

    central: CentralModel
    local: LocalModel
    panel: GenePanel
    train_mask: np.ndarray
    evaluation: pd.DataFrame | None

    def top_genes(self, n: int = 3) -> list[str]:
        """Return the ``n`` genes with the highest held-out Pearson r (mean over sections)."""
        if self.evaluation is None:
            raise ValueError("no evaluation (every spot was used for training); rerun with held-out spots.")
        return list(self.evaluation.groupby("gene", sort=False)["pearson"].mean().nlargest(n).index)

    def __repr__(self) -> str:
        ev = "not evaluated (no held-out spot)" if self.evaluation is None else (
            f"mean held-out Pearson r {np.nanmean(self.evaluation['pearson']):.3f} over "
            f"{self.evaluation['gene'].nunique()} genes")
        return (f"RunResult({int(self.train_mask.sum())}/{self.train_mask.size} training spots, "
                f"{len(self.panel)} panel genes, {ev})")


def _central(central: CentralModel | str | Path | None) -> CentralModel:
    from ..core.models import CentralModel
    from ..datasets import central_default

    if central is None:
        return central_default()
    if isinstance(central, str | Path):
        return CentralModel.load(central)
    if not isinstance(central, CentralModel):
        raise ValueError(f"`central` must be None (the shipped default), a CentralModel or its directory; got "
                         f"{type(central).__name__}.")
    return central


@renamed_kwargs(panel_size="n_top_genes")
@doc_params
def run(
    sdata: SpatialData,
    *,
    central: CentralModel | str | Path | None = None,
    train_mask: Any = None,
    fraction: float | None = None,
    library_key: str | None = LIBRARY_KEY,
    n_top_genes: int = RECIPE.n_top_genes,
    adapt_steps: int | None = RECIPE.adapt_steps,
    n_synthetic: int = RECIPE.n_per_profile,
    generate_steps: int = RECIPE.generate_steps,
    strength: float = RECIPE.strength,
    tissue: int | np.ndarray | HistologyTiles | None = None,
    lora_rank: int = RECIPE.lora_rank,
    encoder: str = "handcrafted",
    n_augment: int = 0,
    batch_key: str | None = None,
    table_key: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
    copy: bool = False,
) -> RunResult | tuple[SpatialData, RunResult]:
    """Run the whole C2L-ST recipe on one SpatialData: patches, normalisation, panel, adapt, generate, predict, evaluate.

    Equivalent to::

        c2lst.pp.extract_patches(sdata, patch_px=central.tile_px)   # if .obsm["c2lst_patch"] is missing
        c2lst.pp.normalize(sdata, train_mask=train)
        panel = c2lst.pp.gene_panel(sdata, n_top_genes=n_top_genes, train_mask=train)
        local = c2lst.tl.adapt(sdata, central, panel=panel, train_mask=train, steps=adapt_steps, tissue=tissue,
                               lora_rank=lora_rank, seed=seed)
        c2lst.tl.generate(sdata, local, source="mixup", n_per_profile=n_synthetic, steps=generate_steps,
                          strength=strength, library_key=library_key, seed=seed)
        c2lst.tl.predict(sdata, train_mask=train, synthetic="c2lst_synthetic", encoder=encoder, central=central,
                         panel=panel, synthetic_weight=0.25, synthetic_align="moments", n_augment=n_augment,
                         batch_key=batch_key, seed=seed)
        evaluation = c2lst.tl.evaluate(sdata, train_mask=train, library_key=library_key)

    Normalisation statistics, the panel, the adapter and the predictor see the training spots only.

    Parameters
    ----------
    {sdata}
        It holds one table of raw counts, its spot circles and the H&E image (e.g. from
        :func:`c2lst.io.read_visium` or :func:`c2lst.datasets.demo`).
    central
        Central model, or its directory; ``None`` loads the shipped default
        (:func:`c2lst.datasets.central_default`).
    {train_mask}
    fraction
        Alternatively, the seeded random share of each section's spots to train on. With neither, half of
        the spots train and the other half are held out for evaluation. ``fraction=1`` trains on every spot
        and skips the evaluation.
    {library_key}
        The split, the mixup partners and the evaluation are per section.
    n_top_genes
        Number of genes in the panel (highly variable on the training spots; ``panel_size`` is its deprecated
        old name).
    adapt_steps
        Adaptation steps (``None``: the central model's configuration).
    n_synthetic
        Synthetic patches per mixup profile (one profile per training spot).
    generate_steps
        Denoising steps per synthetic patch.
    strength
        Share of the denoising path per synthetic patch (:func:`c2lst.tl.generate`); below 1 each patch starts
        from its source spot's patch. The defaults of ``n_top_genes``, ``adapt_steps``, ``n_synthetic``,
        ``generate_steps`` and ``strength`` (50, 300, 2, 50, 0.8), of the mixup and of the synthetic rows' weight
        and alignment are the recipe the her2st benchmark measured (:data:`c2lst.core.recipe.RECIPE`;
        ``c2lst benchmark`` runs the same calls).
    tissue
        The local tissue stage (:func:`c2lst.tl.adapt`'s ``tissue``): a budget of unlabelled tissue tiles drawn from
        the images of the sections with training spots (those of ``obs["library_id"]``; held-out spots' footprints
        excluded), or tiles. Default: none. What it changes on her2st is the benchmark's ``c2l_tissue`` condition
        (``benchmarks/README.md``).
    lora_rank
        Rank of LoRA adapters on a copy of the central UNet (:func:`c2lst.tl.adapt`; needs ``peft``; 0: none).
    encoder
        Patch encoder of the predictor: ``"handcrafted"`` (default), ``"central"`` or ``"cnn"``
        (:func:`c2lst.tl.predict`, which also sets how the synthetic rows are weighed).
    n_augment
        Flipped, rotated and stain-jittered copies of each training patch fitted as their own set of rows next to
        the synthetic rows (:func:`c2lst.tl.predict`'s ``n_augment``; 0: none).
    batch_key
        ``.obs`` column of the spots' section or slide: the predictor standardises each section's features on its
        own patches (:func:`c2lst.tl.predict`'s ``batch_key``). ``None``: one standardisation for all spots.
    {table_key}
    {seed}
    overwrite
        Replace the slots a previous run wrote (``lognorm``, the panel, the adapter record, the synthetic
        table, the prediction, the evaluation).
    {copy}

    Returns
    -------
    :class:`RunResult` with the models, the panel, the training mask and the evaluation (``(copy, result)`` with
    ``copy=True``). Writes to the table everything the steps write, each under its step's default ``key_added``
    (run takes none: call the steps to choose other names): ``obsm['c2lst_patch']`` (if missing; 100 µm at the
    central model's tile size), ``layers['lognorm']``, ``var``/``uns['c2lst_panel']``, ``uns['c2lst_adapt']``, the
    table ``sdata.tables['c2lst_synthetic']``, ``layers['c2lst_pred']`` + ``uns['c2lst_pred']`` and
    ``var['c2lst_eval_pearson']`` + ``uns['c2lst_eval']``.
    """
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        raise ValueError(f"c2lst.tl.run needs a SpatialData object (synthetic patches go to a new table), got "
                         f"{type(sdata).__name__}; convert an AnnData with c2lst.io.from_anndata.")
    start = logg.info("c2lst.tl.run: central -> local -> synthetic -> predictor")
    sdata = writable(sdata, copy)
    _, table, table_key = spot_table(sdata, table_key)  # skips a synthetic table left by a previous run
    if train_mask is not None and fraction is not None:
        raise ValueError("pass either `train_mask` or `fraction`, not both.")
    if train_mask is None:
        train = split_mask(section_labels(table, library_key), 0.5 if fraction is None else fraction, seed)
    else:
        train = as_mask(train_mask, table.n_obs)
    model = _central(central)
    if "c2lst_patch" not in table.obsm:  # at the central model's tile size, like its synthetic patches
        pp.extract_patches(sdata, patch_px=model.tile_px, table_key=table_key)
    pp.normalize(sdata, train_mask=train, table_key=table_key, overwrite=overwrite)
    panel = pp.gene_panel(sdata, n_top_genes=min(n_top_genes, table.n_vars), train_mask=train, table_key=table_key,
                          overwrite=overwrite)
    local = adapt(sdata, model, panel=panel, train_mask=train, steps=adapt_steps, tissue=tissue, lora_rank=lora_rank,
                  table_key=table_key, seed=seed, overwrite=overwrite)
    generate(sdata, local, source="mixup", n_per_profile=n_synthetic, steps=generate_steps, strength=strength,
             library_key=library_key, table_key=table_key, seed=seed, overwrite=overwrite)
    predict(sdata, train_mask=train, synthetic="c2lst_synthetic", encoder=encoder, central=model, panel=panel,
            synthetic_weight=RECIPE.synthetic_weight, synthetic_align=RECIPE.synthetic_align,
            n_augment=n_augment, batch_key=batch_key, table_key=table_key, seed=seed, overwrite=overwrite)
    evaluation = None
    if train.all():
        logg.info("    every spot was used for training: no held-out spot to evaluate on")
    else:
        evaluation = evaluate(sdata, train_mask=train, library_key=library_key, table_key=table_key,
                              overwrite=overwrite)
    result = RunResult(model, local, panel, train, evaluation)
    logg.info(f"    {result!r}", time=start)
    return returned(sdata, result, copy)
