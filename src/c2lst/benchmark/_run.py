"""The data-limited benchmark: leave one section out, fractions of paired training spots, fifteen conditions."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._deprecation import renamed_kwargs
from ..core.predictor import Predictor, check_extra_options
from ..core.recipe import RECIPE, RecipeConfig, spatial_mixup
from ..files import check_output
from ..io._histology import TISSUE_DETECTOR
from ..metrics import (
    fidelity_floor,
    floor_halves,
    handcrafted_features,
    pearson_per_gene,
    reconstruction_ceiling,
    synthetic_report,
)
from ..metrics._regression import finite_mean
from ._conditions import CachedFeatures, adapt_fold, diffusion_pairs, fold_sdata, synthetic_table
from ._data import (
    CONDITIONS,
    DIFFUSION,
    FEATURE_CONDITIONS,
    PATCH_PX,
    SECTIONS,
    TISSUE_CONDITIONS,
    TISSUE_TILES,
    load_sections,
)
from ._fold import every_spot, fold_tissue, make_fold, n_paired

# the generator whose tiles each diffusion condition uses (c2l_augment reuses the c2l tiles of its fold)
_GENERATOR = {**{c: c for c in DIFFUSION}, "c2l_augment": "c2l"}
# conditions whose generator is a model trained on the fold's local tiles before adaptation
_LOCAL_MODELS = ("local_only", "local_only_tissue", "refined_tissue")
QUICK_TISSUE_TILES = 16


class StageMeter:
    """Wall time and peak resident memory (and peak CUDA memory) of named stages.

    ``parts`` holds the timed parts of a stage (e.g. adaptation and generation inside ``diffusion``): they are
    reported in :meth:`row` but not counted again in :attr:`total`.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.parts: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}

    @property
    def total(self) -> float:
        """Wall time of all stages (parts excluded: they are inside a stage)."""
        return sum(self.seconds.values())

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time ``name`` and sample the process RSS every 20 ms while it runs."""
        import psutil
        import torch

        proc, peak, done = psutil.Process(), [proc_rss := psutil.Process().memory_info().rss], threading.Event()

        def sample() -> None:
            while not done.wait(0.02):
                peak.append(proc.memory_info().rss)

        thread = threading.Thread(target=sample, daemon=True)
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            mb = max(max(peak), proc_rss) / 2**20
            if cuda:
                self.peak_mb[f"{name}_gpu"] = max(self.peak_mb.get(f"{name}_gpu", 0.0), torch.cuda.max_memory_allocated() / 2**20)
            self.peak_mb[name] = max(self.peak_mb.get(name, 0.0), mb)

    def row(self) -> dict[str, float]:
        """Flat ``t_<stage>_s`` / ``mem_<stage>_mb`` columns."""
        times = {**self.seconds, **self.parts}
        return {**{f"t_{k}_s": v for k, v in times.items()}, **{f"mem_{k}_mb": v for k, v in self.peak_mb.items()}}


def _local_central(central: Any, patches: np.ndarray, *, steps: int, seed: int, refine: bool) -> Any:
    """Train a model of the central configuration on local patches only.

    From random initialisation, or with ``refine`` the central model itself refined (its autoencoder kept, its
    UNet trained on every step).
    """
    from .. import tl

    kw = {"init": central} if refine else {"config": central.config}
    return tl.pretrain(patches, steps=steps, seed=seed, mixed_precision="bf16" if _cuda() else "no", **kw)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _quick_central(patches: np.ndarray, seed: int, init: Any = None) -> Any:
    """Pretrain a tiny central model (or refine ``init``) for a handful of steps (smoke tests only)."""
    from .. import tl

    kw = {"init": init} if init is not None else {"config": "tiny"}
    return tl.pretrain(patches, steps=12, batch_size=8, seed=seed, mixed_precision="no", **kw)


def _resolve_central(central: Any) -> Any:
    if central is None:
        from ..datasets import central_default

        return central_default()
    if callable(getattr(central, "features", None)):
        return central
    from ..core.models import CentralModel

    return CentralModel.load(central)


def _variant(cond: str, recipe: RecipeConfig) -> dict[str, Any]:
    """Return the recipe's settings a row of ``cond`` records (0, NaN or "" where the condition does not use them)."""
    adapts = cond in DIFFUSION or FEATURE_CONDITIONS.get(cond, ("",))[0] == "adapted"  # a LocalModel
    tissue = cond in TISSUE_CONDITIONS
    return {  # tissue conditions have the local component in any case
        "local_unconditional": adapts and not tissue and recipe.local_unconditional,
        "n_comps": recipe.n_comps if adapts else 0,
        "lora_rank": recipe.lora_rank if adapts else 0,
        "tissue_detector": TISSUE_DETECTOR if tissue else 0,
        "adapt_steps": recipe.adapt_steps if adapts else 0,
        "guidance_scale": recipe.guidance_scale if cond in DIFFUSION else float("nan"),
        "guidance_reference": recipe.guidance_reference if cond in DIFFUSION else "",
        "sampler": recipe.sampler if cond in DIFFUSION else "",
        "generate_steps": recipe.generate_steps if cond in DIFFUSION else 0,
    }

@renamed_kwargs(n_top="n_top_genes")
def run_benchmark(
    sections: Sequence[str] = SECTIONS,
    *,
    root: str | Path | None = None,
    fractions: Sequence[float] = (0.1, 0.25, 0.5, 1.0),
    seeds: Sequence[int] = (0, 1, 2),
    conditions: Sequence[str] = CONDITIONS,
    quick: bool = False,
    out_dir: str | Path = "benchmarks/results",
    central: Any = None,
    encoder: str = "handcrafted",
    n_top_genes: int = RECIPE.n_top_genes,
    n_per_profile: int = RECIPE.n_per_profile,
    n_augment: int = 2,
    augment_weight: float = 1.0,
    adapt_steps: int | None = RECIPE.adapt_steps,
    decoder_steps: int = RECIPE.decoder_steps,
    local_steps: int = 2000,
    sample_steps: int = RECIPE.generate_steps,
    sampler: str = RECIPE.sampler,
    guidance_scale: float = RECIPE.guidance_scale,
    guidance_reference: str = RECIPE.guidance_reference,
    strength: float = RECIPE.strength,
    synthetic_weight: float | str = RECIPE.synthetic_weight,
    synthetic_align: str | None = RECIPE.synthetic_align,
    group_norm: bool = False,
    test_sections: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    n_jobs: int = 1,
    tissue_tiles: int = TISSUE_TILES,
    local_unconditional: bool = RECIPE.local_unconditional,
    n_comps: int = RECIPE.n_comps,
    alpha_cv: str = "loo",
    lora_rank: int = RECIPE.lora_rank,
    grids: bool = False,
) -> pd.DataFrame:
    """Run the data-limited prediction benchmark and write its tables and figure.

    Leave-one-section-out over ``sections``: each fold trains on the other sections, of which a fraction
    ``f`` of each section's spots is paired (chosen with ``seed``), and scores the held-out section. The
    gene panel (top ``n_top_genes`` genes by variance), normalisation and every fitted quantity come from the
    paired training spots only (``c2l_oracle``'s adapter excepted, by design). Conditions:

    - ``handcrafted``: handcrafted features + ridge (the floor);
    - ``real``: c2lst's predictor (``encoder`` features + ridge; learned features are concatenated with the
      handcrafted ones) on the real pairs;
    - ``augment``: + ``n_augment`` flip/rot90/stain-jitter copies of each pair (``Predictor.fit(n_augment=)``,
      weight ``augment_weight``);
    - ``c2l``: + ``n_per_profile`` tiles per spot generated by the central model adapted on the pairs,
      conditioned on spatial-mixup profiles (``tl.adapt`` + ``tl.generate(source="mixup")``);
    - ``c2l_augment``: ``c2l``'s tiles and ``augment``'s copies together, each set at its own weight and
      standardised on its own (``tl.predict(n_augment=...)`` with a synthetic table);
    - ``c2l_oracle``: ``c2l`` whose adapter trains on every spot of the training sections, the unpaired ones'
      expression included (:func:`~c2lst.benchmark._fold.every_spot`; the fold's panel, never the held-out
      section), and generates for the same paired spots' profiles; the predictor sees the paired spots only. Not a
      method (a lab has no expression for its unpaired spots) but a bound: what the synthetic rows add when the
      generator knows more of the expression-morphology relation than the paired spots teach it (at the same
      adaptation steps, so each spot is seen fewer times);
    - ``local_only``: the same with a model of the same architecture pretrained from random initialisation on
      the training sections' patches only (``local_steps`` steps), then adapted;
    - ``mixup``: + ``n_per_profile`` feature-space mixup rows per spot (mixed features, mixed expression; no
      generated image);
    - ``spatial_mixup``: + the ``c2l`` condition's spatial-mixup profiles paired with their source spot's own
      real patch (the generator's ablation: same extra expression rows, no generated image).
    - ``c2l_tissue``: ``c2l`` whose local stage also trains on ``tissue_tiles`` unlabelled tissue tiles of the
      training sections' images (``tl.adapt(tissue=...)``: unconditional samples of the local component, local
      decoder); the held-out section's image is never tiled for training;
    - ``local_only_tissue``: ``local_only`` given the same tissue tiles, in its pretraining (with the training
      sections' patches) and its adaptation: against ``c2l_tissue`` it isolates central pretraining;
    - ``refined_tissue``: the central model refined for the same ``local_steps`` steps on the same patches and
      tissue tiles (``tl.pretrain(init=central)``: its autoencoder kept, its UNet trained), then adapted like
      ``c2l_tissue``: against ``local_only_tissue`` it isolates the central initialisation at an equal local
      training budget, against ``c2l_tissue`` the refinement;
    - ``real_central``, ``real_adapted``, ``real_adapted_only``: the real pairs read through a diffusion model's
      features (``tl.predict(encoder="central", central=...)``, whatever ``encoder`` is): the central model's or
      the fold's adapted model's (``LocalModel.features``: the ``c2l`` condition's adapter, or when ``c2l`` is not
      run the same modulation adapted once per fold without the local decoder, which features do not read), with
      the handcrafted features appended, or the adapted model's alone.

    The generation settings default to :data:`c2lst.core.recipe.RECIPE`, the recipe of :func:`c2lst.tl.run`; the
    diffusion conditions call :func:`c2lst.tl.adapt` and :func:`c2lst.tl.generate` on a ``SpatialData`` of the
    fold (:func:`~c2lst.benchmark.fold_sdata`: the paired spots, then the held-out section;
    :func:`~c2lst.benchmark.diffusion_pairs`), the local-only and refined models are :func:`c2lst.tl.pretrain`'s,
    and every condition but ``mixup`` (which :func:`c2lst.tl.predict` does not offer) fits with :func:`c2lst.tl.predict` and is
    scored with :func:`c2lst.tl.evaluate` on the held-out section.

    Parameters
    ----------
    sections
        her2st section names.
    root
        Folder holding one sub-folder per section (default ``$C2LST_DATA_DIR``, else ``../shared/data/her2st``).
    fractions, seeds
        Paired fractions and seeds. A training section pairs ``round(f * n)`` of its ``n`` spots, at least two:
        a smaller fraction is refused before any fold runs.
    conditions
        Subset of :data:`CONDITIONS`.
    quick
        Smoke test: first two sections, one fold, ``f=0.5``, seed 0, a tiny central model pretrained for a
        handful of steps (numbers meaningless; only the code path is exercised).
    out_dir
        Where ``results.csv``, ``synthetic.csv``, ``summary.md``, ``meta.json``, ``pcc_vs_fraction.png`` (and the
        ``grids``) are written.
    central
        Central model (``CentralModel`` or checkpoint directory); ``None``: the bundled default.
    encoder
        Predictor features of the non-floor conditions: ``"handcrafted"`` (default: the same predictor as the
        floor, so conditions differ only in their training pairs), ``"central"`` (central-model features +
        handcrafted) or ``"cnn"`` (trained end-to-end).
    n_top_genes
        Gene-panel size (``n_top`` is its deprecated old name).
    n_per_profile, n_augment
        Extra rows per paired spot of the generative/mixup and augmentation conditions.
    augment_weight
        Ridge sample weight of the augmented copies of ``augment`` and ``c2l_augment`` (real rows weigh 1).
    adapt_steps
        Adaptation steps (default 300, the measured setting of ``benchmarks/README.md``; ``None``: the central
        configuration's).
    decoder_steps
        Local decoder fine-tuning steps of the diffusion conditions (0: decode with the pretrained decoder).
    local_steps
        Pretraining steps of the local-only model (and refinement steps of ``refined_tissue``).
    sample_steps, sampler, guidance_scale, guidance_reference
        Denoising steps, sampler, classifier-free guidance of generation and its reference branch
        (``tl.generate(guidance_reference=)``); rows of the diffusion conditions carry ``generate_steps``,
        ``sampler``, ``guidance_scale`` and ``guidance_reference``; rows that adapt a model carry ``adapt_steps``.
    strength
        Share of the denoising path run for each synthetic tile; below 1 a tile starts from its source spot's
        patch (image-to-image), 1 from pure noise. Default 0.8, the recipe's.
    synthetic_weight
        Ridge sample weight of the generated rows of ``c2l``, ``c2l_augment`` and ``local_only`` (real rows weigh
        1), or ``"cv"``: chosen among 0, 0.25, 0.5 and 1 by leave-one-training-section-out CV on the paired spots
        (``Predictor.fit(extra_weight="cv")``; the test section is never used; not with ``c2l_augment``, whose
        augmented copies have a fixed weight). Default: ``tl.predict``'s (0.25).
    synthetic_align
        ``"moments"`` (default, as ``tl.predict``): standardise the generated rows' features on their own moments
        (``Predictor.fit(extra_align=)``), removing the generator's global feature shift; ``None``: not.
    group_norm
        Predictor of the non-floor conditions with ``Predictor(group_norm=True)``: each section's features
        standardised on its own patches (the held-out section's on its own, images only), targets centred per
        training section, extra rows per source section (``tl.predict(batch_key=...)``). Not with
        ``encoder="cnn"``.
    test_sections
        Only run the folds holding out these sections (default: all).
    cache_dir
        Cache of the section arrays (default ``out_dir/cache``).
    n_jobs
        Worker processes for handcrafted features.
    tissue_tiles
        Tissue tiles per fold of ``c2l_tissue``, ``local_only_tissue`` and ``refined_tissue``: a seeded draw (the
        fold's seed) from the tissue tiles of the training sections' images (:func:`c2lst.pp.tissue_tiles`, cached
        with the sections).
    local_unconditional
        Adapt every diffusion condition with the modulation's unconditional local component
        (``tl.adapt(local_unconditional=True)``; the recipe's ``local_unconditional``).
    n_comps
        Principal components of the panel the diffusion conditions' gene encoder reads (``tl.adapt(n_comps=)``).
    alpha_cv
        Ridge penalties of the non-floor predictors: ``"loo"`` (leave-one-out, ``tl.predict``'s default) or
        ``"groups"`` (leave one training section out, ``tl.predict(alpha_cv="groups")``); rows carry it as
        ``alpha_cv``.
    lora_rank
        Rank of LoRA adapters on a copy of the central UNet in the diffusion conditions' adaptation
        (``tl.adapt(lora_rank=)``; needs peft; 0: modulation only); rows carry it as ``lora_rank``.
    grids
        Also write ``grids/<label>_<section>_f<fraction>_s<seed>.png`` for each generator of each fold, ``<label>``
        as the results page names its rows (e.g. ``c2l_tissue+lora32``): the paired spots' patches beside the
        tiles generated for their profiles (:func:`c2lst.pl.synthetic_grid`, rows = three expression clusters of
        the paired spots), the tiles the fold's ``synthetic.csv`` row scores.

    Returns
    -------
    One row per (condition, held-out section, fraction, seed): ``pcc`` (mean Pearson over the panel =
    top-``n_top_genes`` HVGs of the training spots), ``n_train``, ``n_extra`` (extra rows, augmented copies included),
    ``n_tissue`` (tissue tiles of the local stage), ``tissue_detector`` (the version of the tissue detector that
    cut them, ``io._histology.TISSUE_DETECTOR``; 0 without),
    ``extra_weight`` (the weight of the generated or mixup rows, chosen by CV for ``synthetic_weight="cv"``;
    ``augment``: the copies' weight) and per-stage ``t_*_s`` / ``mem_*_mb``. Also writes the files listed under
    ``out_dir``.
    """
    from .. import tl
    from ._report import write_grid, write_outputs
    from ._results import labelled

    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {CONDITIONS}.")
    if not conditions:
        raise ValueError("no condition to run; pass at least one of " + ", ".join(CONDITIONS) + ".")
    if encoder not in ("handcrafted", "central", "cnn"):
        raise ValueError(f"`encoder` must be 'handcrafted', 'central' or 'cnn', got {encoder!r}.")
    check_extra_options(synthetic_weight, synthetic_align, cv_possible=encoder != "cnn",
                        names=("synthetic_weight", "synthetic_align"))
    if synthetic_weight == "cv" and "c2l_augment" in conditions:
        raise ValueError("synthetic_weight='cv' cannot be combined with the c2l_augment condition (its augmented "
                         "copies have a fixed weight); pass a fixed synthetic_weight or leave out c2l_augment.")
    if group_norm and encoder == "cnn":
        raise ValueError("group_norm needs a frozen encoder; use encoder='handcrafted' or 'central'.")
    if alpha_cv not in ("loo", "groups"):
        raise ValueError(f"`alpha_cv` must be 'loo' or 'groups', got {alpha_cv!r}.")
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be in (0, 1], got {list(fractions)}.")
    if len(sections) < 2:
        raise ValueError("leave-one-section-out needs at least two sections.")
    if not (isinstance(tissue_tiles, int | np.integer) and tissue_tiles >= 1):
        raise ValueError(f"`tissue_tiles` must be a positive integer, got {tissue_tiles!r}.")
    out = Path(out_dir)
    check_output(out, overwrite=True, what="`out_dir`", allow_existing=True)  # never a folder of user files
    if quick:
        sections, fractions, seeds = tuple(sections[:2]), (0.5,), (0,)
        test_sections = test_sections or (sections[0],)
        tissue_tiles = min(tissue_tiles, QUICK_TISSUE_TILES)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    meter_data = StageMeter()
    with meter_data.stage("data"):
        data = load_sections(tuple(sections), root=root, cache_dir=cache,
                             tissue=any(c in TISSUE_CONDITIONS for c in conditions))
    logg.info(f"benchmark: {len(data)} sections, {len(data[0].genes)} common genes, data {meter_data.seconds['data']:.1f}s")
    held_out = [s.name for s in data if test_sections is None or s.name in test_sections]
    for section in data:  # refuse a fraction too small for a section before any work, not in its fold hours later
        if any(name != section.name for name in held_out):  # it trains in some fold
            for fraction in fractions:
                n_paired(section, fraction)

    needs_central = ((encoder == "central" and any(c != "handcrafted" for c in conditions))
                     or any(c in DIFFUSION or c in FEATURE_CONDITIONS for c in conditions))
    if needs_central:
        the_central = (_quick_central(np.concatenate([s.patches for s in data[1:]]), 0) if quick and central is None
                       else _resolve_central(central))
    else:
        the_central = None
    recipe = RecipeConfig(n_top_genes=n_top_genes, adapt_steps=adapt_steps or RECIPE.adapt_steps, decoder_steps=decoder_steps,
                          n_per_profile=n_per_profile, generate_steps=sample_steps, sampler=sampler, guidance_scale=guidance_scale,
                          guidance_reference=guidance_reference,
                          strength=strength, synthetic_weight=synthetic_weight, synthetic_align=synthetic_align,
                          local_unconditional=bool(local_unconditional), n_comps=int(n_comps),
                          lora_rank=int(lora_rank))
    if quick:  # a smoke test: a handful of steps, one tile per spot
        recipe = replace(recipe, adapt_steps=4, decoder_steps=4, n_per_profile=1, generate_steps=3)
        adapt_steps = 4
    meta = {"sections": list(sections), "quick": quick, "encoder": encoder, "n_top_genes": n_top_genes,
            "recipe": recipe.to_dict(),
            "decoder_steps": decoder_steps, "augment_weight": augment_weight, "strength": strength, "guidance_scale": guidance_scale,
            "guidance_reference": guidance_reference,
            "synthetic_weight": synthetic_weight, "synthetic_align": synthetic_align, "group_norm": group_norm,
            "fractions": list(fractions), "seeds": list(seeds), "conditions": list(conditions),
            "tissue_tiles": int(tissue_tiles), "local_unconditional": bool(local_unconditional),
            "n_comps": int(n_comps), "alpha_cv": alpha_cv, "lora_rank": int(lora_rank), "grids": bool(grids),
            "data_s": meter_data.seconds["data"], "data_mb": meter_data.peak_mb["data"]}
    hand = CachedFeatures(lambda p: handcrafted_features(p, n_jobs=n_jobs), "handcrafted")
    cent = CachedFeatures(lambda p: the_central.features(p, seed=0), "central") if the_central is not None else None
    rows, syn_rows = [], []
    for test in data:
        if test_sections is not None and test.name not in test_sections:
            continue
        local_models: dict[tuple[int, str], Any] = {}  # (seed, condition) -> its model trained on local tiles
        for fraction in fractions:
            for seed in seeds:
                fold = make_fold(data, test.name, fraction, seed, n_top_genes=n_top_genes)
                patches, y, xy, group = fold.patches, fold.y, fold.xy, fold.group
                sdata = fold_sdata(fold, held_out=True)  # the paired spots + the held-out section, as for a user
                train = sdata.tables["table"].obs["paired"].to_numpy(dtype=bool)
                # generator -> (its synthetic table, source rows, the recipe it was adapted and sampled with)
                tiles: dict[str, tuple[str, np.ndarray, RecipeConfig]] = {}
                adapted: dict[str, Any] = {}  # generator -> its LocalModel (c2l's is read by the real_adapted rows)
                # the training sections' tissue tiles only (never the held-out section's), the same for every fraction
                tissue = (fold_tissue(fold, tissue_tiles, seed) if any(c in TISSUE_CONDITIONS for c in conditions)
                          else None)
                for cond in conditions:
                    meter = StageMeter()
                    synthetic, src, row_recipe = None, None, recipe
                    weight, align = synthetic_weight, synthetic_align
                    n_aug = n_augment if cond in ("augment", "c2l_augment") else 0
                    if cond == "spatial_mixup":  # the c2l condition's profiles, each with its source's patch
                        extra_y, src, _, _ = spatial_mixup(y, xy, group, n_per_profile=n_per_profile,
                                                           n_neighs=recipe.n_neighs,
                                                           mix_range=recipe.mix_range, seed=seed)
                        synthetic = synthetic_table(sdata, "spatial_mixup", src, patches[src], extra_y,
                                                    fold.panel.genes)
                        weight, align = 1.0, None  # the ablation's rows at full weight, unaligned
                    elif cond in DIFFUSION and _GENERATOR[cond] in tiles:  # this fold's tiles, generated once
                        synthetic, src, row_recipe = tiles[_GENERATOR[cond]]
                    elif cond in DIFFUSION:
                        gen_model = the_central
                        with_tissue = cond in TISSUE_CONDITIONS
                        if cond in _LOCAL_MODELS:
                            if (seed, cond) not in local_models:
                                with meter.stage("pretrain_local"):
                                    local_patches = np.concatenate([s.patches for s in fold.train]
                                                                   + ([tissue] if with_tissue else []))
                                    refine = cond == "refined_tissue"
                                    local_models[seed, cond] = (
                                        _quick_central(local_patches, seed + 1, the_central if refine else None)
                                        if quick else _local_central(the_central, local_patches, steps=local_steps,
                                                                     seed=seed, refine=refine))
                            gen_model = local_models[seed, cond]
                        the_recipe = replace(recipe, adapt_steps=adapt_steps or gen_model.config.adapt_steps)
                        synthetic = f"c2lst_synthetic_{_GENERATOR[cond]}"
                        with meter.stage("diffusion"):
                            extra_p, _, src, tms, local = diffusion_pairs(
                                gen_model, fold, recipe=the_recipe, adapt_batch_size=8 if quick else None,
                                batch_size=256 if _cuda() else 64, out_px=PATCH_PX, sdata=sdata, key_added=synthetic,
                                tissue=tissue if with_tissue else None,
                                adapt_on=every_spot(fold) if cond == "c2l_oracle" else None)
                        meter.parts.update({f"{k[:-2]}": v for k, v in tms.items()})
                        tiles[_GENERATOR[cond]] = synthetic, src, the_recipe
                        row_recipe, variant = the_recipe, _variant(cond, the_recipe)
                        if grids:  # named as the results page labels the generator's rows
                            label = labelled(pd.DataFrame([{"condition": _GENERATOR[cond], **variant}]))["condition"].iloc[0]
                            write_grid(out / "grids" / f"{label}_{test.name}_f{fraction:g}_s{seed}.png",
                                       patches, y, fold.panel.genes, sdata.tables[synthetic], seed=seed,
                                       title=f"{label}, held-out {test.name}, f = {fraction:g}, seed {seed}: paired "
                                             "spots' patches (left), tiles generated for their mixup profiles (right)")
                        adapted[_GENERATOR[cond]] = local
                        with meter.stage("synthetic_metrics"):
                            syn_rows.append({"condition": cond, "test_section": test.name, "fraction": fraction,
                                             "seed": seed, **variant,
                                             **_synthetic_metrics(hand, patches, extra_p, test.patches, seed),
                                             **_ceiling(hand, local, test.patches, seed)})
                        with meter.stage("conditioning"):
                            syn_rows[-1] |= _conditioning(sdata, local, train, fold, recipe=the_recipe, seed=seed,
                                                          encoder=encoder, central=the_central,
                                                          group_norm=group_norm, quick=quick, alpha_cv=alpha_cv)
                    norm = group_norm and cond != "handcrafted"
                    enc = "handcrafted" if cond == "handcrafted" else encoder
                    penalty = "loo" if cond == "handcrafted" else alpha_cv
                    feature_model, feature_kw = the_central, {"epochs": 2 if quick else 30} if enc == "cnn" else {}
                    if cond in FEATURE_CONDITIONS:  # real pairs, features of the central or the fold's adapted model
                        source, with_hand = FEATURE_CONDITIONS[cond]
                        if source == "adapted" and "c2l" not in adapted:  # the c2l condition's adapter, or the same
                            with meter.stage("adapt"):  # modulation; the local decoder (trained after it) is not read
                                adapted["c2l"] = adapt_fold(the_central, fold, sdata, recipe=replace(recipe, decoder_steps=0),
                                                            adapt_batch_size=8 if quick else None)
                        enc, feature_kw = "central", {"handcrafted": with_hand}
                        feature_model = adapted["c2l"] if source == "adapted" else the_central
                    with meter.stage("fit"):
                        if cond == "mixup":  # feature-space mixup has no tl counterpart: the predictor itself
                            model = _mixup_predictor(enc, hand, cent, seed, norm, quick, penalty)
                            model.fit(patches, y, n_mixup=n_per_profile * len(patches),
                                      groups=group if norm or penalty == "groups" else None)
                            pred = model.predict(test.patches)
                            r = pearson_per_gene(fold.truth(), pred)
                        else:
                            model = tl.predict(
                                sdata, train_mask=train, synthetic=synthetic, encoder=enc, central=feature_model,
                                panel=fold.panel, table_key="table", synthetic_weight=weight, synthetic_align=align,
                                n_augment=n_aug, augment_weight=augment_weight,
                                batch_key="library_id" if norm else None,
                                groupby=("library_id" if (synthetic and isinstance(weight, str) or penalty == "groups")
                                         and not norm else None), alpha_cv=penalty,
                                seed=seed, outside_panel="nan",  # scored on the panel: no imputation
                                overwrite=True, **feature_kw)
                    if cond != "mixup":
                        with meter.stage("evaluate"):
                            ev = tl.evaluate(sdata, train_mask=train, table_key="table", overwrite=True)
                        r = ev.loc[ev["section"] == test.name, "pearson"].to_numpy()
                    n_syn = 0 if synthetic is None else sdata.tables[synthetic].n_obs
                    rows.append({"condition": cond, "test_section": test.name, "fraction": fraction, "seed": seed,
                                 "n_train": len(patches), "n_extra": n_syn + model.fit_info.get("n_augmented", 0),
                                 "n_mixup": n_per_profile * len(patches) if cond == "mixup" else 0,
                                 "n_tissue": len(tissue) if cond in TISSUE_CONDITIONS else 0,
                                 **_variant(cond, row_recipe), "alpha_cv": penalty,
                                 "n_test": len(test.patches),
                                 "extra_weight": (model.fit_info["extra_weight"] if n_syn  # else augment's
                                                  else model.fit_info["augment_weight"] if n_aug else float("nan")),
                                 "pcc": finite_mean(r),
                                 "n_genes": int(np.isfinite(r).sum()), **meter.row()})
                    logg.info(f"    {cond:<11s} test {test.name} f={fraction:<4} seed {seed}: PCC {rows[-1]['pcc']:.3f} "
                              f"({meter.total:.1f}s)")
                write_outputs(pd.DataFrame(rows), pd.DataFrame(syn_rows), out, meta=meta)  # partial results survive
    if not rows:
        raise ValueError(f"no fold was run: `test_sections` {list(test_sections or [])} not among {list(sections)}.")
    return pd.DataFrame(rows)


def _mixup_predictor(encoder: str, hand: CachedFeatures, cent: CachedFeatures | None, seed: int, group_norm: bool,
                     quick: bool, alpha_cv: str) -> Predictor:
    """Build the ``mixup`` condition's predictor (``Predictor.fit(n_mixup=)``) with the encoder ``tl.predict`` uses."""
    if encoder == "handcrafted":
        return Predictor(encoder=hand, handcrafted=False, seed=seed, group_norm=group_norm, alpha_cv=alpha_cv)
    if encoder == "central":
        return Predictor(encoder=cent, handcrafted=hand, seed=seed, group_norm=group_norm, alpha_cv=alpha_cv)
    return Predictor(encoder="cnn", handcrafted=False, seed=seed, epochs=2 if quick else 30, alpha_cv=alpha_cv)


def _synthetic_metrics(hand: CachedFeatures, train_patches: np.ndarray, synthetic: np.ndarray, heldout: np.ndarray,
                       seed: int) -> dict[str, float]:
    return synthetic_report(hand(train_patches), hand(synthetic), train_patches, synthetic, hand(heldout), seed=seed)


def _conditioning(sdata: Any, local: Any, train: np.ndarray, fold: Any, *, recipe: RecipeConfig, seed: int,
                  encoder: str, central: Any, group_norm: bool, quick: bool, alpha_cv: str = "loo") -> dict[str, float]:
    """``cond_*`` columns: :func:`c2lst.tl.evaluate_conditioning` on the held-out section's spots.

    The predictor reading the generated patches is the fold's ``real`` condition's (real pairs only).
    """
    from .. import tl

    real = tl.predict(sdata, train_mask=train, synthetic=None, encoder=encoder, central=central, panel=fold.panel,
                      table_key="table", batch_key="library_id" if group_norm else None, seed=seed,
                      groupby="library_id" if alpha_cv == "groups" and not group_norm else None, alpha_cv=alpha_cv,
                      outside_panel="nan", overwrite=True, **({"epochs": 2 if quick else 30} if encoder == "cnn" else {}))
    scores = tl.evaluate_conditioning(sdata, local, predictor=real, n_draws=2 if quick else 8,
                                      steps=recipe.generate_steps, sampler=recipe.sampler, guidance_scale=recipe.guidance_scale,
                                      guidance_reference=recipe.guidance_reference,
                                      strength=recipe.strength, table_key="table", seed=seed, overwrite=True)
    return {f"cond_{k}": v for k, v in scores.items()}


PRDC_K = 5  # the k of fidelity_floor's and reconstruction_ceiling's PRDC (their default)


def _ceiling(hand: CachedFeatures, local: Any, heldout: np.ndarray, seed: int) -> dict[str, float]:
    """Score the generator's realism ceiling on the held-out section, which it never saw.

    Its autoencoder (with the local decoder) reconstructs one half (B) of the held-out spots' patches, scored
    against the other half (A) as :func:`c2lst.metrics.fidelity_floor` scores B itself: ``*_ceiling`` against
    ``*_heldout_floor``, and ``mae_ceiling``.
    """
    if len(heldout) < 2 * (PRDC_K + 1):  # each half needs PRDC_K + 1 rows
        return {}
    _, b = floor_halves(len(heldout), seed=seed)
    recon = local.reconstruct(heldout[b])
    f_held, f_recon = hand(heldout), hand(recon)
    floor = fidelity_floor(f_held, f_recon, seed=seed)
    out = {f"{k.removesuffix('_floor')}_heldout_floor": v for k, v in floor.items() if k.endswith("_floor")}
    return out | reconstruction_ceiling(f_held, f_recon, heldout[b], recon, seed=seed)
