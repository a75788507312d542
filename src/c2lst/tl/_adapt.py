"""Adapt the central model to one section's paired (H&E patch, expression) spots."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _logging as logg
from .._docs import doc_params
from .._settings import settings
from .._utils import as_mask, check_key, check_optimizer_args, resolve_table, returned, writable
from ..core.adaptation import adapt_local
from ..core.images import as_tiles, resize_tiles
from ..core.models import CentralModel, LocalModel
from ..core.recipe import RECIPE
from ..core.runtime import torch_threads
from ..pp._panel import GenePanel, gene_panel
from ._tissue import local_tissue

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io._histology import HistologyTiles

MAX_ADAPTER_SHARE = 0.05  # of the gene-conditioned adapter (modulation + LoRA), as a share of the central model
DECODER_STEPS = 200  # default local-decoder steps (at most `steps`)


def _central(central: CentralModel | str | Path) -> CentralModel:
    if isinstance(central, CentralModel):
        return central
    if isinstance(central, str | Path):
        return CentralModel.load(central)
    raise ValueError(f"`central` must be a CentralModel or the directory of a saved one, got {type(central).__name__}.")


def _train_mask(n: int, train_mask: Any, train_fraction: float | None, seed: int) -> np.ndarray:
    if train_mask is not None and train_fraction is not None:
        raise ValueError("pass either `train_mask` or `train_fraction`, not both.")
    if train_fraction is None:
        return as_mask(train_mask, n)
    if not 0 < train_fraction <= 1:
        raise ValueError(f"`train_fraction` must be in (0, 1], got {train_fraction}.")
    k = max(1, round(train_fraction * n))
    mask = np.zeros(n, dtype=bool)
    mask[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return mask


def _panel(table: AnnData, panel: GenePanel | None, mask: np.ndarray, n_top_genes: int) -> GenePanel:
    if panel is not None:
        if not isinstance(panel, GenePanel):
            raise ValueError(f"`panel` must be a GenePanel (c2lst.pp.gene_panel), got {type(panel).__name__}.")
        panel.validate(table.var_names)
        return panel
    if "c2lst_panel" in table.uns:
        return GenePanel.from_table(table)
    return gene_panel(table, n_top_genes=min(n_top_genes, table.n_vars), train_mask=mask)


@doc_params
def adapt(
    sdata: SpatialData | AnnData,
    central: CentralModel | str | Path,
    *,
    panel: GenePanel | None = None,
    train_mask: Any = None,
    train_fraction: float | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    cond_dropout: float = 0.1,
    lora_rank: int = 0,
    decoder_steps: int | None = None,
    mixed_precision: str = "no",
    table_key: str | None = None,
    patch_key: str = "c2lst_patch",
    seed: int = 0,
    key_added: str = "c2lst_adapt",
    overwrite: bool = False,
    copy: bool = False,
    tissue: int | np.ndarray | HistologyTiles | None = None,
    transductive: Sequence[str] = (),
    local_unconditional: bool | None = None,
    n_comps: int = RECIPE.n_comps,
) -> LocalModel | tuple[SpatialData | AnnData, LocalModel]:
    """Adapt a frozen central model to a section's paired spots with gene-conditioned modulation.

    A gene encoder (MLP on the standardised log-normalised panel expression) drives zero-initialised
    modulation of the central UNet: an additive shift of its time embedding and FiLM scale/shift on the
    GroupNorms of its ResNet blocks (adaLN-Zero). At step 0 the local model therefore predicts exactly
    what the central model predicts. Only the adapter is trained (at most a few % of the central
    parameters), on the training spots only; the central weights never change. Conditioning is dropped
    with probability ``cond_dropout`` so that generation can use classifier-free guidance.

    A copy of the central decoder is then fine-tuned to reconstruct the training patches (the encoder and
    so the latent space stay central): a central model pretrained on other tissue and scanners decodes
    in its own palette, and this local decoder makes generated tiles take the local stain and texture.

    ``tissue`` adds the lab's unlabelled tissue tiles (the morphology between and around its spots): the
    modulation gets an unconditional, zero-initialised local component trained on them as unconditional
    samples (half of each batch), and the local decoder is fine-tuned on them too
    (:func:`~c2lst.core.adaptation.adapt_local`); guidance then contrasts local-conditional with
    local-unconditional predictions. No pixel of them is saved with the adapter.

    Parameters
    ----------
    {sdata_or_adata}
        The table holds raw counts and ``.obsm[patch_key]`` patches (:func:`c2lst.pp.extract_patches`); patches
        are resized to the model's tile size if needed.
    central
        The :class:`~c2lst.core.CentralModel`, or the directory it was saved to.
    panel
        Conditioning genes. Default: the table's ``.uns["c2lst_panel"]`` if present, else a new panel of
        ``config.n_top_genes`` genes chosen on the training spots (:func:`c2lst.pp.gene_panel`, which
        writes ``.var``/``.uns["c2lst_panel"]``).
    {train_mask}
    train_fraction
        Alternatively, a seeded random fraction of the spots to train on. Default: all spots.
    steps, batch_size, lr
        Default from the central model's configuration.
    cond_dropout
        Probability of dropping the conditioning of a training sample (classifier-free guidance).
    lora_rank
        Rank of extra LoRA adapters on the UNet's convolutions/attention (needs ``peft``); 0 = none.
    decoder_steps
        Steps of local decoder fine-tuning on the training patches (same batch size and learning rate);
        0 keeps the central decoder. Default: ``min(200, steps)``.
    mixed_precision
        ``"no"``, ``"bf16"`` or ``"fp16"`` (CUDA only).
    {table_key}
    {patch_key}
    {seed}
        It seeds the train split (``train_fraction``), the initialisation and the training batches.
    {key_added_overwrite_copy}
    tissue
        Unlabelled tissue tiles for the local stage. An ``int``: a budget of tiles drawn (seeded) with
        :func:`c2lst.pp.tissue_tiles` from the images of the sections holding training spots
        (``obs["library_id"]`` of the ``train_mask`` spots, or the only section), at the spot patches' physical
        size, dropping every tile that overlaps a non-training spot. An array (uint8 ``(m, 3, H, W)`` or
        ``(m, H, W, 3)``) or :func:`c2lst.io.read_histology` tiles: the user's own tiles (e.g. H&E-only slides of
        the lab) at the spot patches' physical size. ``None``: spots only.
    transductive
        Sections without training spots (held-out sections) whose images ``tissue=<int>`` may also tile (still
        without the footprints of their spots). This is transductive use of a test image: its morphology, not
        its expression, enters training; the benchmark never sets it. Unknown names raise.
    local_unconditional
        Give the modulation its unconditional, zero-initialised local component (trained with every sample): the
        gene-conditioned part then learns what is specific to a profile, and guidance contrasts a profile with the
        locally adapted model rather than the central one. ``None`` (default): the recipe's
        (:data:`c2lst.core.recipe.RECIPE`), and always with ``tissue`` (the tiles train that component).
    n_comps
        The gene encoder reads this many whitened principal-component scores of the training spots' standardised
        panel (fitted on the training spots; saved with the adapter) instead of the panel itself; 0 (default): the
        panel.

    Returns
    -------
    The :class:`~c2lst.core.LocalModel` (save it with ``LocalModel.save``; ``(copy, model)`` with ``copy=True``).
    Also writes to the table:

    - ``.uns[key_added]``: central identity, panel genes, training spots, arguments, losses (and the local
      decoder's first/last loss when ``decoder_steps > 0``; with ``tissue``: ``n_tissue_tiles``,
      ``tissue_sections`` (the sections or files they came from), ``tissue_source`` and ``transductive``;
      c2lst 0.1.0 wrote it to ``.uns["c2lst"]["adapt"]``);
    - ``.var["c2lst_panel"]`` / ``.uns["c2lst_panel"]`` when a new panel had to be chosen.
    """
    start = logg.info("adapting the central model to the local spots")
    sdata = writable(sdata, copy)
    _, table, table_key = resolve_table(sdata, table_key)
    model = _central(central)
    cfg = model.config
    steps = cfg.adapt_steps if steps is None else steps
    batch_size = cfg.adapt_batch_size if batch_size is None else batch_size
    lr = cfg.adapt_lr if lr is None else lr
    if not isinstance(steps, int | np.integer) or steps < 1:
        raise ValueError(f"`steps` must be a positive integer, got {steps!r}.")
    check_optimizer_args(batch_size, lr)
    decoder_steps = min(DECODER_STEPS, int(steps)) if decoder_steps is None else decoder_steps
    if not isinstance(decoder_steps, int | np.integer) or decoder_steps < 0:
        raise ValueError(f"`decoder_steps` must be a non-negative integer (0: keep the central decoder), got "
                         f"{decoder_steps!r}.")
    if not 0 <= cond_dropout < 1:
        raise ValueError(f"`cond_dropout` must be in [0, 1), got {cond_dropout}.")
    if not isinstance(lora_rank, int | np.integer) or lora_rank < 0:
        raise ValueError(f"`lora_rank` must be a non-negative integer, got {lora_rank!r}.")
    if local_unconditional is not None and not isinstance(local_unconditional, bool | np.bool_):
        raise ValueError(f"`local_unconditional` must be True, False or None, got {local_unconditional!r}.")
    if local_unconditional is False and tissue is not None:
        raise ValueError("`tissue` tiles train the modulation's unconditional local component; pass "
                         "local_unconditional=True or None with `tissue`, or drop `tissue`.")
    with_local = (bool(RECIPE.local_unconditional or tissue is not None) if local_unconditional is None
                  else bool(local_unconditional))
    if not isinstance(n_comps, int | np.integer) or n_comps < 0:
        raise ValueError(f"`n_comps` must be a non-negative integer (0: the panel itself), got {n_comps!r}.")
    check_key(table.uns, key_added, where=".uns", overwrite=overwrite)
    if patch_key not in table.obsm:
        raise ValueError(f"no patches in .obsm[{patch_key!r}] (obsm keys: {list(table.obsm)}); run "
                         "c2lst.pp.extract_patches(sdata) first or pass an existing `patch_key`.")
    mask = _train_mask(table.n_obs, train_mask, train_fraction, seed)
    tiles, tissue_record = None, {}
    if tissue is not None:  # unlabelled tissue tiles of the local stage (counts and names recorded, never pixels)
        tiles, tissue_record = local_tissue(sdata, table, table_key, tissue, transductive, mask, cfg.tile_px,
                                            patch_key, int(seed))
    elif transductive:
        raise ValueError("`transductive` needs `tissue=<int>` (tiles drawn from the sections' images).")
    gp = _panel(table, panel, mask, cfg.n_top_genes)
    genes = gp.standardize(gp.expression(table))[mask]
    patches = resize_tiles(as_tiles(np.asarray(table.obsm[patch_key])[mask], name=f"obsm[{patch_key!r}]"),
                           cfg.tile_px)
    with torch_threads(settings.n_threads):
        local = adapt_local(model, patches, genes, gp.to_dict(), steps=int(steps), batch_size=int(batch_size),
                            lr=float(lr), cond_dropout=float(cond_dropout), lora_rank=int(lora_rank), seed=int(seed),
                            decoder_steps=int(decoder_steps), mixed_precision=mixed_precision,
                            progress=settings.progress_bar, tissue=tiles, local_unconditional=with_local,
                            n_comps=int(n_comps))
    share = local.n_trainable / model.n_params
    conditioned = local.n_conditioned / model.n_params
    if conditioned > MAX_ADAPTER_SHARE:
        logg.warning(f"the gene-conditioned adapter has {conditioned:.1%} of the central parameters (> 5%); use a "
                     "smaller panel or lora_rank.")
    train_spots = [str(s) for s in table.obs_names[mask]]
    local.summary |= {"train_spots": train_spots, "table_key": table_key, "patch_key": patch_key,
                      "adapter_share": share, **tissue_record}
    record = {
        "central": {"config": cfg.name, "weights_sha256": model.weights_sha256},
        "panel_genes": list(gp.genes), "panel_identity": gp.identity(), "train_spots": train_spots,
        "params": {"steps": int(steps), "batch_size": int(batch_size), "lr": float(lr),
                   "cond_dropout": float(cond_dropout), "lora_rank": int(lora_rank), "seed": int(seed),
                   "decoder_steps": int(decoder_steps), "mixed_precision": mixed_precision, "patch_key": patch_key,
                   "local_unconditional": bool(local.modulation.local), "n_comps": int(n_comps)},
        "loss_first": local.summary["loss_first"], "loss_last": local.summary["loss_last"],
        "n_trainable": local.n_trainable, "n_conditioned": local.n_conditioned, **tissue_record,
    }
    decoder = ""
    if "decoder" in local.summary:
        first, last = local.summary["decoder"]["loss_first"], local.summary["decoder"]["loss_last"]
        record |= {"decoder_loss_first": first, "decoder_loss_last": last}
        decoder = f"; local decoder loss {first:.4f} -> {last:.4f}"
    table.uns[key_added] = record
    decoder += f"; {len(tiles)} tissue tiles" if tiles is not None else ""
    logg.info(f"    added .uns[{key_added!r}] ({mask.sum()} training spots, {local.n_trainable:,} adapter "
              f"params = {share:.2%} of central, gene-conditioned {conditioned:.2%}; loss "
              f"{local.summary['loss_first']:.4f} -> {local.summary['loss_last']:.4f}{decoder})", time=start)
    return returned(sdata, local, copy)
