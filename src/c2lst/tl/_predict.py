"""Train a histology -> expression predictor on the training spots (+ synthetic pairs) and predict every spot."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _logging as logg
from .._deprecation import renamed_kwargs, warn_deprecated
from .._docs import doc_params
from .._utils import as_mask, check_key, is_synthetic, resolve_table, returned, writable
from ..core.predictor import (
    ALPHA_CV,
    ENCODERS,
    RIDGE_ALPHAS,
    SYNTHETIC_ALIGN,
    SYNTHETIC_WEIGHT,
    Predictor,
    check_extra_options,
)
from ..pp import GenePanel, gene_panel
from ..pp._counts import library_sizes, lognorm, raw_counts

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

PANEL_KEY = "c2lst_panel"
SPLIT_TRAIN, SPLIT_HELD_OUT = "train", "held_out"  # categories of obs[f"{key_added}_split"]
OUTSIDE_PANEL = ("impute", "nan")  # what tl.predict writes for genes outside the panel


def resolve_central(central: Any) -> Any:
    """Return a central model from ``central`` (a model, a checkpoint path, or ``None`` for the bundled default)."""
    if central is not None and callable(getattr(central, "features", None)):
        return central
    if central is None:
        from ..datasets import central_default

        return central_default()
    from ..core.models import CentralModel

    path = Path(central)
    if not path.exists():
        raise ValueError(f"central model path {str(path)!r} does not exist; pass a CentralModel or an existing "
                         "checkpoint directory written by c2lst.tl.pretrain.")
    return CentralModel.load(path)


def train_panel(table: AnnData, mask: np.ndarray, panel: GenePanel | None, n_top_genes: int) -> tuple[GenePanel, str]:
    """Return the gene panel to model: ``panel``, else ``uns['c2lst_panel']``, else a new one from training spots only.

    A new panel is computed on a throw-away view of the counts, so nothing is written to ``table``.
    """
    if panel is not None:
        panel.validate(table.var_names)
        return panel, "argument"
    if PANEL_KEY in table.uns:
        stored = GenePanel.from_table(table, PANEL_KEY)
        stored.validate(table.var_names)
        n_train = stored.params.get("n_train")
        if n_train is not None and int(n_train) != int(mask.sum()):
            logg.warning(f"the stored panel .uns[{PANEL_KEY!r}] was chosen on {n_train} spots, not on the "
                         f"{int(mask.sum())} training spots: if it saw test spots, evaluation leaks. Rebuild it with "
                         "c2lst.pp.gene_panel(..., train_mask=train_mask, overwrite=True).")
        return stored, f"uns[{PANEL_KEY!r}]"
    from anndata import AnnData

    scratch = AnnData(X=table.X, obs=table.obs[[]], var=table.var[[]])
    n_top_genes = min(int(n_top_genes), table.n_vars)
    return gene_panel(scratch, n_top_genes=n_top_genes, train_mask=mask, key_added="panel"), "training spots"


SYNTHETIC_TABLE = "c2lst_synthetic"  # the default of `synthetic=`: may be absent (no synthetic pairs yet)


def synthetic_pairs(sdata: SpatialData | None, synthetic: str | None, panel: GenePanel,
                    patch_key: str) -> tuple[np.ndarray | None, np.ndarray | None, int, np.ndarray | None]:
    """Patches, conditioning expression and source spot names of the synthetic table, checked against the panel.

    Only the default name may be absent (no synthetic pairs yet); any other name must be a table of ``sdata``.
    """
    if synthetic is None:
        return None, None, 0, None
    tables = [] if sdata is None else list(sdata.tables.keys())
    if synthetic not in tables:
        if synthetic == SYNTHETIC_TABLE:
            return None, None, 0, None
        raise ValueError(f"no synthetic table {synthetic!r}; available tables: {tables}. Pass the name tl.generate "
                         "wrote (`key_added`), or `synthetic=None` to train on the real spots only.")
    syn = sdata.tables[synthetic]
    if list(map(str, syn.var_names)) != list(panel.genes):
        raise ValueError(f"the synthetic table {synthetic!r} has {syn.n_vars} genes that are not the panel's "
                         f"{len(panel)} genes in order; regenerate it with the same panel (tl.adapt/tl.generate) or "
                         "pass `synthetic=None`.")
    if patch_key not in syn.obsm:
        raise ValueError(f"the synthetic table {synthetic!r} has no .obsm[{patch_key!r}] patches; regenerate it.")
    x = syn.X.toarray() if hasattr(syn.X, "toarray") else np.asarray(syn.X)
    source = syn.obs["source_spot"].astype(str).to_numpy() if "source_spot" in syn.obs else None
    return np.asarray(syn.obsm[patch_key]), np.asarray(x, dtype=np.float32), syn.n_obs, source


def synthetic_groups(table: AnnData, rows: np.ndarray, groupby: str | None, source: np.ndarray | None,
                     n_synthetic: int, *, option: str = "synthetic_weight='cv'",
                     fix: str = "pass a fixed `synthetic_weight` instead") -> dict[str, np.ndarray]:
    """``groups``/``extra_groups`` of ``Predictor.fit`` (``extra_weight="cv"``, ``group_norm``).

    They are ``obs[groupby]`` of the training spots and of each synthetic pair's source spot. ``option`` and
    ``fix`` name the setting that needs them and the way out, in the error messages.
    """
    if groupby is None or groupby not in table.obs:
        raise ValueError(f"{option} chooses the weight by leave-one-group-out on the training spots: pass "
                         "`groupby`, an .obs column of the spots with at least two groups (e.g. 'section').")
    if source is None or len(source) != n_synthetic:
        raise ValueError(f"{option} needs the source spot of each synthetic pair (obs['source_spot'], "
                         f"written by c2lst.tl.generate); {fix}.")
    where = table.obs_names.get_indexer(source)
    if (where < 0).any():
        raise ValueError(f"{int((where < 0).sum())} synthetic pairs come from spots that are not in the table "
                         f"(e.g. {source[where < 0][0]!r}); {fix}.")
    labels = table.obs[groupby].astype(str).to_numpy()
    return {"groups": labels[rows], "extra_groups": labels[where]}


def record_split(table: AnnData, mask: np.ndarray, key: str) -> None:
    """Write ``obs[key]``: categorical ``"train"`` / ``"held_out"`` (the spots that fitted a model, and the others)."""
    import pandas as pd

    table.obs[key] = pd.Categorical(np.where(mask, SPLIT_TRAIN, SPLIT_HELD_OUT), categories=[SPLIT_TRAIN, SPLIT_HELD_OUT])


def impute_genes(table: AnnData, panel: GenePanel, rows: np.ndarray, genes: np.ndarray, measured: np.ndarray,
                 predicted: np.ndarray) -> np.ndarray:
    """Expression of the columns ``genes`` from the predicted panel: ridge fitted on the training spots ``rows``.

    The map goes from ``measured`` (the training spots' panel expression, standardised on the panel's training
    statistics) to the other genes' log-normalised expression, with one penalty chosen by efficient leave-one-out
    CV over all genes; it is applied to ``predicted`` (the panel predicted from histology).
    """
    from sklearn.linear_model import RidgeCV

    lib = library_sizes(raw_counts(table))
    names = list(table.var_names[genes])
    target = lognorm(raw_counts(table, genes=names)[rows], lib[rows], panel.target_sum)
    model = RidgeCV(alphas=RIDGE_ALPHAS).fit(panel.standardize(measured), target)
    return model.predict(panel.standardize(predicted)).reshape(len(predicted), -1).astype(np.float32)


@renamed_kwargs(n_top="n_top_genes")
@doc_params
def predict(
    sdata: SpatialData | AnnData,
    *,
    train_mask: Any = None,
    synthetic: str | None = "c2lst_synthetic",
    encoder: str | Path = "handcrafted",
    central: Any = None,
    head: str = "ridge",
    panel: GenePanel | None = None,
    n_top_genes: int = 256,
    table_key: str | None = None,
    patch_key: str = "c2lst_patch",
    synthetic_weight: float | str = SYNTHETIC_WEIGHT,
    synthetic_align: str | None = SYNTHETIC_ALIGN,
    n_augment: int = 0,
    augment_weight: float = 1.0,
    groupby: str | None = None,
    batch_key: str | None = None,
    alpha_cv: str = "loo",
    seed: int = 0,
    outside_panel: str = "impute",
    key_added: str = "c2lst_pred",
    return_model: bool | None = None,
    overwrite: bool = False,
    copy: bool = False,
    **predictor_kwargs: Any,
) -> Predictor | tuple[SpatialData | AnnData, Predictor]:
    """Train a histology -> expression predictor on the training spots and predict every spot.

    The targets are the panel genes' log-normalised expression computed with the panel's own (training-spot)
    ``target_sum``, so predictions are on the scale of ``pp.normalize``'s ``lognorm`` layer. Every fitted
    quantity (panel, target and feature statistics, ridge penalties, network weights) comes from the
    training spots, plus the synthetic pairs when a synthetic table is present.

    Parameters
    ----------
    {sdata_or_adata}
        The table has raw counts in ``X`` and patches in ``.obsm[patch_key]`` (:func:`c2lst.pp.extract_patches`).
    {train_mask}
        ``None`` trains on every spot.
    synthetic
        Name of the synthetic table written by :func:`c2lst.tl.generate`; its pairs are added to the training
        set (its genes must be the panel's, in order). The default name may be absent (real spots only); any
        other name that is not a table raises a ``ValueError``. ``None`` trains on real spots only.
    encoder
        ``"handcrafted"`` (35 colour/texture/nuclei features; the default), ``"central"`` (pooled UNet
        activations of the central diffusion model, or of the adapted one, with the handcrafted features appended
        unless ``handcrafted=False``), ``"cnn"`` (small CNN trained end-to-end) or the path of a local ResNet
        ``.safetensors`` checkpoint (torchvision/timm layout). On the her2st benchmark (five folds, f = 0.25, with
        ``batch_key``) the shipped central model's features gave r 0.144 and the adapted model's 0.146 against
        0.325 for the handcrafted features alone; with ``alpha_cv="groups"`` 0.276 and 0.275 (the handcrafted
        alone 0.322). A central model pretrained on your tissue may do better (``benchmarks/README.md``).
    central
        Diffusion model for ``encoder="central"``: a ``CentralModel``, its checkpoint directory, ``None`` for
        :func:`c2lst.datasets.central_default`, or the ``LocalModel`` of :func:`c2lst.tl.adapt`: then the features
        are the locally adapted model's (``LocalModel.features``: its unconditional local component, no profile).
    head
        ``"ridge"`` (per-gene penalty by leave-one-out CV on the training spots) or ``"mlp"``.
    panel
        Gene panel to predict. ``None``: ``.uns['c2lst_panel']`` when present, else the ``n_top_genes`` most
        variable genes of the training spots (computed in memory; not written to the table).
    n_top_genes
        Size of a new panel (``n_top`` is its deprecated old name).
    {table_key}
    {patch_key}
    synthetic_weight
        Sample weight of each synthetic pair in the head's fit (training spots weigh 1), or ``"cv"``: the weight
        among 0, 0.25, 0.5 and 1 with the best leave-one-group-out Pearson r on the training spots (groups from
        ``groupby``; synthetic pairs of the held-out group are left out). Ridge head only. The default 0.25
        with ``synthetic_align="moments"`` is the setting that gained at every paired fraction below 1 on the
        her2st benchmark; weight 1 without alignment lost at f = 0.25 and 0.5 (``benchmarks/README.md``).
    synthetic_align
        ``"moments"``: standardise the synthetic patches' features on their own mean and spread, which removes a
        generator's global shift (measured on her2st: synthetic tiles hold ~9 nuclei against ~41 real); the
        default. ``None``: standardise them with the training spots' statistics.
    n_augment
        Classic augmentation: add ``n_augment`` flip/rot90/HED-stain-jittered copies of each training spot's patch
        with that spot's expression (``Predictor.fit(n_augment=)``, seeded by ``seed``). They are a set of their
        own next to the synthetic pairs, standardised like the training spots, so both can be used together. On
        the her2st benchmark (five folds, three seeds, ``batch_key`` set) two copies at weight 1 stacked with the
        synthetic pairs at their default weight gained 0.0073 / 0.0075 / 0.0016 in mean r at f = 0.1 / 0.25 /
        0.5, against 0.0073 / 0.0040 / 0.0029 for the synthetic pairs alone; at f = 1 they lost
        (``benchmarks/README.md``). Not with ``synthetic_weight="cv"``.
    augment_weight
        Sample weight of each augmented copy (training spots weigh 1).
    groupby
        ``.obs`` column of the spots (e.g. ``"section"``) defining the groups of ``synthetic_weight="cv"``.
    batch_key
        ``.obs`` column of the normalisation batch: spots whose images share stain and scanner, usually a section
        or slide (e.g. ``"library_id"``), but any column may serve; it is not ``library_key``, the sections other
        functions split and score by. Each batch's patch features are then standardised on that batch's own
        patches (images only, never expression), and the head learns how expression varies within a batch
        (``Predictor(group_norm=True)``). This removes slide-level shifts in stain and texture. On the her2st
        benchmark (five folds, three seeds, batch = section) it raised the held-out r by 0.009-0.011 at every
        paired fraction. Synthetic pairs are standardised per their source spot's batch. Each batch needs at
        least 5 spots. Not with ``encoder="cnn"``; ``synthetic_weight="cv"`` then holds out one ``batch_key``
        group at a time. ``None``: one standardisation for all spots.
    alpha_cv
        How the ridge head chooses its per-gene penalties: ``"loo"`` (leave-one-out over the training spots; the
        default) or ``"groups"`` (leave one ``batch_key`` group out at a time, else one ``groupby`` group; at least
        two groups among the training spots). Neighbouring spots of one section are alike, so leave-one-out favours
        small penalties that fit within-section structure: with the diffusion models' 448 features
        (``encoder="central"``) on the her2st benchmark, ``"groups"`` recovered most of what they lost (r 0.144 ->
        0.276 at f = 0.25, five folds); with the handcrafted features it changed little (0.325 -> 0.322;
        ``benchmarks/README.md``).
    {seed}
    {key_added_overwrite_copy}
    return_model
        Deprecated and no longer needed: the fitted predictor is always returned.
    outside_panel
        Genes outside the panel: ``"impute"`` maps the predicted panel to them with a ridge regression fitted on
        the training spots' measured expression (panel genes -> every other gene, one penalty chosen by
        leave-one-out CV; a gene without variance over the training spots gets its constant training mean), so
        every gene has a map in scanpy, squidpy and napari; ``"nan"`` leaves them ``NaN`` (nothing predicted).
        :func:`c2lst.tl.evaluate` scores the panel genes either way.
    **predictor_kwargs
        Passed to :class:`~c2lst.core.predictor.Predictor` (``epochs``, ``batch_size``, ``lr``...).

    Returns
    -------
    The fitted :class:`~c2lst.core.predictor.Predictor` (save it with ``Predictor.save``; map a slide without
    spots with :func:`c2lst.tl.predict_slide`), or ``(copy, predictor)`` with ``copy=True``. Writes to the table:

    - ``.layers[key_added]``: float32 spots x genes; predicted lognorm for the panel genes, and for every other
      gene what ``outside_panel`` says: imputed from the predicted panel (default), or ``NaN``. Never a constant
      fill: a gene that varies over the training spots varies in its map.
    - ``.var[f"{key_added}_panel"]``: bool, the gene is predicted from histology.
    - ``.obs[f"{key_added}_split"]``: categorical ``"train"`` / ``"held_out"``, the spots that fitted the
      predictor (``train_mask``) and the others; :func:`c2lst.tl.evaluate`, the plots and the command line
      read the split from here.
    - ``.uns[key_added]["params"]``: panel genes and dict, training spot names, encoder, head, seed,
      synthetic table and rows used (with their weight and alignment), augmented copies (``n_augment``, with their
      weight), ``groupby`` and ``batch_key``, predictor
      hyperparameters (``group_norm`` among them) and fit summary.
    """
    if return_model is not None:
        warn_deprecated("tl.predict: `return_model` is no longer needed, the fitted predictor is always returned; "
                        "drop the argument", stacklevel=4)
    start = logg.info(f"training a {encoder} + {head} predictor")
    sdata = writable(sdata, copy)
    if table_key is None and hasattr(sdata, "tables") and len(sdata.tables) > 1:  # never pick a synthetic table
        spots = [k for k, t in sdata.tables.items() if k != synthetic and not is_synthetic(t)]
        table_key = spots[0] if len(spots) == 1 else None
    sd, table, tkey = resolve_table(sdata, table_key)
    check_key(table.layers, key_added, where=".layers", overwrite=overwrite)
    if alpha_cv not in ALPHA_CV:
        raise ValueError(f"`alpha_cv` must be one of {ALPHA_CV}, got {alpha_cv!r}.")
    alpha_key = batch_key if batch_key is not None else groupby
    if alpha_cv == "groups" and (alpha_key is None or alpha_key not in table.obs):
        raise ValueError("alpha_cv='groups' holds out one group of training spots at a time: pass `batch_key` or "
                         "`groupby`, an .obs column naming each spot's section (e.g. 'library_id').")
    if outside_panel not in OUTSIDE_PANEL:
        raise ValueError(f"`outside_panel` must be one of {OUTSIDE_PANEL}, got {outside_panel!r}.")
    mask = as_mask(train_mask, table.n_obs)
    if int(mask.sum()) < 3:
        raise ValueError(f"only {int(mask.sum())} training spots; a predictor needs at least 3. Select more spots in "
                         "`train_mask`.")
    if patch_key not in table.obsm:
        raise ValueError(f"no patches in .obsm[{patch_key!r}] (obsm keys: {list(table.obsm)}); run "
                         "c2lst.pp.extract_patches(sdata) first or pass an existing `patch_key`.")
    patches = np.asarray(table.obsm[patch_key])
    if str(encoder) == "central":
        central = resolve_central(central)
    elif str(encoder) not in ENCODERS and not Path(encoder).exists():
        raise ValueError(f"encoder {str(encoder)!r} is neither one of {ENCODERS} nor an existing checkpoint path.")
    check_extra_options(synthetic_weight, synthetic_align, cv_possible=head == "ridge" and str(encoder) != "cnn",
                        names=("synthetic_weight", "synthetic_align"))
    if batch_key is not None:
        if batch_key not in table.obs:
            raise ValueError(f"`batch_key` {batch_key!r} is not an .obs column of the spots; pass the column naming "
                             f"each spot's section or slide (columns: {list(table.obs.columns)[:8]}).")
        if str(encoder) == "cnn":
            raise ValueError("`batch_key` needs a frozen encoder; use encoder='handcrafted'/'central'/a checkpoint.")
        if synthetic_weight == "cv" and groupby not in (None, batch_key):
            raise ValueError(f"with `batch_key`, synthetic_weight='cv' holds out one {batch_key!r} group at a time; "
                             f"leave `groupby` unset or set it to {batch_key!r}.")
    the_panel, panel_source = train_panel(table, mask, panel, n_top_genes)
    expr = the_panel.expression(table)
    syn_p, syn_y, n_syn, syn_source = synthetic_pairs(sd, synthetic, the_panel, patch_key)
    if n_syn:
        logg.info(f"    adding {n_syn} synthetic pairs from table {synthetic!r}")
    rows = np.flatnonzero(mask)
    fit_kw: dict[str, Any] = {"extra_weight": synthetic_weight, "extra_align": synthetic_align} if n_syn else {}
    batches = None if batch_key is None else table.obs[batch_key].astype(str).to_numpy()
    if n_syn and batch_key is not None:  # per-section standardisation, and with "cv" one section held out at a time
        fit_kw.update(synthetic_groups(table, rows, batch_key, syn_source, n_syn, option="`batch_key`",
                                       fix="pass batch_key=None or synthetic=None"))
    elif n_syn and isinstance(synthetic_weight, str):
        fit_kw.update(synthetic_groups(table, rows, groupby, syn_source, n_syn))
    elif batch_key is not None:
        fit_kw["groups"] = batches[rows]
    if alpha_cv == "groups" and "groups" not in fit_kw:
        fit_kw["groups"] = table.obs[alpha_key].astype(str).to_numpy()[rows]
    model = Predictor(encoder=encoder, head=head, genes=list(the_panel.genes), central=central, seed=seed,
                      group_norm=batch_key is not None, alpha_cv=alpha_cv, **predictor_kwargs)
    model.fit(patches[rows], expr[rows], extra_patches=syn_p, extra_targets=syn_y, n_augment=n_augment,
              augment_weight=augment_weight, **fit_kw)
    pred = model.predict(patches, groups=batches)

    layer = np.full((table.n_obs, table.n_vars), np.nan, dtype=np.float32)
    in_panel = table.var_names.get_indexer(list(the_panel.genes))
    layer[:, in_panel] = pred
    if outside_panel == "impute" and len(the_panel) < table.n_vars:
        others = np.setdiff1d(np.arange(table.n_vars), in_panel)
        layer[:, others] = impute_genes(table, the_panel, rows, others, expr[rows], pred)
    table.layers[key_added] = layer
    table.var[f"{key_added}_panel"] = table.var_names.isin(the_panel.genes)
    record_split(table, mask, f"{key_added}_split")
    table.uns[key_added] = {"params": _drop_none({
        "panel_genes": list(the_panel.genes), "panel": the_panel.to_dict(), "panel_source": panel_source,
        "train_spots": [str(s) for s in table.obs_names[rows]], "encoder": str(encoder), "head": head, "seed": int(seed),
        "synthetic": synthetic if n_syn else None, "n_synthetic": int(n_syn), "patch_key": patch_key,
        "synthetic_weight": synthetic_weight if n_syn else None, "synthetic_align": synthetic_align if n_syn else None,
        "n_augment": int(n_augment), "augment_weight": float(augment_weight) if n_augment else None,
        "groupby": groupby, "batch_key": batch_key, "outside_panel": outside_panel,
        "table_key": tkey, "predictor": {k: v for k, v in model.params.items() if k != "genes"},
    })}
    logg.info(f"    added .layers[{key_added!r}] ({len(the_panel)} panel genes), .var['{key_added}_panel'] and "
              f".uns[{key_added!r}]", time=start)
    return returned(sdata, model, copy)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` without ``None`` values, recursively (AnnData cannot store ``None`` in ``.uns``)."""
    return {k: _drop_none(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}
