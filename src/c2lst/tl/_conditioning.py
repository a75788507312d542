"""Measure whether an adapted model uses the expression profile, on spots it was not adapted on."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _logging as logg
from .._docs import doc_params
from .._settings import settings
from .._utils import LIBRARY_KEY, as_mask, check_key, returned, section_labels, writable
from ..core.conditioning import denoising_errors
from ..core.images import resize_tiles
from ..core.models import LocalModel
from ..core.recipe import RECIPE, check_guidance_reference, synthesis_seeds
from ..core.runtime import torch_threads
from ..core.seeding import derive_seed
from ..metrics import conditioning_scores, pearson_per_gene, profile_response
from ..metrics._regression import finite_mean
from ..pp._panel import GenePanel
from ._generate import _source_table

if TYPE_CHECKING:
    from spatialdata import SpatialData

MIN_SECTION_SPOTS = 2  # a spot's partner comes from its own section


def partner_spots(sections: np.ndarray, *, seed: int) -> np.ndarray:
    """Give each spot a partner from its own section, never itself: a seeded cyclic shift of a random order.

    Parameters
    ----------
    sections
        ``(n,)`` section of each spot; every section needs at least two spots.
    seed
        Seed of the order.

    Returns
    -------
    ``(n,)`` index of each spot's partner.
    """
    sections = np.asarray(sections).astype(str)
    rng = np.random.default_rng(derive_seed(seed, "partners"))
    partner = np.empty(len(sections), dtype=np.int64)
    for name in np.unique(sections):
        rows = np.flatnonzero(sections == name)
        if len(rows) < MIN_SECTION_SPOTS:
            raise ValueError(f"section {name!r} has {len(rows)} spot to score; a spot's partner comes from its own "
                             "section, so give each section at least two spots (or pass library_key=None).")
        order = rows[rng.permutation(len(rows))]
        partner[order] = np.roll(order, -1)
    return partner


def _default_spots(table: Any, local: LocalModel) -> np.ndarray:
    trained = local.summary.get("train_spots")
    if not trained:
        raise ValueError("the local model does not record its training spots; pass `spots`, a boolean mask of spots it "
                         "was not adapted on.")
    mask = ~np.asarray(table.obs_names.isin([str(s) for s in trained]))
    if not mask.any():
        raise ValueError("every spot of the table was used to adapt the model, so none measures generalisation; add a "
                         "held-out section's spots to the table or pass `spots` explicitly.")
    return mask


@doc_params
def evaluate_conditioning(
    sdata: SpatialData,
    local: LocalModel,
    *,
    spots: Any = None,
    predictor: Any = None,
    n_draws: int = 8,
    steps: int = RECIPE.generate_steps,
    sampler: str = RECIPE.sampler,
    guidance_scale: float = RECIPE.guidance_scale,
    guidance_reference: str = RECIPE.guidance_reference,
    strength: float = RECIPE.strength,
    library_key: str | None = LIBRARY_KEY,
    table_key: str | None = None,
    patch_key: str = "c2lst_patch",
    seed: int = 0,
    batch_size: int = 64,
    key_added: str = "c2lst_conditioning",
    overwrite: bool = False,
    copy: bool = False,
) -> dict[str, float] | tuple[SpatialData, dict[str, float]]:
    """Measure how much an adapted model's patches depend on the expression profile they are generated for.

    Each scored spot is contrasted with a partner spot of its own section (a seeded derangement), so that what
    is measured is the spot's own profile, not the section's average one.

    1. Denoising (:func:`c2lst.core.conditioning.denoising_errors`): the spot's real patch is noised at
       ``n_draws`` timesteps spread evenly over the schedule and denoised given its own profile, its partner's and
       none.
       ``profile_share`` is the part of the conditioning's gain that is specific to the own profile.
    2. With ``predictor``: for each spot two patches are generated with the same seed (from the spot's own patch
       when ``strength < 1``, as :func:`c2lst.tl.generate` does), one for its own profile and one for its
       partner's. ``delta_r`` is how well the predictor's reading of the difference between the two follows
       the difference between the two profiles (:func:`c2lst.metrics.profile_response`). ``delta_r_real`` is
       the same score on the two spots' real patches: how well a real difference of morphology carries the
       profile difference to this predictor, the reference for ``delta_r`` (a generator whose tiles follow the
       profile as the real patches do scores about ``delta_r_real``); ``delta_slope`` / ``delta_slope_real`` are how
       far the reading moves per unit of profile change, on the generated / the real patches. ``r_generated`` is
       the predictor's per-gene Pearson on the own-profile patches against the own profiles, next to ``r_real``
       on the spots' real patches.

    Parameters
    ----------
    {sdata}
        It holds the spots to score: their patches in ``.obsm[patch_key]`` and their counts.
    local
        The adapted :class:`~c2lst.core.LocalModel` (:func:`c2lst.tl.adapt`).
    spots
        Boolean mask of the spots to score, one per spot of the table. ``None``: every spot the model was not
        adapted on (its recorded training spots are excluded), e.g. a held-out section.
    predictor
        A fitted :class:`~c2lst.core.predictor.Predictor` (the return of :func:`c2lst.tl.predict`, trained on
        real pairs) for ``delta_r``; ``None``: the denoising scores only.
    n_draws
        Timesteps (noise draws) per spot for the denoising scores.
    steps, sampler, guidance_scale, guidance_reference, strength
        Generation settings of the ``delta_r`` patches (defaults: the recipe's, :data:`c2lst.core.recipe.RECIPE`).
    {library_key}
        A partner comes from the spot's own section.
    {table_key}
    {patch_key}
    {seed}
        It seeds the partners, the noise and the generated patches.
    batch_size
        Patches per forward pass.
    {key_added_overwrite_copy}

    Returns
    -------
    Dict of scores (``(copy, scores)`` with ``copy=True``):
    :func:`c2lst.metrics.conditioning_scores` (``loss_own``, ``loss_partner``, ``loss_unconditional``,
    ``conditioning_gain``, ``profile_gain``, ``profile_share``, ``own_wins``, ``n``) and, with ``predictor``,
    ``delta_r``, ``delta_r_pooled``, ``delta_slope``, ``delta_r_real``, ``delta_slope_real``, ``n_genes``,
    ``r_generated``, ``r_real``. Also written to the table's
    ``.uns[key_added]`` as ``{{"scores": ..., "params": ...}}`` (params: the arguments, the scored spots and
    their partners).
    """
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        raise ValueError(f"evaluate_conditioning reads spots from a SpatialData object; got {type(sdata).__name__}.")
    if not isinstance(local, LocalModel):
        raise ValueError(f"`local` must be a LocalModel (c2lst.tl.adapt), got {type(local).__name__}.")
    if predictor is not None and not callable(getattr(predictor, "predict", None)):
        raise ValueError(f"`predictor` must be a fitted Predictor (the return of c2lst.tl.predict), got "
                         f"{type(predictor).__name__}.")
    if not 0 < strength <= 1:
        raise ValueError(f"`strength` must be in (0, 1] (1: from pure noise), got {strength}.")
    if not guidance_scale >= 0:
        raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
    check_guidance_reference(guidance_reference)
    sdata = writable(sdata, copy)
    table = _source_table(sdata, local, table_key)
    check_key(table.uns, key_added, where="table.uns", overwrite=overwrite)
    if patch_key not in table.obsm:
        raise ValueError(f"the spot table has no .obsm[{patch_key!r}] patches (obsm keys: {list(table.obsm)}); run "
                         "c2lst.pp.extract_patches(sdata) first.")
    mask = _default_spots(table, local) if spots is None else as_mask(spots, table.n_obs, name="spots")
    rows = np.flatnonzero(mask)
    start = logg.info(f"measuring the conditioning of the local model on {len(rows)} spots")
    panel = GenePanel.from_dict(local.panel)
    expr = panel.expression(table)[rows]
    partner = partner_spots(section_labels(table, library_key)[rows], seed=seed)
    patches = np.asarray(table.obsm[patch_key])[rows]
    own_z, partner_z = panel.standardize(expr), panel.standardize(expr[partner])
    with torch_threads(settings.n_threads):
        errors, _ = denoising_errors(local, patches, [own_z, partner_z, None], n_draws=n_draws, seed=seed,
                                     batch_size=batch_size)
        scores = conditioning_scores(*errors.mean(axis=2))
        if predictor is not None:
            scores |= _predicted_response(local, predictor, panel, patches, expr, partner, steps=steps,
                                          sampler=sampler, guidance_scale=guidance_scale,
                                          guidance_reference=guidance_reference, strength=strength, seed=seed,
                                          batch_size=batch_size)
    names = table.obs_names.to_numpy().astype(str)[rows]
    table.uns[key_added] = {"scores": scores, "params": {
        "n_draws": int(n_draws), "steps": int(steps), "sampler": sampler, "guidance_scale": float(guidance_scale),
        "guidance_reference": guidance_reference,
        "strength": float(strength), "library_key": library_key or "", "patch_key": patch_key, "seed": int(seed),
        "predictor": predictor is not None, "spots": names.tolist(), "partners": names[partner].tolist()}}
    delta = f", delta_r {scores['delta_r']:.3f}" if "delta_r" in scores else ""
    logg.info(f"    profile share {scores['profile_share']:.3f}, conditioning gain {scores['conditioning_gain']:.4f}"
              f"{delta}; added .uns[{key_added!r}]", time=start)
    return returned(sdata, scores, copy)


def _predicted_response(local: LocalModel, predictor: Any, panel: GenePanel, patches: np.ndarray, expr: np.ndarray,
                        partner: np.ndarray, *, steps: int, sampler: str, guidance_scale: float,
                        guidance_reference: str, strength: float,
                        seed: int, batch_size: int) -> dict[str, float]:
    """Generate own- and partner-profile patches with the same seeds; score the predictor's reading of them."""
    genes = getattr(predictor, "genes", None)
    if not genes:
        raise ValueError("the predictor does not record its genes; fit it with c2lst.tl.predict (or Predictor(genes=...)).")
    common = [g for g in genes if g in set(panel.genes)]
    if len(common) < 2:
        raise ValueError(f"the predictor and the local model share {len(common)} genes; predict the panel genes "
                         "(tl.predict(panel=...)) to compare the two.")
    seeds = synthesis_seeds(seed, len(patches)).tolist()
    init = patches if strength < 1 else None
    tiles = [local.generate(panel.standardize(profile), seeds=seeds, steps=steps, sampler=sampler,
                            guidance_scale=guidance_scale, guidance_reference=guidance_reference,
                            batch_size=batch_size, init_tiles=init, strength=strength)
             for profile in (expr, expr[partner])]
    # the predictor reads patches at the spots' size; both sets are one group (one normalisation under group_norm)
    both = resize_tiles(np.concatenate(tiles), patches.shape[-1])
    read = predictor.predict(both, groups=np.zeros(len(both), dtype=int))
    pcols = [genes.index(g) for g in common]
    ecols = [list(panel.genes).index(g) for g in common]
    on_own, on_partner = read[: len(patches), pcols], read[len(patches):, pcols]
    real = predictor.predict(patches, groups=np.zeros(len(patches), dtype=int))[:, pcols]
    y = expr[:, ecols]
    out = profile_response(on_own - on_partner, y - y[partner])
    on_real = profile_response(real - real[partner], y - y[partner])
    return out | {"delta_r_real": on_real["delta_r"], "delta_slope_real": on_real["delta_slope"],
                  "r_generated": finite_mean(pearson_per_gene(y, on_own)),
                  "r_real": finite_mean(pearson_per_gene(y, real))}
