"""Central pretraining: phase 1 trains the autoencoder, phase 2 the latent UNet on the frozen autoencoder.

Refining an existing central model (``init``) skips phase 1: its autoencoder and latent scale are kept, and
its UNet is the starting point of phase 2.

The loop follows diffusers' ``train_unconditional.py`` (``accelerate.Accelerator`` for device placement
and mixed precision, AdamW, ``EMAModel``, a tqdm bar with the loss), with one difference that makes runs
resumable bit for bit: every random draw of step ``k`` (batch indices, augmentation, posterior sample,
noise, timesteps) comes from a generator seeded by ``(seed, k, process)``, and checkpoints hold the full state
(weights, EMA, optimizer moments, latent scale, loss history) as safetensors + JSON.

Tiles come from an in-memory uint8 array or any map-style dataset of uint8 ``(3, H, W)`` tiles with a
``fingerprint`` (e.g. one reading them from disk on demand). A ``torch`` ``DataLoader`` (optionally with
worker processes) reads and augments the batches of the coming steps ahead of the model. Under
``accelerate launch`` with N processes, every process draws its own batch of ``batch_size`` tiles from the
whole set (so the effective batch is N x ``batch_size``), gradients are averaged across processes, and only
the main process writes checkpoints.
"""
from __future__ import annotations

import copy
import hashlib
import math
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..files import atomic_dir, remove_temporaries, write_json
from .autoencoder import TileAutoencoder, autoencoder_loss
from .checkpoint import (
    flatten_optimizer,
    load_tensors,
    manifest_entry,
    read_json,
    save_tensors,
    unflatten_optimizer,
)
from .configs import DiffusionConfig
from .images import augment, to_model
from .models import CentralModel
from .networks import build_autoencoder, build_unet
from .runtime import make_accelerator
from .seeding import derive_seed, generator, randn

CHECKPOINTS = "checkpoints"
KEEP_CHECKPOINTS = 2
SCALE_SAMPLE = 1024
LOG_EVERY = 25  # steps between reading the losses back from the device (and checking them)


def tiles_sha256(tiles: np.ndarray) -> str:
    """Fingerprint of a uint8 tile array (shape + bytes)."""
    h = hashlib.sha256(str(tiles.shape).encode())
    h.update(np.ascontiguousarray(tiles).tobytes())
    return h.hexdigest()


def tiles_fingerprint(tiles: np.ndarray | Dataset) -> str:
    """:func:`tiles_sha256` of an array; a dataset's own ``fingerprint`` (a ``ValueError`` when it has none)."""
    if isinstance(tiles, np.ndarray):
        return tiles_sha256(tiles)
    fingerprint = getattr(tiles, "fingerprint", None)
    if not isinstance(fingerprint, str):
        raise ValueError(f"the tile dataset {type(tiles).__name__} has no `fingerprint` (a string identifying its "
                         "tiles, which resuming checks); give it one or pass a uint8 array.")
    return fingerprint


def fetch_tiles(tiles: np.ndarray | Dataset, idx: np.ndarray) -> np.ndarray:
    """uint8 tiles ``idx`` of an array or a map-style dataset (its ``__getitems__`` when it has one)."""
    if isinstance(tiles, np.ndarray):
        return tiles[idx]
    many = getattr(tiles, "__getitems__", None)
    return np.stack(many(idx.tolist()) if many is not None else [tiles[int(i)] for i in idx])


class StepBatches(Dataset):
    """Item ``k``: training step ``k``'s augmented batch (CPU) and the state of the step's generator after it.

    The batch indices and augmentation draw from ``generator(seed, "pretrain-step", k, rank)``; the rest of
    the step (posterior sample, noise, timesteps) continues that generator from the returned state, so a
    step gives the same result whether its batch was made in a loader worker or in the training process.
    """

    def __init__(self, tiles: np.ndarray | Dataset, *, seed: int, rank: int, batch_size: int, tile_px: int) -> None:
        self.tiles, self.seed, self.rank, self.batch_size, self.tile_px = tiles, seed, rank, batch_size, tile_px

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        gen = generator(self.seed, "pretrain-step", k, self.rank)
        idx = torch.randint(0, len(self.tiles), (self.batch_size,), generator=gen).numpy()
        x = to_model(fetch_tiles(self.tiles, np.sort(idx)), self.tile_px)
        return k, augment(x, gen), gen.get_state()


def process_group() -> Any:
    """``accelerate``'s ``PartialState`` of this process: one process unless started by ``accelerate launch``."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``min(warmup, total // 10 + 1)`` steps, then cosine decay to 10 % of ``base``."""
    warm = max(1, min(warmup, total // 10 + 1))
    if step < warm:
        return base * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return base * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def _seeded_init(module_fn, seed: int, key: str):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, key))
        return module_fn()


def _checkpoint_dirs(out: Path) -> list[tuple[int, Path]]:
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := re.fullmatch(r"step-(\d+)", p.name))]
    return sorted(found)


def has_checkpoints(out: Path) -> bool:
    """Whether ``out`` holds training checkpoints."""
    return bool(_checkpoint_dirs(out))


def remove_checkpoints(out: Path) -> None:
    """Delete ``out/checkpoints``."""
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


class _Run:
    """State of one pretraining run (the models, optimizers and bookkeeping that checkpoints hold)."""

    def __init__(self, tiles: np.ndarray | Dataset, config: DiffusionConfig, *, steps: int, batch_size: int,
                 lr: float, seed: int, mixed_precision: str, signature: dict[str, Any],
                 init: CentralModel | None = None, num_workers: int = 0) -> None:
        self.tiles, self.config, self.steps, self.batch_size = tiles, config, steps, batch_size
        self.lr, self.seed, self.signature, self.init, self.num_workers = lr, seed, signature, init, num_workers
        self.ae_steps = 0 if init is not None else max(1, round(config.ae_fraction * steps))
        self.accelerator = make_accelerator(mixed_precision)
        self.device = self.accelerator.device
        if self.accelerator.num_processes > 1:
            self.signature = signature | {"num_processes": self.accelerator.num_processes}
        if init is None:
            ae = _seeded_init(lambda: build_autoencoder(config), seed, "init-autoencoder")
            unet = _seeded_init(lambda: build_unet(config), seed, "init-unet")
        else:
            ae = copy.deepcopy(init.autoencoder).cpu().float()
            unet = copy.deepcopy(init.unet).cpu().float().requires_grad_(True)
        self.ae: TileAutoencoder = ae.to(self.device)
        self.unet: UNet2DModel = unet.to(self.device)
        self.noise = DDPMScheduler(**config.scheduler_config())
        self.ae_opt = torch.optim.AdamW(self.ae.parameters(), lr=lr, weight_decay=0.0)
        self.unet_opt = torch.optim.AdamW(self.unet.parameters(), lr=lr, weight_decay=0.0)
        self.ema = EMAModel(self.unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=3 / 4)
        self.ae, self.ae_opt, self.unet, self.unet_opt = self.accelerator.prepare(
            self.ae, self.ae_opt, self.unet, self.unet_opt)
        self.step = 0
        self.scaling_factor: float | None = None if init is None else init.scaling_factor
        self.losses: list[float] = []
        self.pending: list[tuple[int, str, torch.Tensor]] = []  # losses not yet read back from the device
        self.seconds = {"autoencoder": 0.0, "unet": 0.0}
        self._batches: Iterator[tuple[int, torch.Tensor, torch.Tensor]] | None = None

    # ------------------------------------------------------------------ batches
    def start_batches(self) -> None:
        """Start reading the batches of steps ``self.step`` to ``self.steps - 1`` (in loader workers, if any)."""
        data = StepBatches(self.tiles, seed=self.seed, rank=self.accelerator.process_index,
                           batch_size=self.batch_size, tile_px=self.config.tile_px)
        workers = self.num_workers
        loader = DataLoader(data, batch_size=None, sampler=range(self.step, self.steps), num_workers=workers,
                            pin_memory=self.device.type == "cuda", prefetch_factor=4 if workers else None)
        self._batches = iter(loader)

    def _batch(self, k: int) -> tuple[torch.Tensor, torch.Generator]:
        if self._batches is None:
            self.start_batches()
        step, x, state = next(self._batches)
        if step != k:
            raise RuntimeError(f"the data loader gave the batch of step {step} for step {k}")
        gen = torch.Generator(device="cpu")
        gen.set_state(state)
        return x.to(self.device, non_blocking=True), gen

    def flush_losses(self) -> None:
        """Read the pending losses back (averaged over processes) and check that they are finite."""
        if not self.pending:
            return
        values = torch.stack([loss for _, _, loss in self.pending])
        if self.accelerator.num_processes > 1:
            values = self.accelerator.reduce(values, reduction="mean")
        for (k, phase, _), loss in zip(self.pending, values.cpu().tolist(), strict=True):
            if not math.isfinite(loss):
                raise ValueError(f"the {phase} loss became {loss} at step {k}; lower `lr` or use "
                                 "mixed_precision='no'.")
            self.losses.append(loss)
        self.pending = []

    def _set_lr(self, opt: torch.optim.Optimizer, k: int, total: int) -> None:
        for group in opt.param_groups:
            group["lr"] = lr_at(k, total, self.lr, self.config.warmup_steps)

    def ae_step(self, k: int) -> torch.Tensor:
        x, gen = self._batch(k)
        self.ae.train()
        self._set_lr(self.ae_opt, k, self.ae_steps)
        with self.accelerator.autocast():
            recon, mean, logvar = self.ae(x, gen)
            loss = autoencoder_loss(x.float(), recon.float(), mean.float(), logvar.float(),
                                    grad_weight=self.config.ae_grad_weight, kl_weight=self.config.ae_kl_weight)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.ae.parameters(), 1.0)
        self.ae_opt.step()
        self.ae_opt.zero_grad(set_to_none=True)
        return loss.detach()

    @torch.no_grad()
    def measure_scaling(self) -> float:
        """1 / std of the latent means of (up to 1024, seeded) unaugmented training tiles."""
        self.ae.eval()
        gen = generator(self.seed, "scaling-sample")
        n = min(SCALE_SAMPLE, len(self.tiles))
        idx = np.sort(torch.randperm(len(self.tiles), generator=gen)[:n].numpy())
        means = [self.accelerator.unwrap_model(self.ae).encode(
            to_model(fetch_tiles(self.tiles, idx[i:i + 256]), self.config.tile_px, device=self.device))[0].float()
            for i in range(0, n, 256)]
        std = float(torch.cat(means).std())
        if not math.isfinite(std) or std <= 0:
            raise ValueError("the autoencoder produced constant or non-finite latents; train longer or check the images.")
        return 1.0 / std

    def unet_step(self, k: int) -> torch.Tensor:
        x, gen = self._batch(k)
        self.ae.eval()
        self.unet.train()
        self._set_lr(self.unet_opt, k - self.ae_steps, self.steps - self.ae_steps)
        with torch.no_grad(), self.accelerator.autocast():
            mean, logvar = self.accelerator.unwrap_model(self.ae).encode(x)
        mean, logvar = mean.float(), logvar.float()
        z = (mean + torch.exp(0.5 * logvar) * randn(mean.shape, gen, like=mean)) * self.scaling_factor
        noise = randn(z.shape, gen, like=z)
        t = torch.randint(0, self.config.num_train_timesteps, (len(z),), generator=gen).to(self.device)
        noisy = self.noise.add_noise(z, noise, t)
        with self.accelerator.autocast():
            pred = self.unet(noisy, t).sample
        loss = F.mse_loss(pred.float(), noise)
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.unet_opt.step()
        self.unet_opt.zero_grad(set_to_none=True)
        self.ema.step(self.accelerator.unwrap_model(self.unet).parameters())
        return loss.detach()

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, out: Path) -> Path:
        """Write ``out/checkpoints/step-N`` (main process only; every process waits for it)."""
        self.flush_losses()
        target = out / CHECKPOINTS / f"step-{self.step}"
        if self.accelerator.is_main_process:
            self._write_checkpoint(out, target)
        self.accelerator.wait_for_everyone()
        return target

    def _write_checkpoint(self, out: Path, target: Path) -> None:
        ae = self.accelerator.unwrap_model(self.ae)
        unet = self.accelerator.unwrap_model(self.unet)
        tensors = {f"autoencoder.{k}": v for k, v in ae.state_dict().items()}
        tensors |= {f"unet.{k}": v for k, v in unet.state_dict().items()}
        tensors |= {f"ema.{i}": p for i, p in enumerate(self.ema.shadow_params)}
        ae_opt, ae_meta = flatten_optimizer(self.ae_opt, "ae_opt")
        unet_opt, unet_meta = flatten_optimizer(self.unet_opt, "unet_opt")
        tensors |= ae_opt | unet_opt
        ema_meta = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
        with atomic_dir(target) as tmp:
            sha = save_tensors(tensors, tmp / "state.safetensors")
            write_json(tmp / "state.json", {
                "step": self.step, "signature": self.signature, "scaling_factor": self.scaling_factor,
                "losses": self.losses, "seconds": self.seconds, "ae_opt": ae_meta, "unet_opt": unet_meta,
                "ema": ema_meta, "state_sha256": sha,
            })
        for _, old in _checkpoint_dirs(out)[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)

    def load_latest(self, out: Path) -> bool:
        """Restore the newest intact checkpoint (a corrupt newer one is skipped with a warning)."""
        remove_temporaries(out / CHECKPOINTS, ".step-*.*-*")  # half-written checkpoints of a killed run
        for step, path in reversed(_checkpoint_dirs(out)):
            try:
                meta = read_json(path / "state.json", what="checkpoint")
                sha = manifest_entry(meta, "state_sha256", path / "state.json", what="checkpoint")
                if meta.get("signature") == self.signature:
                    tensors = load_tensors(path / "state.safetensors", sha256=sha, what="checkpoint")
            except ValueError as err:
                warnings.warn(f"skipping the corrupt checkpoint {path} ({err}); resuming from an older one.",
                              UserWarning, stacklevel=3)
                continue
            if meta.get("signature") != self.signature:
                diff = sorted(k for k in set(self.signature) | set(meta.get("signature", {}))
                              if self.signature.get(k) != meta.get("signature", {}).get(k))
                raise ValueError(f"the checkpoint {path} belongs to another run (different {diff}); resume with the "
                                 "same images and arguments, or pass `overwrite=True` to start over.")
            self._restore(step, meta, tensors)
            return True
        return False

    def _restore(self, step: int, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        ae = self.accelerator.unwrap_model(self.ae)
        unet = self.accelerator.unwrap_model(self.unet)
        ae.load_state_dict({k[12:]: v for k, v in tensors.items() if k.startswith("autoencoder.")}, strict=True)
        unet.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("unet.")}, strict=True)
        self.ae_opt.load_state_dict(unflatten_optimizer(tensors, meta["ae_opt"], "ae_opt"))
        self.unet_opt.load_state_dict(unflatten_optimizer(tensors, meta["unet_opt"], "unet_opt"))
        shadow = [tensors[f"ema.{i}"].to(self.device) for i in range(len(self.ema.shadow_params))]
        self.ema.load_state_dict(meta["ema"] | {"shadow_params": shadow})
        self.step, self.scaling_factor = step, meta["scaling_factor"]
        self.losses, self.seconds = list(meta["losses"]), dict(meta["seconds"])

    # ------------------------------------------------------------------ result
    def result(self) -> CentralModel:
        self.flush_losses()
        self._batches = None
        n_proc = self.accelerator.num_processes
        ae = self.accelerator.unwrap_model(self.ae)
        unet = self.accelerator.unwrap_model(self.unet)
        self.ema.copy_to(unet.parameters())
        n_ae, n_unet = self.ae_steps, self.steps - self.ae_steps
        tail = max(1, n_ae // 10), max(1, n_unet // 10)
        summary = {
            "steps": self.steps, "autoencoder_steps": n_ae, "unet_steps": n_unet, "batch_size": self.batch_size,
            "lr": self.lr, "seed": self.seed, "n_images": len(self.tiles),
            "images_sha256": self.signature["images_sha256"], "mixed_precision": self.signature["mixed_precision"],
            "unet_loss": float(np.mean(self.losses[self.steps - tail[1]:])),
            "unet_img_per_s": n_unet * self.batch_size * n_proc / max(self.seconds["unet"], 1e-9),
            "device": str(self.device),
        }
        if n_proc > 1:
            summary["num_processes"] = n_proc
        if self.init is None:
            summary["autoencoder_loss"] = float(np.mean(self.losses[n_ae - tail[0]:n_ae]))
            summary["autoencoder_img_per_s"] = n_ae * self.batch_size * n_proc / max(self.seconds["autoencoder"], 1e-9)
        else:
            # the refined model's lineage: what it started from and that model's own record
            summary["init_weights_sha256"] = self.init.weights_sha256
            summary["init_summary"] = self.init.summary
        return CentralModel(ae.cpu().float(), unet.cpu().float(), self.config, self.scaling_factor, summary)


def pretrain_central(tiles: np.ndarray | Dataset, config: DiffusionConfig, *, steps: int, batch_size: int, lr: float,
                     seed: int, mixed_precision: str, out: Path | None, resume: bool, checkpoint_every: int,
                     progress: bool, init: CentralModel | None = None, num_workers: int = 0) -> CentralModel:
    """Train a central model on uint8 tiles ``(n, 3, tile_px, tile_px)``, from scratch or refining ``init``.

    Runs as one process, or as each of the processes of ``accelerate launch`` (see the module docstring).

    Parameters
    ----------
    tiles
        Training tiles (resized to the configuration's tile size when needed): a uint8 array, or a
        map-style dataset of uint8 ``(3, H, W)`` tiles with a ``fingerprint`` string (read on demand).
    config
        Model configuration.
    steps
        Optimisation steps of both phases together (``config.ae_fraction`` of them train the autoencoder).
    batch_size, lr, seed, mixed_precision
        Optimisation settings; the seed drives initialisation and every random draw.
    out
        Directory for checkpoints (``out/checkpoints/step-N``); ``None`` disables checkpointing.
    resume
        Continue from the latest checkpoint in ``out`` (same images and arguments required).
    checkpoint_every
        Steps between checkpoints.
    progress
        Show a tqdm bar.
    init
        A central model to refine instead of training from scratch: its autoencoder and latent scale are kept
        (frozen), its UNet is the starting point, and all ``steps`` train the UNet. ``config`` must be its
        configuration.
    num_workers
        Data-loader worker processes reading and augmenting batches ahead of the model (0: in this process).
        The result does not depend on it.

    Returns
    -------
    The trained :class:`~c2lst.core.models.CentralModel` (EMA UNet weights), on the CPU. A refined model's
    summary records ``init_weights_sha256`` and ``init_summary``.
    """
    if init is not None and init.config.to_dict() != config.to_dict():
        raise ValueError(f"`init` is a {init.config.name!r} model but the configuration is {config.name!r}; refine a "
                         "central model with its own configuration (init.config).")
    if num_workers < 0:
        raise ValueError(f"`num_workers` must be >= 0, got {num_workers}.")
    signature = {"config": config.to_dict(), "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                 "mixed_precision": mixed_precision, "images_sha256": tiles_fingerprint(tiles)}
    if init is not None:
        signature["init_weights_sha256"] = init.weights_sha256
    run = _Run(tiles, config, steps=steps, batch_size=batch_size, lr=lr, seed=seed,
               mixed_precision=mixed_precision, signature=signature, init=init, num_workers=num_workers)
    if resume and out is not None:
        run.load_latest(out)
    progress = progress and run.accelerator.is_main_process
    bar = tqdm(total=steps, initial=run.step, disable=not progress, desc="pretrain", unit="step")
    while run.step < steps:
        k = run.step
        phase = "autoencoder" if k < run.ae_steps else "unet"
        if phase == "unet" and run.scaling_factor is None:
            run.scaling_factor = run.measure_scaling()
        start = time.perf_counter()
        loss = run.ae_step(k) if phase == "autoencoder" else run.unet_step(k)
        run.seconds[phase] += time.perf_counter() - start
        run.pending.append((k, phase, loss))
        run.step = k + 1
        bar.update(1)
        if run.step % LOG_EVERY == 0 or run.step == steps:
            run.flush_losses()
            bar.set_postfix(phase=phase, loss=f"{run.losses[-1]:.4f}")
        if out is not None and checkpoint_every > 0 and run.step % checkpoint_every == 0 and run.step < steps:
            run.save_checkpoint(out)
    bar.close()
    return run.result()
