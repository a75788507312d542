"""The central model (autoencoder + latent UNet + noise schedule) and local models (central + gene adapter)."""
from __future__ import annotations

import copy
import hashlib
import shutil
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm

from ..files import atomic_dir, check_output, write_json
from .autoencoder import TileAutoencoder
from .checkpoint import (
    load_module,
    load_tensors,
    manifest_entry,
    read_json,
    save_module,
    save_tensors,
    sha256_file,
    state_sha256,
)
from .conditioning import denoising_errors
from .configs import DiffusionConfig
from .images import as_tiles, resize_tiles, to_model, to_uint8
from .modulation import GeneModulation
from .networks import unet_features
from .recipe import check_guidance_reference
from .sampling import sample_latents
from .seeding import generator, randn

MANIFEST = "c2lst_central.json"
FORMAT = "c2lst-central/1"
CENTRAL_CONFIGS = ("autoencoder/config.json", "unet/config.json", "scheduler/scheduler_config.json")
CENTRAL_KEEP = ("checkpoints", "README.md", "samples.png", "training.json")  # kept when a model is replaced


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class CentralModel:
    """Pretrained central latent-diffusion model (frozen): autoencoder, UNet, noise schedule, latent scale.

    Parameters
    ----------
    autoencoder
        Trained :class:`~c2lst.core.autoencoder.TileAutoencoder`.
    unet
        Trained ``UNet2DModel`` (EMA weights) predicting the noise of scaled latents.
    config
        The :class:`~c2lst.core.configs.DiffusionConfig` it was built from.
    scaling_factor
        Latents are multiplied by it before diffusion (1 / std of the training latents).
    summary
        Training summary (steps, images, losses, throughput), JSON-safe.
    """

    def __init__(self, autoencoder: TileAutoencoder, unet: UNet2DModel, config: DiffusionConfig,
                 scaling_factor: float, summary: dict[str, Any] | None = None) -> None:
        self.autoencoder = autoencoder.eval().requires_grad_(False)
        self.unet = unet.eval().requires_grad_(False)
        self.config = config
        self.scaling_factor = float(scaling_factor)
        self.summary = dict(summary or {})
        self.scheduler_config = dict(DDPMScheduler(**config.scheduler_config()).config)

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return next(self.unet.parameters()).device

    def to(self, device: str | torch.device) -> CentralModel:
        """Move the networks to ``device`` (in place); return ``self``."""
        self.autoencoder.to(device)
        self.unet.to(device)
        return self

    @property
    def tile_px(self) -> int:
        """Side of the tiles the model works on (pixels)."""
        return self.config.tile_px

    @property
    def n_params(self) -> int:
        """Parameters of autoencoder + UNet."""
        return _count(self.autoencoder) + _count(self.unet)

    @cached_property
    def weights_sha256(self) -> str:
        """Fingerprint of the weights and latent scale (format-independent)."""
        scale = {"scaling_factor": torch.tensor([self.scaling_factor], dtype=torch.float64)}
        return state_sha256(self.autoencoder.state_dict(), self.unet.state_dict(), scale)

    def identity(self) -> dict[str, Any]:
        """``{"config": ..., "weights_sha256": ...}``: what adapters record and check."""
        return {"config": self.config.to_dict(), "weights_sha256": self.weights_sha256}

    def __repr__(self) -> str:
        c = self.config
        return (f"CentralModel(config={c.name!r}, tiles={c.tile_px}px @ {c.mpp:g} µm/px, "
                f"latent={c.latent_channels}x{c.latent_px}x{c.latent_px}, autoencoder={_count(self.autoencoder):,} "
                f"params, unet={_count(self.unet):,} params {tuple(c.unet_channels)}, "
                f"trained_steps={self.summary.get('steps', 0)}, device={self.device})")

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def encode(self, tiles: torch.Tensor) -> torch.Tensor:
        """Scaled latent means of model-space tiles ``(n, 3, tile_px, tile_px)`` in ``[-1, 1]``."""
        return self.autoencoder.encode(tiles)[0] * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, autoencoder: TileAutoencoder | None = None) -> np.ndarray:
        """uint8 tiles ``(n, 3, tile_px, tile_px)`` from scaled latents.

        ``autoencoder``: decode with another autoencoder sharing this latent space (a local decoder).
        """
        return to_uint8((autoencoder or self.autoencoder).decode(latents / self.scaling_factor))

    @torch.no_grad()
    def reconstruct(self, patches: np.ndarray, *, batch_size: int = 64,
                    autoencoder: TileAutoencoder | None = None) -> np.ndarray:
        """Encode and decode RGB patches with the autoencoder (no diffusion): the realism ceiling of generation.

        Every generated tile is decoded by this autoencoder, so its reconstructions of real patches bound how
        real a generated tile can look.

        Parameters
        ----------
        patches
            uint8 ``(n, 3, H, W)`` (or ``(n, H, W, 3)``) RGB patches.
        batch_size
            Patches per forward pass.
        autoencoder
            Decode with another autoencoder sharing this latent space (a local decoder).

        Returns
        -------
        uint8 ``(n, 3, H, W)`` reconstructions at the patches' own size (resized to and from the tile size).
        """
        tiles = as_tiles(patches, name="patches")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        out = []
        for start in range(0, len(tiles), batch_size):
            z = self.encode(to_model(tiles[start:start + batch_size], self.tile_px, device=self.device))
            out.append(self.decode(z, autoencoder=autoencoder))
        return resize_tiles(np.concatenate(out), tiles.shape[-1])

    @torch.no_grad()
    def features(self, patches: np.ndarray, *, t: int = 50, batch_size: int = 64, seed: int = 0) -> np.ndarray:
        """Diffusion features of RGB patches for downstream predictors.

        Each patch is resized to the model's tile size, encoded with the autoencoder (latent mean),
        noised to timestep ``t`` (noise seeded by ``seed`` and the patch's own bytes, so a patch gets the same
        features wherever it sits in ``patches``), and passed through the
        UNet's down blocks and mid block; each block output is global-average-pooled and the pooled
        vectors are concatenated.

        Parameters
        ----------
        patches
            uint8 ``(n, 3, H, W)`` (or ``(n, H, W, 3)``) RGB patches.
        t
            Diffusion timestep (0 = clean latents; small values keep the image content).
        batch_size
            Patches per forward pass (the noise of a patch does not depend on it; results agree up to
            float rounding).
        seed
            Seed of the noise.

        Returns
        -------
        ``(n, F)`` float32 features, ``F = sum(unet_channels) + unet_channels[-1]``.
        """
        return self.pooled_features(patches, partial(unet_features, self.unet), t=t, batch_size=batch_size, seed=seed)

    @torch.no_grad()
    def pooled_features(self, patches: np.ndarray, pooled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                        t: int = 50, batch_size: int = 64, seed: int = 0) -> np.ndarray:
        """:meth:`features` with another network reading the noisy latents.

        The patches are encoded and noised exactly as in :meth:`features`; ``pooled(latents, timesteps)`` returns
        the ``(n, F)`` features (e.g. :meth:`LocalModel.features` reads them with the adapted UNet). ``t``,
        ``batch_size``, ``seed``: as in :meth:`features`.
        """
        tiles = as_tiles(patches, name="patches")
        if not 0 <= t < self.config.num_train_timesteps:
            raise ValueError(f"`t` must be in [0, {self.config.num_train_timesteps}), got {t}.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        scheduler = DDPMScheduler.from_config(self.scheduler_config)
        out = []
        for start in range(0, len(tiles), batch_size):
            x = to_model(tiles[start:start + batch_size], self.tile_px, device=self.device)
            z = self.encode(x)
            chunk = tiles[start:start + batch_size]
            gens = [generator(seed, "features", hashlib.sha256(tile.tobytes()).hexdigest()) for tile in chunk]
            timesteps = torch.full((len(z),), t, dtype=torch.long, device=z.device)
            noisy = scheduler.add_noise(z, randn(z.shape, gens, like=z), timesteps)
            out.append(pooled(noisy, timesteps).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``autoencoder/``, ``unet/`` (``save_pretrained``), ``scheduler/`` and ``c2lst_central.json``.

        The whole folder is written next to ``path`` and swapped in at once (:func:`c2lst.files.atomic_dir`), so an
        interrupted save leaves the old model loadable; the manifest holds the config, scaling factor, summary and
        the sha256 of the weights and of every file. ``overwrite=True`` replaces only a folder c2lst wrote
        (:func:`c2lst.files.check_output`); saving the same weights again is a no-op.

        Returns
        -------
        The model directory.
        """
        path = Path(path)
        same = False
        if (path / MANIFEST).is_file() and not overwrite:
            existing = read_json(path / MANIFEST, what="central model")
            if existing.get("weights_sha256") != self.weights_sha256:
                raise ValueError(f"{path} already holds a different central model; pass `overwrite=True` or "
                                 "choose another directory.")
            same = True  # the same model again: rewriting it changes nothing
        check_output(path, overwrite=overwrite or same, what="model directory")
        files: dict[str, str] = {}
        # one atomic swap of the whole folder: an interrupted save leaves the old model loadable
        with atomic_dir(path, kind="central", keep=CENTRAL_KEEP) as tmp:
            files["autoencoder"] = save_module(self.autoencoder, tmp / "autoencoder")
            files["unet"] = save_module(self.unet, tmp / "unet")
            DDPMScheduler.from_config(self.scheduler_config).save_pretrained(str(tmp / "scheduler"))
            for rel in CENTRAL_CONFIGS:
                files[rel] = sha256_file(tmp / rel)
            write_json(tmp / MANIFEST, {
                "format": FORMAT, "config": self.config.to_dict(), "scaling_factor": self.scaling_factor,
                "tile_px": self.tile_px, "mpp": self.config.mpp, "summary": self.summary,
                "weights_sha256": self.weights_sha256, "files_sha256": files,
            })
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device | None = None) -> CentralModel:
        """Load a directory written by :meth:`save` (checks every file's sha256 and the weights fingerprint)."""
        path = Path(path)
        meta = read_json(path / MANIFEST, what="central model")
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path / MANIFEST} has format {meta.get('format')!r}, expected {FORMAT!r}: not a c2lst "
                             "central model. Pass a folder written by CentralModel.save or `c2lst pretrain`.")
        config = DiffusionConfig.from_dict(manifest_entry(meta, "config", path / MANIFEST, what="central model"))
        files = manifest_entry(meta, "files_sha256", path / MANIFEST, what="central model")
        for key in ("autoencoder", "unet"):
            manifest_entry(files, key, path / MANIFEST, what="central model")
        for rel, sha in files.items():  # the configurations (recorded since 0.x; weights are checked below)
            if "/" in rel and (not (path / rel).is_file() or sha256_file(path / rel) != sha):
                raise ValueError(f"{path / rel} is missing or does not match its sha256 in {MANIFEST} (truncated or "
                                 "modified file): the central model is corrupt. Copy or save it again.")
        ae = load_module(TileAutoencoder, path / "autoencoder", sha256=files["autoencoder"], what="central model")
        unet = load_module(UNet2DModel, path / "unet", sha256=files["unet"], what="central model")
        model = cls(ae, unet, config, meta["scaling_factor"], meta.get("summary"))
        if model.weights_sha256 != meta["weights_sha256"]:
            raise ValueError(f"the weights in {path} do not match the fingerprint in {MANIFEST}: corrupt model.")
        return model.to(device) if device is not None else model


def remove_saved(path: str | Path) -> None:
    """Delete a saved central model (manifest first, so a partial removal never looks complete)."""
    path = Path(path)
    (path / MANIFEST).unlink(missing_ok=True)
    for sub in ("autoencoder", "unet", "scheduler"):
        shutil.rmtree(path / sub, ignore_errors=True)


LOCAL_MANIFEST = "c2lst_local.json"
LOCAL_WEIGHTS = "adapter.safetensors"
LOCAL_FORMAT = "c2lst-local/1"
LORA_TARGETS = ("conv1", "conv2", "to_q", "to_k", "to_v", "to_out.0")


def _load_prefixed(module: torch.nn.Module, state: dict[str, torch.Tensor], prefix: str, what: str) -> None:
    """Load the ``prefix``-ed tensors of ``state`` into ``module`` (strict); a mismatch is a ``ValueError``."""
    try:
        module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{what} do not fit: {err}") from None


def add_lora(unet: UNet2DModel, rank: int) -> UNet2DModel:
    """Copy ``unet`` and add zero-initialised LoRA adapters (peft) on its ResNet convs and attention."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise ValueError("`lora_rank > 0` needs the peft package (pip install 'c2lst[lora]'); or use "
                         "lora_rank=0 (modulation only).") from None
    names = [n for n, _ in unet.named_modules()]
    targets = [t for t in LORA_TARGETS if any(n == t or n.endswith("." + t) for n in names)]
    lora = copy.deepcopy(unet)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets, init_lora_weights=True), lora)
    for name, p in lora.named_parameters():
        p.requires_grad_("lora_" in name)
    return lora


class LocalModel:
    """A central model adapted to one lab's paired (patch, expression) spots.

    The central networks stay frozen and shared; the adapter is a gene encoder with zero-initialised
    modulation (:class:`~c2lst.core.modulation.GeneModulation`, with an unconditional local component when
    adapted on tissue tiles), optionally LoRA weights on a copy of the UNet, and optionally a locally
    fine-tuned copy of the autoencoder's decoder (the encoder, and so the latent space the UNet works in,
    stays the central one).

    Parameters
    ----------
    central
        The frozen :class:`CentralModel`.
    modulation
        Trained gene modulation.
    panel
        ``GenePanel.to_dict()`` of the conditioning genes (JSON-safe; carries ``"identity"``).
    lora_rank
        Rank of the LoRA adapters (0: none).
    lora_unet
        The UNet copy carrying LoRA weights (``None`` when ``lora_rank == 0``).
    decoder
        A copy of the central autoencoder whose decoder was fine-tuned on the local patches
        (:func:`~c2lst.core.adaptation.adapt_decoder`); ``None``: decode with the central autoencoder.
    summary
        Adaptation summary (steps, spots, losses, arguments), JSON-safe.
    """

    def __init__(self, central: CentralModel, modulation: GeneModulation, panel: dict[str, Any], *,
                 lora_rank: int = 0, lora_unet: UNet2DModel | None = None,
                 decoder: TileAutoencoder | None = None, summary: dict[str, Any] | None = None) -> None:
        self.central = central
        self.modulation = modulation.to(central.device).eval()
        self.panel = dict(panel)
        self.lora_rank = int(lora_rank)
        self.lora_unet = lora_unet.eval() if lora_unet is not None else None
        self.decoder = decoder.eval().requires_grad_(False) if decoder is not None else None
        self.summary = dict(summary or {})

    @classmethod
    def unadapted(cls, central: CentralModel) -> LocalModel:
        """Wrap the central model alone: a one-gene, zero-initialised modulation that changes nothing.

        Its :meth:`generate` (with ``guidance_scale=0`` and any profile of one gene) draws unconditional
        samples of the central model, e.g. to measure the central model's own fidelity.
        """
        return cls(central, GeneModulation.for_unet(central.unet, 1, hidden=1, cond_dim=1), {"genes": ["none"]})

    @property
    def unet(self) -> UNet2DModel:
        """The UNet the adapter modulates (the central one, or its LoRA copy)."""
        return self.lora_unet if self.lora_unet is not None else self.central.unet

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.central.device

    def to(self, device: str | torch.device) -> LocalModel:
        """Move central networks and adapter to ``device``; return ``self``."""
        self.central.to(device)
        self.modulation.to(device)
        if self.lora_unet is not None:
            self.lora_unet.to(device)
        if self.decoder is not None:
            self.decoder.to(device)
        return self

    @property
    def n_genes(self) -> int:
        """Panel size."""
        return len(self.panel["genes"])

    def adapter_state(self) -> dict[str, torch.Tensor]:
        """Return the trainable tensors: ``modulation.*``, ``lora.*`` and local ``decoder.*`` weights."""
        state = {f"modulation.{k}": v for k, v in self.modulation.state_dict().items()}
        if self.lora_unet is not None:
            state |= {f"lora.{k}": v for k, v in self.lora_unet.state_dict().items() if "lora_" in k}
        if self.decoder is not None:
            state |= {f"decoder.{k}": v for k, v in self.decoder.decoder.state_dict().items()}
        return state

    @property
    def n_trainable(self) -> int:
        """Parameters of the adapter (gene-conditioned part and local decoder)."""
        return sum(v.numel() for v in self.adapter_state().values())

    @property
    def n_conditioned(self) -> int:
        """Parameters of the gene-conditioned part of the adapter (modulation and LoRA; not the decoder)."""
        return sum(v.numel() for k, v in self.adapter_state().items() if not k.startswith("decoder."))

    def __repr__(self) -> str:
        c = self.central.config
        share, conditioned = self.n_trainable / self.central.n_params, self.n_conditioned / self.central.n_params
        return (f"LocalModel(central={c.name!r} {self.central.weights_sha256[:12]}, panel={self.n_genes} genes, "
                f"adapter={self.n_trainable:,} params ({share:.2%} of central; gene-conditioned {conditioned:.2%}), "
                f"lora_rank={self.lora_rank}, "
                f"local_decoder={self.decoder is not None}, tiles={c.tile_px}px, "
                f"trained_steps={self.summary.get('steps', 0)}, device={self.device})")

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """uint8 tiles from scaled latents, with the local decoder when there is one."""
        return self.central.decode(latents, autoencoder=self.decoder)

    def reconstruct(self, patches: np.ndarray, *, batch_size: int = 64) -> np.ndarray:
        """:meth:`CentralModel.reconstruct` with the local decoder when there is one."""
        return self.central.reconstruct(patches, batch_size=batch_size, autoencoder=self.decoder)

    def identity(self) -> dict[str, Any]:
        """``{"central": ..., "adapter_sha256": ...}``: what a predictor reading :meth:`features` records and checks."""
        return {"central": self.central.identity(), "adapter_sha256": state_sha256(self.adapter_state())}

    @torch.no_grad()
    def features(self, patches: np.ndarray, *, t: int = 50, batch_size: int = 64, seed: int = 0) -> np.ndarray:
        """Diffusion features of RGB patches from the locally adapted model, without any expression profile.

        :meth:`CentralModel.features` (same encoding, noise and pooling) read by the adapted UNet: the LoRA copy
        when there is one, with the modulation's unconditional local component and the gene conditioning off
        (the profile is what a predictor is to find). An adapter without local component or LoRA gives the
        central model's features exactly.

        Parameters
        ----------
        patches, t, batch_size, seed
            As in :meth:`CentralModel.features`.

        Returns
        -------
        ``(n, F)`` float32 features, ``F = sum(unet_channels) + unet_channels[-1]``.
        """

        def pooled(latents: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
            off = torch.zeros(len(latents), device=latents.device)
            with self.modulation.applied(self.unet, torch.zeros(len(latents), self.n_genes, device=latents.device), off):
                return unet_features(self.unet, latents, timesteps)

        return self.central.pooled_features(patches, pooled, t=t, batch_size=batch_size, seed=seed)

    # ------------------------------------------------------------------ prediction
    def eps(self, latents: torch.Tensor, t: torch.Tensor, genes: torch.Tensor,
            keep: torch.Tensor | None = None) -> torch.Tensor:
        """Predicted noise of scaled ``latents`` at ``t`` given standardised ``genes`` (keep=0: unconditional).

        The unconditional prediction is the central model's, plus the local component when the modulation has one.
        """
        with self.modulation.applied(self.unet, genes, keep):
            return self.unet(latents, t).sample

    def _genes(self, genes: np.ndarray) -> torch.Tensor:
        arr = np.asarray(genes, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != self.n_genes:
            raise ValueError(f"conditioning expression has shape {arr.shape}, expected (n, {self.n_genes}) "
                             "standardised panel genes.")
        if not np.isfinite(arr).all():
            raise ValueError("conditioning expression contains NaN or infinite values; fill or drop those profiles.")
        return torch.from_numpy(arr).to(self.device)

    @torch.no_grad()
    def generate(self, genes: np.ndarray, *, seeds: Sequence[int], sampler: str = "dpmsolver++", steps: int = 20,
                 guidance_scale: float = 2.0, guidance_reference: str = "unconditional", batch_size: int = 64,
                 init_tiles: np.ndarray | None = None, strength: float = 1.0, progress: bool = False) -> np.ndarray:
        """Sample one tile per standardised expression profile.

        Parameters
        ----------
        genes
            ``(n, n_genes)`` standardised panel expression (``GenePanel.standardize``).
        seeds
            One seed per profile: the initial noise and any sampler noise of tile ``i`` come from
            ``torch.Generator().manual_seed(seeds[i])`` (so tiles do not depend on batching).
        sampler
            ``"dpmsolver++"``, ``"ddim"`` or ``"ddpm"``.
        steps
            Denoising steps.
        guidance_scale
            Classifier-free guidance ``eps_r + g (eps_c - eps_r)`` against the reference prediction ``eps_r``; 1 =
            conditional only, 0 = the reference alone.
        guidance_reference
            The reference branch of guidance (diffusers' negative prompt): ``"unconditional"`` (the gene modulation
            off: the central model, or with a local component the local-unconditional model) or ``"mean"`` (the
            mean training profile, standardised zero), so that guidance amplifies only what sets a profile apart
            from the average spot, not the modulation's common part.
        batch_size
            Profiles per batch.
        init_tiles
            With ``strength < 1``: one uint8 RGB tile per profile to start from (image-to-image): its latent
            is noised to ``strength`` of the schedule and denoised under the profile's conditioning.
        strength
            Share of the denoising path run, in ``(0, 1]``; 1 (default) samples from pure noise.
        progress
            Show a tqdm bar over batches.

        Returns
        -------
        uint8 tiles ``(n, 3, tile_px, tile_px)``.
        """
        g = self._genes(genes)
        check_guidance_reference(guidance_reference)
        seeds = [int(s) for s in seeds]
        if len(seeds) != len(g):
            raise ValueError(f"{len(seeds)} seeds for {len(g)} profiles; pass one seed per profile.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if strength < 1:  # the range of `strength` is checked by sample_latents
            if init_tiles is None:
                raise ValueError("`strength` < 1 needs `init_tiles` (one starting tile per profile).")
            init_tiles = as_tiles(init_tiles, name="init_tiles")
            if len(init_tiles) != len(g):
                raise ValueError(f"{len(init_tiles)} init_tiles for {len(g)} profiles; pass one tile per profile.")
        c = self.central.config
        like = torch.empty(0, device=self.device)
        out = []
        for start in tqdm(range(0, len(g), batch_size), disable=not progress, desc="generate", unit="batch"):
            gb = g[start:start + batch_size]
            n = len(gb)

            # the reference branch: the modulation off (unconditional) or on for the mean profile (zero)
            ref_genes, ref_keep = ((gb, torch.zeros(n, device=gb.device)) if guidance_reference == "unconditional"
                                   else (torch.zeros_like(gb), torch.ones(n, device=gb.device)))

            def eps_fn(x: torch.Tensor, t: torch.Tensor, gb: torch.Tensor = gb, ref_genes: torch.Tensor = ref_genes,
                       ref_keep: torch.Tensor = ref_keep) -> torch.Tensor:
                if guidance_scale == 1.0:
                    return self.eps(x, t, gb)
                if guidance_scale == 0.0:
                    return self.eps(x, t, ref_genes, ref_keep)
                keep = torch.cat([torch.ones_like(ref_keep), ref_keep])
                cond, ref = self.eps(torch.cat([x, x]), t, torch.cat([gb, ref_genes]), keep).chunk(2)
                return ref + guidance_scale * (cond - ref)

            gens = [torch.Generator().manual_seed(s) for s in seeds[start:start + n]]
            init = (self.central.encode(to_model(init_tiles[start:start + n], c.tile_px, device=self.device))
                    if strength < 1 else None)
            latents = sample_latents(eps_fn, sampler=sampler, scheduler_config=self.central.scheduler_config,
                                     steps=steps, shape=(n, c.latent_channels, c.latent_px, c.latent_px),
                                     generators=gens, like=like, init=init, strength=strength)
            out.append(self.decode(latents))
        return np.concatenate(out)

    def denoising_loss(self, patches: np.ndarray, genes: np.ndarray, *, seed: int = 0, n_draws: int = 8,
                       conditional: bool = True) -> float:
        """Mean noise-prediction MSE on (patch, expression) pairs, with seeded timesteps and noise.

        Timestep and noise of draw ``j`` of pair ``i`` come from ``(seed, i, j)``, so two calls on the same
        patches compare conditionings on identical noise. ``conditional=False`` scores the unconditional model
        (the central one, with the local component when there is one).

        Returns
        -------
        The mean squared error over pairs, draws and latent elements (the mean of :meth:`denoising_losses`).
        """
        losses, _ = self.denoising_losses(patches, genes, seed=seed, n_draws=n_draws, conditional=conditional)
        return float(losses.mean())

    def denoising_losses(self, patches: np.ndarray, genes: np.ndarray, *, seed: int = 0, n_draws: int = 8,
                         conditional: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Noise-prediction MSE of every pair and draw, with the timestep it was drawn at.

        The draws are those of :meth:`denoising_loss` (seeded by ``(seed, i, j)``), so losses can be compared
        per timestep range between conditionings (:func:`c2lst.core.conditioning.denoising_errors` with
        ``timesteps="random"``).

        Returns
        -------
        ``(losses, timesteps)``, both ``(n_pairs, n_draws)``: the MSE over latent elements and the timestep.
        """
        if len(self._genes(genes)) != len(patches):  # checked even when unconditional
            raise ValueError(f"{len(patches)} patches but {len(genes)} expression profiles.")
        errors, steps = denoising_errors(self, patches, [genes if conditional else None], n_draws=n_draws, seed=seed,
                                         timesteps="random", batch_size=max(1, len(patches)))
        return errors[0], steps

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write ``adapter.safetensors`` + ``c2lst_local.json`` (central identity, panel, settings) atomically.

        Returns
        -------
        The adapter directory.
        """
        path = check_output(path, overwrite=overwrite, what="adapter directory")
        with atomic_dir(path, kind="adapter") as tmp:
            sha = save_tensors(self.adapter_state(), tmp / LOCAL_WEIGHTS)
            write_json(tmp / LOCAL_MANIFEST, {
                "format": LOCAL_FORMAT, "central": self.central.identity(), "panel": self.panel,
                "modulation": self.modulation_settings(), "lora_rank": self.lora_rank,
                "local_decoder": self.decoder is not None, "summary": self.summary, "adapter_sha256": sha,
            })
        return path

    def modulation_settings(self) -> dict[str, int | bool]:
        """Gene-encoder widths, PCA input and local component (what :meth:`load` rebuilds the modulation from)."""
        enc = self.modulation.encoder
        return {"n_genes": self.modulation.n_genes, "hidden": enc[0].out_features, "cond_dim": enc[2].out_features,
                "local": self.modulation.local, "n_comps": self.modulation.n_comps}

    @classmethod
    def load(cls, path: str | Path, central: CentralModel, *, panel: Any = None) -> LocalModel:
        """Load an adapter saved by :meth:`save` onto ``central``.

        Parameters
        ----------
        path
            Adapter directory.
        central
            The central model it was adapted from (checked: configuration and weights sha256).
        panel
            Optional ``GenePanel`` the data is expected to use (checked against the adapter's panel).

        Returns
        -------
        The :class:`LocalModel`.
        """
        path = Path(path)
        meta = read_json(path / LOCAL_MANIFEST, what="local adapter")
        if meta.get("format") != LOCAL_FORMAT:
            raise ValueError(f"{path / LOCAL_MANIFEST} has format {meta.get('format')!r}, expected {LOCAL_FORMAT!r}: "
                             "not a c2lst adapter. Pass a folder written by LocalModel.save or `c2lst adapt`.")
        for key in ("central", "panel", "modulation", "lora_rank", "summary", "adapter_sha256"):
            manifest_entry(meta, key, path / LOCAL_MANIFEST, what="local adapter")
        if meta["central"] != central.identity():
            raise ValueError(f"the adapter in {path} was trained on another central model (weights "
                             f"{meta['central']['weights_sha256'][:12]}, config {meta['central']['config']['name']!r}), "
                             f"not on this one ({central.weights_sha256[:12]}); load it with its own central model.")
        if panel is not None and panel.identity() != meta["panel"].get("identity"):
            raise ValueError(f"the adapter in {path} was trained on another gene panel; use its panel "
                             "(LocalModel.panel) or adapt a new model for this one.")
        state = load_tensors(path / LOCAL_WEIGHTS, sha256=meta["adapter_sha256"], what="local adapter")
        s = meta["modulation"]
        modulation = GeneModulation.for_unet(central.unet, s["n_genes"], hidden=s["hidden"], cond_dim=s["cond_dim"],
                                             local=bool(s.get("local", False)),  # older adapters have none
                                             n_comps=int(s.get("n_comps", 0)))
        _load_prefixed(modulation, state, "modulation.", f"the adapter weights in {path}")
        lora_unet = None
        if meta["lora_rank"] > 0:
            lora_unet = add_lora(central.unet, meta["lora_rank"])
            lora = {k[5:]: v for k, v in state.items() if k.startswith("lora.")}
            missing = [k for k, _ in lora_unet.named_parameters() if "lora_" in k and k not in lora]
            if missing:
                raise ValueError(f"the adapter in {path} lacks LoRA weights {missing[:3]}: corrupt adapter.")
            lora_unet.load_state_dict(lora, strict=False)
        decoder = None
        if meta.get("local_decoder", False):
            decoder = copy.deepcopy(central.autoencoder)
            _load_prefixed(decoder.decoder, state, "decoder.", f"the local decoder weights in {path}")
        return cls(central, modulation.to(central.device), meta["panel"], lora_rank=meta["lora_rank"],
                   lora_unet=None if lora_unet is None else lora_unet.to(central.device),
                   decoder=None if decoder is None else decoder.to(central.device), summary=meta["summary"])
