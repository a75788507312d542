"""Generate synthetic H&E patches from expression profiles with an adapted local model."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._deprecation import renamed_kwargs
from .._docs import doc_params
from .._settings import settings
from .._utils import (
    LIBRARY_KEY,
    SPATIAL_UNS,
    as_mask,
    check_key,
    is_synthetic,
    resolve_table,
    returned,
    section_labels,
    spot_positions,
    writable,
)
from ..core.models import LocalModel
from ..core.recipe import RECIPE, check_guidance_reference, check_mix_range, spatial_mixup, synthesis_seeds
from ..core.runtime import torch_threads
from ..core.sampling import SAMPLERS
from ..pp._panel import GenePanel

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def _source_table(sdata: SpatialData, local: LocalModel, table_key: str | None) -> AnnData:
    """Pick the section table: ``table_key``, else the one adapted on, else the only non-synthetic one."""
    if table_key is None:
        adapted = local.summary.get("table_key")
        real = [k for k, t in sdata.tables.items() if not is_synthetic(t)]
        if adapted in sdata.tables:
            table_key = adapted
        elif len(real) == 1:
            table_key = real[0]
    return resolve_table(sdata, table_key)[1]


def _train_rows(table: AnnData, local: LocalModel) -> np.ndarray:
    names = local.summary.get("train_spots")
    if not names:
        raise ValueError("the local model does not record its training spots; pass expression profiles as `source`.")
    rows = table.obs_names.get_indexer(names)
    if (rows < 0).any():
        missing = [n for n, r in zip(names, rows, strict=True) if r < 0][:5]
        raise ValueError(f"{int((rows < 0).sum())} training spots of the local model are not in this table (e.g. "
                         f"{missing}); generate on the section it was adapted on, or pass profiles as `source`.")
    return rows


def _user_profiles(source: Any, panel: GenePanel) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(source, pd.DataFrame):
        missing = [g for g in panel.genes if g not in source.columns]
        if missing:
            raise ValueError(f"the DataFrame lacks {len(missing)} panel genes (e.g. {missing[:5]}); give one column "
                             "per panel gene (LocalModel.panel['genes']).")
        return source[list(panel.genes)].to_numpy(dtype=np.float32), source.index.astype(str).to_numpy()
    arr = np.asarray(source)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"`source` must be 'spots', 'mixup', a numeric array or a DataFrame; got {type(source).__name__}.")
    if arr.ndim != 2 or arr.shape[1] != len(panel):
        raise ValueError(f"`source` has shape {arr.shape}; expected (n, {len(panel)}) lognorm expression of the panel "
                         "genes in panel order.")
    if not np.isfinite(arr).all():
        raise ValueError("`source` contains NaN or infinite values; fill or drop those profiles.")
    return arr.astype(np.float32), np.array([f"profile-{i}" for i in range(len(arr))])


@renamed_kwargs(n_neighbors="n_neighs")
@doc_params
def generate(
    sdata: SpatialData,
    local: LocalModel,
    *,
    source: str | np.ndarray | pd.DataFrame = "spots",
    spots: Any = None,
    n_per_profile: int = 1,
    n_neighs: int = RECIPE.n_neighs,
    mix_range: tuple[float, float] = RECIPE.mix_range,
    library_key: str | None = LIBRARY_KEY,
    sampler: str = RECIPE.sampler,
    steps: int = RECIPE.generate_steps,
    guidance_scale: float = RECIPE.guidance_scale,
    guidance_reference: str = RECIPE.guidance_reference,
    strength: float | None = None,
    seed: int = 0,
    batch_size: int = 64,
    table_key: str | None = None,
    key_added: str = "c2lst_synthetic",
    overwrite: bool = False,
    copy: bool = False,
) -> SpatialData | None:
    """Generate synthetic H&E patches conditioned on expression profiles.

    Parameters
    ----------
    {sdata}
        It holds the section the local model was adapted on (its table gives the training spots' expression
        for ``"spots"``/``"mixup"``), or the spots given as ``spots``.
    local
        The adapted :class:`~c2lst.core.LocalModel`.
    source
        ``"spots"``: the training spots' own profiles; ``"mixup"``: per training spot, convex mixtures
        ``w * x_i + (1 - w) * x_j`` (``w ~ U(*mix_range)``, seeded) with one of its ``n_neighs`` spatial
        nearest training spots of the same section (:func:`c2lst.core.recipe.spatial_mixup`); or user
        log-normalised profiles, an ``(n, n_genes)`` array in panel order or a DataFrame with the panel genes
        as columns.
    spots
        Boolean mask over the table's spots: the spots ``"spots"``/``"mixup"`` take their profiles (and, with
        ``strength`` < 1, their patches) from, in place of the training spots, e.g. measured spots the model was
        not adapted on; ``"mixup"`` partners come from them too. ``None``: the spots the local model was adapted
        on. Not with user profiles. ``params["train_spots"]`` still records the adapter's spots, the reference of
        :func:`c2lst.tl.evaluate_synthetic` (pass it ``train_mask`` to score against the given spots instead).
    n_per_profile
        Patches per profile (each with its own seed).
    n_neighs
        Neighbourhood size for ``"mixup"`` (``obsm["spatial"]``, else circle centres, else array positions;
        squidpy's name, ``n_neighbors`` is its deprecated old name).
    mix_range
        ``(low, high)`` range of the source spot's weight ``w`` for ``"mixup"`` (default ``(0.5, 1)``, the
        measured recipe, :data:`c2lst.core.recipe.RECIPE`).
    {library_key}
        ``"mixup"`` partners come from the source spot's own section.
    sampler
        ``"dpmsolver++"``, ``"ddim"`` or ``"ddpm"`` (default: the recipe's).
    steps
        Denoising steps.
    guidance_scale
        Classifier-free guidance (1 = conditional only, 0 = the reference branch alone: by default the unconditional
        one, the local-unconditional model of an adapter with the unconditional local component, which
        :func:`c2lst.tl.adapt` adds by default (the recipe's ``local_unconditional``) and always with ``tissue``; the
        central model for an adapter without it).
    guidance_reference
        What guidance contrasts the profile with: ``"unconditional"`` (above) or ``"mean"``, the mean training
        profile, so that guidance above 1 amplifies only what sets a profile apart from the average spot
        (:meth:`~c2lst.core.LocalModel.generate`). Default: the recipe's.
    strength
        Share of the denoising path run, in ``(0, 1]``. 1 samples each patch from pure noise;
        below 1 each patch starts from its source spot's own patch (``"spots"``/``"mixup"`` only), noised to
        that point of the schedule and denoised under the new profile (image-to-image, SDEdit): the patch
        keeps the source's layout and takes the profile's morphology. Default: the recipe's 0.8 for
        ``"spots"``/``"mixup"``, 1 for user profiles.
    {seed}
        Patch ``i`` is sampled from ``torch.Generator().manual_seed(obs["seed"][i])``, derived from
        ``(seed, i)`` (:func:`c2lst.core.recipe.synthesis_seeds`); mixup partners and weights are seeded too.
    batch_size
        Patches per sampling batch.
    table_key
        Table holding the section's spots. Default: the table the model was adapted on (by name), else
        the only table not written by :func:`generate`.
    {key_added_overwrite_copy}

    Returns
    -------
    ``None`` (the copy with ``copy=True``); adds the table ``sdata.tables[key_added]`` (one row per synthetic
    patch):

    - ``X``: the conditioning log-normalised expression of the panel genes (``var_names`` = panel genes,
      in panel order);
    - ``obsm["c2lst_patch"]``: uint8 ``(n, 3, tile_px, tile_px)`` patches;
    - ``obs``: ``source_spot``, ``partner_spot`` (mixup, else empty), ``mix_weight`` (1 without mixup),
      ``seed``, ``profile_index``;
    - ``uns[key_added]["params"]``: the arguments, central/panel identities and ``train_spots``, the spots
      the local model was adapted on (the reference set of :func:`c2lst.tl.evaluate_synthetic`'s
      memorisation audit);
    - ``uns["c2lst"]["synthetic"] = True`` (marks generated tables).
    """
    from anndata import AnnData
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        raise ValueError(f"generate writes a new table into a SpatialData object; got {type(sdata).__name__}.")
    if not isinstance(local, LocalModel):
        raise ValueError(f"`local` must be a LocalModel (c2lst.tl.adapt), got {type(local).__name__}.")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
    for name, value, low in (("n_per_profile", n_per_profile, 1), ("n_neighs", n_neighs, 1), ("steps", steps, 1),
                             ("batch_size", batch_size, 1)):
        if not isinstance(value, int | np.integer) or value < low:
            raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}.")
    if not guidance_scale >= 0:
        raise ValueError(f"`guidance_scale` must be >= 0, got {guidance_scale}.")
    check_guidance_reference(guidance_reference)
    if strength is None:
        strength = RECIPE.strength if isinstance(source, str) else 1.0
    if not 0 < strength <= 1:
        raise ValueError(f"`strength` must be in (0, 1] (1: from pure noise), got {strength}.")
    if spots is not None and not isinstance(source, str):
        raise ValueError("`spots` picks the source spots of source='spots' or 'mixup'; user profiles name their own "
                         "sources: drop `spots`, or pass those spots' profiles as the array.")
    if strength < 1 and not isinstance(source, str):
        raise ValueError("`strength` < 1 starts each patch from its source spot's patch: use source='spots' or "
                         "'mixup', or strength=1 for user profiles.")
    mix_range = check_mix_range(mix_range)
    sdata = writable(sdata, copy)
    check_key(sdata.tables, key_added, where="sdata.tables", overwrite=overwrite)
    versus = "" if guidance_reference == "unconditional" else f" against the {guidance_reference} profile"
    start = logg.info(f"generating synthetic patches ({sampler}, {steps} steps, guidance {guidance_scale:g}{versus})")
    panel = GenePanel.from_dict(local.panel)
    sections_of = ""  # the obs column mixup partners share (recorded)
    if isinstance(source, str):
        if source not in ("spots", "mixup"):
            raise ValueError(f"`source` must be 'spots', 'mixup', an array or a DataFrame; got {source!r}.")
        table = _source_table(sdata, local, table_key)
        rows = _train_rows(table, local) if spots is None else np.flatnonzero(as_mask(spots, table.n_obs, name="spots"))
        expr = panel.expression(table)[rows]
        names = table.obs_names[rows].to_numpy().astype(str)
        if source == "spots":
            profiles = np.repeat(expr, n_per_profile, axis=0)
            obs = pd.DataFrame({"source_spot": np.repeat(names, n_per_profile), "partner_spot": "", "mix_weight": 1.0})
        else:
            xy = spot_positions(table, sdata)
            if xy is None:
                raise ValueError("mixup needs spot positions: table.obsm['spatial'], spot circles annotated by the "
                                 "table, or obs['array_row'/'array_col'].")
            sections = section_labels(table, library_key)
            sections_of = library_key if library_key is not None and library_key in table.obs else ""
            profiles, src, partner, w = spatial_mixup(expr, xy[rows], sections[rows], n_per_profile=n_per_profile,
                                                      n_neighs=n_neighs, mix_range=mix_range, seed=seed)
            obs = pd.DataFrame({"source_spot": names[src], "partner_spot": names[partner], "mix_weight": w})
    else:
        user, names = _user_profiles(source, panel)
        profiles = np.repeat(user, n_per_profile, axis=0)
        obs = pd.DataFrame({"source_spot": np.repeat(names, n_per_profile), "partner_spot": "", "mix_weight": 1.0})
    init_tiles = None
    if strength < 1:
        patch_key = local.summary.get("patch_key", "c2lst_patch")
        if patch_key not in table.obsm:
            raise ValueError(f"`strength` < 1 needs the spot patches in .obsm[{patch_key!r}]; run "
                             "c2lst.pp.extract_patches(sdata) first.")
        init_tiles = np.asarray(table.obsm[patch_key])[table.obs_names.get_indexer(obs["source_spot"])]
    n = len(profiles)
    obs["seed"] = synthesis_seeds(seed, n)
    obs["profile_index"] = np.repeat(np.arange(n // n_per_profile), n_per_profile)
    obs.index = [f"synthetic-{i}" for i in range(n)]
    with torch_threads(settings.n_threads):
        patches = local.generate(panel.standardize(profiles), seeds=obs["seed"].tolist(), sampler=sampler,
                                 steps=steps, guidance_scale=float(guidance_scale),
                                 guidance_reference=guidance_reference, batch_size=batch_size,
                                 init_tiles=init_tiles, strength=float(strength), progress=settings.progress_bar)
    adata = AnnData(X=profiles, obs=obs, var=pd.DataFrame(index=list(panel.genes)))
    adata.obsm["c2lst_patch"] = patches
    adata.uns[key_added] = {"params": {
        "source": source if isinstance(source, str) else type(source).__name__, "n_per_profile": int(n_per_profile),
        "spots": "given" if spots is not None else "train_spots",
        "n_neighs": int(n_neighs), "mix_range": [float(v) for v in mix_range],
        "library_key": sections_of,
        "sampler": sampler, "steps": int(steps),
        "guidance_scale": float(guidance_scale), "guidance_reference": guidance_reference,
        "strength": float(strength), "seed": int(seed), "batch_size": int(batch_size),
        "central_weights_sha256": local.central.weights_sha256, "central_config": local.central.config.name,
        "panel_identity": panel.identity(), "tile_px": local.central.tile_px, "mpp": local.central.config.mpp,
    }}
    if local.summary.get("train_spots"):  # the spots the adapter saw: evaluate_synthetic's reference set
        adata.uns[key_added]["params"]["train_spots"] = [str(s) for s in local.summary["train_spots"]]
    adata.uns[SPATIAL_UNS] = {"synthetic": True}  # what is_synthetic reads
    sdata.tables[key_added] = adata
    logg.info(f"    added table {key_added!r}: {n} patches {patches.shape[1:]} (.obsm['c2lst_patch'])", time=start)
    return returned(sdata, None, copy)
