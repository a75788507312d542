"""Pretrain the central latent-diffusion model on histology-only tiles."""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _logging as logg
from .._docs import doc_params
from .._settings import settings
from .._utils import check_optimizer_args, spot_mpp
from ..core.checkpoint import read_json
from ..core.configs import DiffusionConfig, get_config
from ..core.images import as_tiles, resize_tiles
from ..core.models import MANIFEST, CentralModel, remove_saved
from ..core.runtime import resolve_mixed_precision, torch_threads
from ..core.training import (
    has_checkpoints,
    pretrain_central,
    process_group,
    remove_checkpoints,
    tiles_fingerprint,
)
from ..files import MARKER, check_output, write_marker

if TYPE_CHECKING:
    from spatialdata import SpatialData

MIN_TILES = 16
SMALL_MACHINE_CPUS = 4
BLANK_STD = 2.0  # pixel standard deviation (0-255) below which a tile counts as blank
BLANK_SAMPLE = 4096  # streamed tiles checked for blanks
TISSUE_FRACTION = 0.5


def _image_level0(image: Any) -> np.ndarray:
    from xarray import DataTree

    arr = next(iter(image["scale0"].values())) if isinstance(image, DataTree) else image
    return np.asarray(arr.data)


def _image_mpp(sdata: SpatialData, image_key: str) -> float | None:
    """µm per level-0 pixel of an image, from a table's spot mpp and the circles -> image transformation."""
    from spatialdata.transformations import get_transformation_between_coordinate_systems

    for table in sdata.tables.values():
        region = table.uns.get("spatialdata_attrs", {}).get("region")
        if not isinstance(region, str) or region not in sdata.shapes:
            continue
        try:
            unit_um = spot_mpp(table)
            t = get_transformation_between_coordinate_systems(sdata, sdata.shapes[region], sdata.images[image_key])
        except (ValueError, KeyError, RuntimeError):
            continue
        lin = np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)[:2, :2]
        return unit_um / float(np.sqrt(abs(np.linalg.det(lin))))
    return None


def _tile_image(rgb: np.ndarray, src_px: int) -> np.ndarray:
    """Non-overlapping ``src_px`` tiles of a ``(3, H, W)`` image that are mostly tissue (not white background)."""
    _, h, w = rgb.shape
    tiles = [rgb[:, y:y + src_px, x:x + src_px] for y in range(0, h - src_px + 1, src_px)
             for x in range(0, w - src_px + 1, src_px)]
    keep = [t for t in tiles if (t.min(axis=0) < 200).mean() >= TISSUE_FRACTION]
    return np.stack(keep) if keep else np.zeros((0, 3, src_px, src_px), np.uint8)


def _tiles_from_sdata(sdata: SpatialData, config: DiffusionConfig, patch_key: str) -> tuple[np.ndarray, str]:
    with_patches = [t for t in sdata.tables.values() if patch_key in t.obsm]
    if with_patches:
        tiles = [as_tiles(np.asarray(t.obsm[patch_key]), name=f"obsm[{patch_key!r}]") for t in with_patches]
        px = {t.shape[-1] for t in tiles}
        tiles = [resize_tiles(t, config.tile_px) for t in tiles] if len(px) > 1 else tiles
        return np.concatenate(tiles), f"{len(with_patches)} table(s) .obsm[{patch_key!r}]"
    if not sdata.images:
        raise ValueError(f"the SpatialData object has neither tables with .obsm[{patch_key!r}] nor image elements; "
                         "extract patches with c2lst.pp.extract_patches or add an image.")
    out = []
    for key, image in sdata.images.items():
        rgb = _image_level0(image)
        if rgb.ndim != 3 or rgb.shape[0] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"image {key!r} is not 8-bit RGB (c, y, x); convert it to uint8 RGB first.")
        mpp = _image_mpp(sdata, key)
        if mpp is None:
            logg.warning(f"µm/px of image {key!r} unknown; tiling it at native resolution ({config.tile_px} px tiles).")
            src = config.tile_px
        else:
            src = max(8, round(config.tile_px * config.mpp / mpp))
        out.append(resize_tiles(_tile_image(rgb, src), config.tile_px))
    return np.concatenate(out), f"{len(out)} image element(s) tiled"


def _collect_tiles(images: Any, config: DiffusionConfig, patch_key: str) -> tuple[Any, str]:
    from spatialdata import SpatialData

    streamed = False
    if isinstance(images, SpatialData):
        tiles, source = _tiles_from_sdata(images, config, patch_key)
    elif hasattr(images, "tiles"):
        # a TileStream (read_histology(lazy=True)) is read on demand and resized in the training loop
        streamed = not isinstance(images.tiles, np.ndarray) and hasattr(images.tiles, "fingerprint")
        tiles = images.tiles if streamed else as_tiles(np.asarray(images.tiles), name="images.tiles")
        source = type(images).__name__ + (" (streamed)" if streamed else "")
        mpp = getattr(images, "mpp", None)
        field_um, want_um = (mpp or 0) * tiles.shape[-1], config.tile_px * config.mpp
        if mpp is not None and abs(field_um - want_um) > 0.1 * want_um:
            logg.warning(f"the tiles span {field_um:.0f} µm but the {config.name!r} model expects {want_um:.0f} µm "
                         f"tiles; read them with read_histology(tile_um={want_um:g}).")
    elif isinstance(images, np.ndarray):
        tiles, source = as_tiles(images), "array"
    else:
        raise ValueError(f"`images` must be HistologyTiles (c2lst.io.read_histology), a SpatialData object or a uint8 "
                         f"array (n, 3, H, W); got {type(images).__name__}.")
    if streamed:  # a seeded sample stands for the stream (its tiles are never all in memory)
        sample = np.sort(np.random.default_rng(0).choice(len(tiles), min(len(tiles), BLANK_SAMPLE), replace=False))
        _warn_blank(tiles[sample], source, of=len(tiles))
    else:
        _warn_blank(tiles, source)
    if len(tiles) < MIN_TILES:
        raise ValueError(f"only {len(tiles)} tiles to pretrain on; at least {MIN_TILES} are needed (thousands for a "
                         "useful model). Add histology images.")
    return (tiles if streamed else resize_tiles(as_tiles(tiles), config.tile_px)), source


def _prepare_out(out: Path, *, resume: bool, overwrite: bool, config: DiffusionConfig,
                 run: dict[str, Any]) -> CentralModel | None:
    """Apply the rules for an existing output directory; return the finished identical run to reuse.

    Only checks: the main process then removes what ``overwrite`` replaces (:func:`_claim_out`).
    """
    if (out / MANIFEST).exists():
        meta = read_json(out / MANIFEST, what="central model")
        summary = meta.get("summary", {})
        same = meta.get("config") == config.to_dict() and all(summary.get(k) == v for k, v in run.items())
        if resume and same and not overwrite:
            return CentralModel.load(out)
        if not overwrite:
            raise ValueError(f"{out} already holds a central model ({meta.get('config', {}).get('name')!r}); pass "
                             "`overwrite=True` to replace it or choose another `out`.")
    if overwrite:
        return None
    if out.is_dir() and any(p.name != MARKER for p in out.iterdir()) and not has_checkpoints(out):
        # e.g. a store or a predictor
        raise ValueError(f"{out} already holds other c2lst output; pass `overwrite=True` to replace it or choose "
                         "another `out`.")
    if has_checkpoints(out) and not resume:
        raise ValueError(f"{out} holds checkpoints of an unfinished run; pass `resume=True` to continue it or "
                         "`overwrite=True` to start over.")
    return None


def _claim_out(out: Path, *, overwrite: bool) -> None:
    """Make ``out`` a marked c2lst folder, emptied of an earlier model and checkpoints with ``overwrite``."""
    if overwrite:
        remove_saved(out)
        remove_checkpoints(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MARKER).is_file():
        write_marker(out, "central")


def _warn_blank(tiles: np.ndarray, source: str, *, of: int | None = None) -> None:
    """Warn when tiles are blank or near-constant (background, empty scans): they teach the model nothing.

    ``of``: the size of the whole set when ``tiles`` is a sample of it.
    """
    flat = tiles.reshape(len(tiles), -1)
    std = np.concatenate([flat[i:i + 1024].astype(np.float32).std(axis=1) for i in range(0, len(flat), 1024)])
    n_blank = int((std < BLANK_STD).sum())
    if n_blank:
        counted = f"{len(tiles)} tiles" if of is None else f"a sample of {len(tiles)} of its {of} tiles"
        warnings.warn(f"{n_blank} of {counted} from {source} are blank or near-constant (pixel std below "
                      f"{BLANK_STD:g} of 255): check the images, or drop such tiles (e.g. read_histology's "
                      "`min_tissue`) before pretraining.", UserWarning, stacklevel=3)


@doc_params
def pretrain(
    images: Any,
    *,
    config: str | DiffusionConfig | None = None,
    init: CentralModel | str | Path | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    checkpoint_every: int = 500,
    mixed_precision: str | None = "auto",
    patch_key: str = "c2lst_patch",
    overwrite: bool = False,
    num_workers: int | None = None,
) -> CentralModel:
    """Pretrain the central latent-diffusion model on histology-only tiles, or refine one on more tiles.

    Phase 1 trains a small KL autoencoder (pixel L1 + image-gradient L1 + KL) on the first
    ``config.ae_fraction`` of the steps; phase 2 trains a UNet (epsilon prediction, DDPM 1000-step
    schedule, EMA) on the scaled latents of the frozen autoencoder. Tiles are augmented with random
    flips, 90° rotations and mild stain jitter. Every random draw of step ``k`` derives from
    ``(seed, k)``, so a run resumed from a checkpoint ends with exactly the weights of an
    uninterrupted run. With ``init``, phase 1 is skipped: the given central model's autoencoder and latent
    scale are kept and every step refines its UNet on the new tiles (e.g. a shared central model extended
    with tissue types it has not seen; mix in some of its original tiles to keep what it knows).

    Tiles read with ``read_histology(..., lazy=True)`` are streamed from disk (bounded memory, any number
    of slides). Started by ``accelerate launch --num_processes N`` (e.g. ``accelerate launch -m c2lst.cli
    pretrain ...``), each process trains on its own seeded batches, gradients are averaged across
    processes (effective batch N x ``batch_size``), and only the main process writes to ``out``.

    Parameters
    ----------
    images
        ``HistologyTiles`` from :func:`c2lst.io.read_histology` (its ``.tiles``, uint8 ``(n, 3, H, W)``, or
        with ``lazy=True`` a stream read from disk on demand);
        a ``SpatialData`` whose tables carry ``.obsm[patch_key]`` (else its image elements are tiled at
        the configuration's µm/px, keeping tiles that are mostly tissue); or a uint8 array
        ``(n, 3, H, W)`` / ``(n, H, W, 3)``. Tiles are resized to ``config.tile_px`` when needed.
    config
        ``"tiny"`` (tests), ``"cpu"`` (~20 min on 2 cores for recognisable H&E), ``"gpu"``, or a
        :class:`~c2lst.core.DiffusionConfig`; default ``init``'s configuration, else ``"cpu"``.
    init
        A central model (or its saved directory) to refine instead of training from scratch. Its
        configuration is used; a different ``config`` is an error.
    steps
        Optimisation steps of both phases together (at least 2; with ``init`` all of them train the UNet);
        default ``config.steps``.
    batch_size, lr
        Default from the configuration.
    {seed}
        It seeds the initialisation, batches, augmentation and noise.
    out
        Directory for checkpoints (``out/checkpoints/step-N``) and the final model (``save_pretrained``
        subfolders ``autoencoder/``, ``unet/``, ``scheduler/`` and ``c2lst_central.json``).
    resume
        Continue from the latest checkpoint in ``out`` (same images and arguments required).
    checkpoint_every
        Steps between checkpoints (only with ``out``).
    mixed_precision
        ``"auto"`` (default): bf16 autocast where the hardware runs bf16 natively (a CUDA device with bf16, a CPU
        with AVX512-BF16 or AMX: :func:`c2lst.core.runtime.native_bf16`), else fp32; on a 2-core CPU with
        AVX512-BF16 it trained the ``"cpu"`` configuration's UNet 1.44x faster end to end at the same loss
        (``benchmarks/train_throughput.py``). ``"no"``, ``"bf16"``, ``"fp16"`` (CUDA only), or ``None`` for the
        configuration's default. The precision used is recorded in ``summary["mixed_precision"]``.
    {patch_key}
        Read when ``images`` is a SpatialData object.
    overwrite
        Replace a model or checkpoints already in ``out``. ``out`` must be a new or empty folder or one c2lst
        wrote (a file or a folder of other files is refused before any training, even with ``overwrite``).
    num_workers
        Data-loader worker processes reading and augmenting batches ahead of the model; default 2, or 0
        (in this process) on machines with at most 4 CPUs. The result does not depend on it.

    Returns
    -------
    The trained :class:`~c2lst.core.CentralModel` (also saved to ``out`` when given). A refined model's
    ``summary`` records ``init_weights_sha256`` and ``init_summary`` (the starting model's record).
    """
    if init is not None and not isinstance(init, CentralModel):
        if not (Path(init) / MANIFEST).is_file():
            raise ValueError(f"`init` {str(init)!r} is not a saved central model (no {MANIFEST}); give a directory "
                             "written by CentralModel.save / tl.pretrain(out=...), or a CentralModel.")
        init = CentralModel.load(init)
    if init is not None and config is not None and get_config(config).to_dict() != init.config.to_dict():
        raise ValueError(f"`config` {get_config(config).name!r} differs from the configuration of `init` "
                         f"({init.config.name!r}); leave `config` unset to refine with init's configuration.")
    cfg = init.config if init is not None else get_config("cpu" if config is None else config)
    steps = cfg.steps if steps is None else steps
    batch_size = cfg.batch_size if batch_size is None else batch_size
    lr = cfg.lr if lr is None else lr
    mixed_precision = resolve_mixed_precision(cfg.mixed_precision if mixed_precision is None else mixed_precision)
    if not isinstance(steps, int | np.integer) or steps < 2:
        raise ValueError(f"`steps` must be an integer >= 2 (one per training phase), got {steps!r}.")
    check_optimizer_args(batch_size, lr)
    if checkpoint_every < 1:
        raise ValueError(f"`checkpoint_every` must be >= 1, got {checkpoint_every}.")
    if resume and out is None:
        raise ValueError("`resume=True` needs `out`, the directory holding the checkpoints.")
    if num_workers is not None and not (isinstance(num_workers, int | np.integer) and num_workers >= 0):
        raise ValueError(f"`num_workers` must be a non-negative integer or None, got {num_workers!r}.")
    if out is not None:  # a file, a folder c2lst did not write: refused now, not after training
        check_output(out, overwrite=True, what="`out`", allow_existing=True)
    what = "refining the central model" if init is not None else "pretraining the central model"
    start = logg.info(f"{what} ({cfg.name!r}, {steps} steps)")
    tiles, source = _collect_tiles(images, cfg, patch_key)
    if num_workers is None:  # workers pay off with cores to spare; on a few cores they slow the model down
        num_workers = 0 if (os.cpu_count() or 1) <= SMALL_MACHINE_CPUS else 2
    group = process_group()  # the processes of `accelerate launch`; only the main one writes
    out_path = None if out is None else Path(out)
    if out_path is not None:
        run = {"images_sha256": tiles_fingerprint(tiles), "steps": int(steps), "batch_size": int(batch_size),
               "lr": float(lr), "seed": int(seed), "mixed_precision": mixed_precision,
               "init_weights_sha256": None if init is None else init.weights_sha256}
        if group.num_processes > 1:
            run["num_processes"] = group.num_processes
        done = _prepare_out(out_path, resume=resume, overwrite=overwrite, config=cfg, run=run)
        group.wait_for_everyone()
        if done is not None:
            logg.info(f"    {out_path} already holds this finished run; loaded it", time=start)
            return done
        if group.is_main_process:
            _claim_out(out_path, overwrite=overwrite)
        group.wait_for_everyone()
    with torch_threads(settings.n_threads):
        model = pretrain_central(tiles, cfg, steps=int(steps), batch_size=int(batch_size), lr=float(lr),
                                 seed=int(seed), mixed_precision=mixed_precision, out=out_path, resume=resume,
                                 checkpoint_every=int(checkpoint_every), progress=settings.progress_bar, init=init,
                                 num_workers=int(num_workers))
    model.summary["source"] = source
    if out_path is not None:
        if group.is_main_process:
            model.save(out_path, overwrite=True)
        group.wait_for_everyone()
    ae = (f"autoencoder loss {model.summary['autoencoder_loss']:.4f}, " if init is None else
          f"refined from {init.weights_sha256[:12]}, ")
    logg.info(f"    trained on {len(tiles)} tiles from {source}: {ae}unet loss {model.summary['unet_loss']:.4f}",
              time=start)
    return model
