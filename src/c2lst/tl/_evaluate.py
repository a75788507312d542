"""Evaluate predictions on held-out spots per section, and synthetic patches against real ones."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import _logging as logg
from .._docs import doc_params
from .._utils import (
    LIBRARY_KEY,
    _pick,
    as_mask,
    as_names,
    check_key,
    recorded_train_mask,
    resolve_table,
    returned,
    section_labels,
    spot_positions,
    spot_table,
    writable,
)
from ..metrics import (
    handcrafted_features,
    mae_per_gene,
    mse_per_gene,
    pearson_per_gene,
    reconstruction_ceiling,
    synthetic_report,
)
from ..pp import GenePanel
from ._predict import PANEL_KEY, resolve_central

if TYPE_CHECKING:
    from collections.abc import Callable

    from anndata import AnnData
    from spatialdata import SpatialData

MIN_TEST_SPOTS = 3
CEILING_MIN_SPOTS = 6  # held-out patches needed to reconstruct them for the ceiling (PRDC's k + 1)


def _panel_of(table: AnnData, layer: str) -> GenePanel:
    params = table.uns.get(layer, {}).get("params", {})
    if "panel" in params:
        return GenePanel.from_dict(params["panel"])
    if PANEL_KEY in table.uns:
        return GenePanel.from_table(table, PANEL_KEY)
    raise ValueError(f"no gene panel for layer {layer!r}: neither .uns[{layer!r}]['params']['panel'] (written by "
                     f"c2lst.tl.predict) nor .uns[{PANEL_KEY!r}]; predict with c2lst.tl.predict first.")


def _train_mask(table: AnnData, layer: str, train_mask: Any) -> np.ndarray:
    fitted = recorded_train_mask(table, layer)
    if train_mask is None:
        if fitted is None:
            raise ValueError(f"which spots were used for training is unknown (no .obs['{layer}_split'] nor "
                             f".uns[{layer!r}]['params']['train_spots']); pass `train_mask=`.")
        return fitted
    mask = as_mask(train_mask, table.n_obs)
    if fitted is not None and (fitted & ~mask).any():
        raise ValueError(f"{int((fitted & ~mask).sum())} spots that trained the predictor are outside `train_mask`, so "
                         "they would be scored as held-out spots; pass the train_mask used for c2lst.tl.predict.")
    return mask


def _ground_truth(table: AnnData, panel: GenePanel) -> np.ndarray:
    if table.X is None:
        raise ValueError("no ground truth: the table has no counts in X; evaluation needs measured expression "
                         "(predictions on a slide without spots cannot be scored).")
    missing = [g for g in panel.genes if g not in set(table.var_names)]
    if missing:
        raise ValueError(f"no ground truth for {len(missing)} panel genes (e.g. {missing[:3]}); evaluate on a table "
                         "that measured the panel genes.")
    return panel.expression(table)


def _moran(measured: np.ndarray, predicted: np.ndarray, xy: np.ndarray, genes: list[str],
           n_neighs: int) -> tuple[np.ndarray, np.ndarray]:
    """Moran's I of measured and predicted maps with ``squidpy.gr.spatial_autocorr`` (k-NN graph)."""
    import squidpy as sq
    from anndata import AnnData

    from ..core.runtime import keep_torch_threads

    tmp = AnnData(X=measured.astype(np.float32), layers={"pred": predicted.astype(np.float32)},
                  obsm={"spatial": xy}, var=pd.DataFrame(index=genes))
    sq.gr.spatial_neighbors_knn(tmp, n_neighs=min(n_neighs, len(xy) - 1))
    out = []
    for layer in (None, "pred"):
        with keep_torch_threads():  # squidpy's numba code would leave torch on numba's thread count
            df = sq.gr.spatial_autocorr(tmp, mode="moran", genes=genes, layer=layer, n_perms=None, copy=True,
                                        show_progress_bar=False, n_jobs=1)
        out.append(df["I"].reindex(genes).to_numpy(dtype=np.float64))
    return out[0], out[1]


def _moran_agreement(measured: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """How well the predicted maps keep the measured maps' spatial coherence, over the genes where both are defined.

    ``moran_r``: Pearson r between measured and predicted Moran's I across genes (do the spatially patterned genes
    stay patterned); ``moran_mean_abs_diff``: mean ``|I_pred - I_measured|``; ``moran_mean_diff``: mean
    ``I_pred - I_measured`` (> 0: predictions smoother than the tissue). NaN where fewer than two genes have both.
    """
    ok = np.isfinite(measured) & np.isfinite(predicted)
    if ok.sum() < 2:
        return {"moran_r": float("nan"), "moran_mean_abs_diff": float("nan"), "moran_mean_diff": float("nan")}
    diff = predicted[ok] - measured[ok]
    return {"moran_r": float(pearson_per_gene(measured[ok, None], predicted[ok, None])[0]),
            "moran_mean_abs_diff": float(np.abs(diff).mean()), "moran_mean_diff": float(diff.mean())}


@doc_params
def evaluate(
    sdata: SpatialData | AnnData,
    *,
    layer: str = "c2lst_pred",
    train_mask: Any = None,
    library_key: str | None = LIBRARY_KEY,
    table_key: str | None = None,
    n_top_hvg: int = 50,
    n_neighs: int = 6,
    key_added: str = "c2lst_eval",
    overwrite: bool = False,
    copy: bool = False,
) -> pd.DataFrame | tuple[SpatialData | AnnData, pd.DataFrame]:
    """Score predictions against measured expression on held-out spots, per section and per gene.

    Held-out spots are those outside ``train_mask``. Each section (``obs[library_key]``) is scored on its
    own held-out spots; values are never pooled across sections. The ground truth is the panel genes'
    log-normalised expression with the panel's training-spot ``target_sum`` (the scale ``tl.predict``
    predicts on). The top ``n_top_hvg`` genes are the panel genes with the largest variance over the
    training spots (never the held-out spots).

    Parameters
    ----------
    {sdata_or_adata}
        The table has raw counts in ``X`` and predictions in ``.layers[layer]``.
    layer
        Layer written by :func:`c2lst.tl.predict`.
    {train_mask}
        ``None`` uses the spots recorded by ``tl.predict``; a mask that leaves any of them among the held-out
        spots is refused.
    {library_key}
        Each section is scored on its own (section ``"all"`` without sections).
    table_key
        Table to use when ``sdata`` has several (default: the only one holding ``layer``).
    n_top_hvg
        Number of most variable panel genes (on training spots) flagged ``top_hvg``.
    n_neighs
        Neighbours of the k-NN graph used for Moran's I.
    {key_added_overwrite_copy}

    Returns
    -------
    Per-gene, per-section DataFrame with columns ``section``, ``gene``, ``pearson``, ``mse``, ``mae``,
    ``moran_measured``, ``moran_pred``, ``top_hvg``, ``n_test`` (``(copy, frame)`` with ``copy=True``). Also
    writes to the table:

    - ``.var[f"{key_added}_pearson"]``: mean over sections of the per-section Pearson (NaN outside the panel).
    - ``.uns[key_added]``: ``"summary"``, per section a dict of ``"n_test"``, ``"n_genes"``, ``"mean_pearson"``,
      ``"mean_pearson_top_hvg"``, ``"mean_mse"``, ``"mean_mae"``, ``"moran_r"``, ``"moran_mean_abs_diff"``,
      ``"moran_mean_diff"``; and ``"params"``. The ``moran_*`` entries say how well the predicted maps agree with the measured maps'
      spatial coherence: the Pearson r of Moran's I across genes, and the mean absolute and signed difference
      ``I_pred - I_measured`` (NaN where Moran's I could not be computed).
    """
    start = logg.info(f"evaluating .layers[{layer!r}] on held-out spots")
    sdata = writable(sdata, copy)
    if table_key is None and hasattr(sdata, "tables") and len(sdata.tables) > 1:
        with_layer = [k for k, t in sdata.tables.items() if layer in t.layers]
        table_key = with_layer[0] if len(with_layer) == 1 else None
    resolved, table, _ = resolve_table(sdata, table_key)
    if layer not in table.layers:
        raise ValueError(f"no .layers[{layer!r}] to evaluate (layers: {list(table.layers)}); run "
                         f"c2lst.tl.predict(sdata, key_added={layer!r}) first or pass an existing `layer`.")
    check_key(table.uns, key_added, where=".uns", overwrite=overwrite)
    panel = _panel_of(table, layer)
    mask = _train_mask(table, layer, train_mask)
    truth = _ground_truth(table, panel)
    cols = table.var_names.get_indexer(list(panel.genes))
    pred = table.layers[layer][:, cols]
    pred = np.asarray(pred.toarray() if hasattr(pred, "toarray") else pred, dtype=np.float64)
    train_var = truth[mask].var(axis=0)
    top = np.zeros(len(panel), dtype=bool)
    top[np.argsort(-train_var, kind="stable")[: min(n_top_hvg, len(panel))]] = True
    sections = section_labels(table, library_key)
    xy = spot_positions(table, resolved)
    frames, summary = [], {}
    for sec in pd.unique(sections):
        test = (~mask) & (sections == sec)
        n_test = int(test.sum())
        if n_test < MIN_TEST_SPOTS:
            logg.warning(f"section {sec!r} has {n_test} held-out spots (< {MIN_TEST_SPOTS}); not scored.")
            continue
        t, p = truth[test], pred[test]
        if not np.isfinite(p).all():
            raise ValueError(f"predictions in .layers[{layer!r}] are not finite on held-out spots of section {sec!r}.")
        df = pd.DataFrame({"section": sec, "gene": list(panel.genes), "pearson": pearson_per_gene(t, p),
                           "mse": mse_per_gene(t, p), "mae": mae_per_gene(t, p), "top_hvg": top, "n_test": n_test})
        if xy is not None and n_test > n_neighs:
            df["moran_measured"], df["moran_pred"] = _moran(t, p, xy[test], list(panel.genes), n_neighs)
        else:
            df["moran_measured"] = df["moran_pred"] = np.nan
        frames.append(df)
        summary[str(sec)] = {"n_test": n_test, "n_genes": len(panel),
                             "mean_pearson": float(np.nanmean(df["pearson"])) if df["pearson"].notna().any() else float("nan"),
                             "mean_pearson_top_hvg": float(np.nanmean(df.loc[top, "pearson"])) if df.loc[top, "pearson"].notna().any() else float("nan"),
                             "mean_mse": float(df["mse"].mean()), "mean_mae": float(df["mae"].mean()),
                             **_moran_agreement(df["moran_measured"].to_numpy(), df["moran_pred"].to_numpy())}
    if not frames:
        raise ValueError(f"too few held-out spots: no section has at least {MIN_TEST_SPOTS} spots outside `train_mask`.")
    result = pd.concat(frames, ignore_index=True)[
        ["section", "gene", "pearson", "mse", "mae", "moran_measured", "moran_pred", "top_hvg", "n_test"]]
    per_gene = result.groupby("gene", sort=False)["pearson"].mean()
    table.var[f"{key_added}_pearson"] = per_gene.reindex(table.var_names).to_numpy(dtype=np.float64)
    table.uns[key_added] = {"summary": summary, "params": {
        "layer": layer, "n_top_hvg": int(n_top_hvg), "n_neighs": int(n_neighs), "n_train": int(mask.sum()),
        "library_key": library_key if library_key in table.obs else "", "panel_genes": list(panel.genes)}}
    for sec, s in summary.items():
        logg.info(f"    {sec}: mean PCC {s['mean_pearson']:.3f} (top-{n_top_hvg} HVG {s['mean_pearson_top_hvg']:.3f}) "
                  f"on {s['n_test']} held-out spots")
    logg.info(f"    added .var['{key_added}_pearson'] and .uns[{key_added!r}]", time=start)
    return returned(sdata, result, copy)


def _feature_fn(features: str | Callable[[np.ndarray], np.ndarray], central: Any) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    if callable(features):
        return features, getattr(features, "__name__", "callable")
    if features == "handcrafted":
        return handcrafted_features, "handcrafted"
    if features == "central":
        model = resolve_central(central)
        return (lambda p: model.features(p)), "central"
    raise ValueError(f"`features` must be 'handcrafted', 'central' or a callable patches -> (n, F); got {features!r}.")


@doc_params
def evaluate_synthetic(
    sdata: SpatialData,
    *,
    synthetic: str = "c2lst_synthetic",
    table_key: str | None = None,
    patch_key: str = "c2lst_patch",
    train_mask: Any = None,
    features: str | Callable[[np.ndarray], np.ndarray] = "handcrafted",
    central: Any = None,
    model: Any = None,
    seed: int = 0,
    key_added: str = "c2lst_synthetic_eval",
    overwrite: bool = False,
    copy: bool = False,
) -> dict[str, float] | tuple[SpatialData, dict[str, float]]:
    """Fidelity, cellular composition and memorisation of synthetic patches against the real spot patches.

    Parameters
    ----------
    {sdata}
        It holds the real spot table (patches in ``.obsm[patch_key]``) and the synthetic table.
    synthetic
        Name of the synthetic table written by :func:`c2lst.tl.generate`.
    {table_key}
    {patch_key}
        In both tables.
    {train_mask}
        Spots the generator was adapted on: the reference patches of every metric, and the training set of the
        memorisation audit (the other spots are its held-out set). ``None``: the synthetic table's recorded
        ``train_spots`` when present, else all spots (and no audit).
    features
        Feature space: ``"handcrafted"`` (no weights), ``"central"`` (``CentralModel.features``) or a callable.
    central
        Central model for ``features="central"`` (model, path or ``None`` for the bundled default).
    model
        The generator (a ``LocalModel``, or a ``CentralModel``) whose autoencoder's reconstructions of real
        patches give the realism ceiling (``*_ceiling`` keys); ``None``: no ceiling. The held-out spots'
        patches are reconstructed when at least 6 exist (the model never saw them), else the reference's.
    {seed}
        It seeds the KID subsets and the floor's random halves.
    {key_added_overwrite_copy}

    Returns
    -------
    Dict of metrics (:func:`c2lst.metrics.synthetic_report`): ``frechet``, ``kid``, ``kid_std``, ``precision``,
    ``recall``, ``density``, ``coverage``, ``diversity_ratio``, ``out_of_range`` (features standardised on the
    reference patches, clipped to ±5); the same between two disjoint random halves of the reference, the floor a
    synthetic set is judged against (``frechet_floor``, ``kid_floor``, ..., ``n_floor``), next to the synthetic set
    scored against one half at the other's size (``frechet_vs_half``, ...; both with at least 12 reference spots
    and 6 synthetic patches); the nuclei composition (``*_real``, ``*_synthetic``, ``*_wasserstein``) and, when
    held-out spots exist, the memorisation audit (``nn_synthetic_median``, ``nn_heldout_median``, ``nn_ratio``,
    ``share_below_heldout_q``); with ``model``, the realism ceiling (:func:`c2lst.metrics.reconstruction_ceiling`:
    ``frechet_ceiling``, ``precision_ceiling``, ..., ``mae_ceiling``, read against the ``*_floor`` keys; what was
    reconstructed is ``params["ceiling_of"]``); ``(copy, metrics)`` with ``copy=True``. Also written to the
    synthetic table's ``.uns[key_added]`` as ``{"metrics": ..., "params": ...}``.
    """
    start = logg.info(f"evaluating synthetic table {synthetic!r}")
    if not hasattr(sdata, "tables") or synthetic not in sdata.tables:
        tables = list(getattr(sdata, "tables", {}))
        raise ValueError(f"no synthetic table {synthetic!r} in the SpatialData object (tables: {tables}); run "
                         "c2lst.tl.generate first or pass an existing `synthetic`.")
    sdata = writable(sdata, copy)
    syn = sdata.tables[synthetic]
    check_key(syn.uns, key_added, where=f"tables[{synthetic!r}].uns", overwrite=overwrite)
    if table_key is None:  # the spot table, never a synthetic one (several generate runs may sit side by side)
        table_key = spot_table(sdata)[2]
    table = sdata.tables[_pick("table", list(sdata.tables.keys()), table_key, "table_key")]
    for name, t in ((table_key, table), (synthetic, syn)):
        if patch_key not in t.obsm:
            raise ValueError(f"table {name!r} has no .obsm[{patch_key!r}] patches (obsm keys: {list(t.obsm)}); extract "
                             "or generate them first.")
    real, fake = np.asarray(table.obsm[patch_key]), np.asarray(syn.obsm[patch_key])
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real patches {real.shape[1:]} and synthetic patches {fake.shape[1:]} differ in size; compare "
                         "patches extracted at the model's tile size.")
    stored = syn.uns.get(synthetic, {}).get("params", {}).get("train_spots")
    if train_mask is not None:
        mask = as_mask(train_mask, table.n_obs)
    elif stored is not None:
        mask = table.obs_names.isin(as_names(stored))
    else:
        mask = np.ones(table.n_obs, dtype=bool)
    if not mask.any():
        raise ValueError(f"no reference spot: the training spots recorded in tables[{synthetic!r}] are none of table "
                         f"{table_key!r}'s spots; pass `train_mask`, the spots the generator was adapted on.")
    fn, fname = _feature_fn(features, central)
    f_real, f_fake = np.asarray(fn(real), dtype=np.float64), np.asarray(fn(fake), dtype=np.float64)
    metrics = synthetic_report(f_real[mask], f_fake, real[mask], fake, f_real[~mask] if (~mask).any() else None,
                               seed=seed)
    ceiling_of = None
    if model is not None:
        if not callable(getattr(model, "reconstruct", None)):
            raise ValueError(f"`model` must be a LocalModel or CentralModel (it reconstructs patches), got "
                             f"{type(model).__name__}; pass the generator, e.g. the result of c2lst.tl.adapt.")
        ceiling_of = "held_out" if (~mask).sum() >= CEILING_MIN_SPOTS else "reference"
        rows = ~mask if ceiling_of == "held_out" else mask
        recon = model.reconstruct(real[rows])
        metrics.update(reconstruction_ceiling(f_real[mask], np.asarray(fn(recon), dtype=np.float64), real[rows],
                                              recon, seed=seed))
    syn.uns[key_added] = {"metrics": metrics, "params": {"features": fname, "real_table": table_key,
                                                         "n_real": int(len(real)), "n_train": int(mask.sum()),
                                                         "seed": int(seed), "ceiling_of": ceiling_of}}
    floor = (f" (at {int(metrics['n_floor'])} tiles each {metrics['frechet_vs_half']:.2f}, real vs real "
             f"{metrics['frechet_floor']:.2f})" if "frechet_floor" in metrics else "")
    if "frechet_ceiling" in metrics:
        floor += f"; autoencoder ceiling {metrics['frechet_ceiling']:.2f}"
    logg.info(f"    FD {metrics['frechet']:.2f}{floor}, KID {metrics['kid']:.3f}, precision {metrics['precision']:.2f}, "
              f"recall {metrics['recall']:.2f}; added tables[{synthetic!r}].uns[{key_added!r}]", time=start)
    return returned(sdata, metrics, copy)
