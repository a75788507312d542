"""Local adaptation: gene-conditioned modulation (and optional LoRA) of a frozen central model, local decoder.

The modulation learns how expression shapes morphology; with the lab's unlabelled tissue tiles an unconditional
local component of it learns the local morphology; a copy of the central decoder learns the local stain and
texture (the central weights never change).
"""
from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from .autoencoder import TileAutoencoder, autoencoder_loss
from .images import augment, to_model
from .models import CentralModel, LocalModel, add_lora
from .modulation import GeneModulation
from .runtime import make_accelerator
from .seeding import derive_seed, generator, randn
from .training import lr_at


def adapt_local(central: CentralModel, patches: np.ndarray, genes: np.ndarray, panel: dict[str, Any], *,
                steps: int, batch_size: int, lr: float, cond_dropout: float, lora_rank: int, seed: int,
                decoder_steps: int = 0, mixed_precision: str = "no", progress: bool = False,
                tissue: np.ndarray | None = None, tissue_share: float = 0.5,
                local_unconditional: bool | None = None, n_comps: int = 0) -> LocalModel:
    """Fit a gene adapter on paired spots; the central weights are never updated.

    Each step draws a batch of spots (seeded by ``(seed, k)``), applies random flips/90° rotations,
    encodes the patches with the frozen autoencoder (posterior sample), noises the latents and trains
    the zero-initialised modulation to predict the noise. With probability ``cond_dropout`` a sample's
    modulation is switched off (it then gets the central prediction), which enables classifier-free
    guidance at generation. With ``decoder_steps > 0`` a copy of the central decoder is then fine-tuned on
    the same patches (:func:`adapt_decoder`), so that generated latents decode in the local stain and
    texture.

    With ``tissue`` (unlabelled tiles of the lab's own images) the modulation gets an unconditional,
    zero-initialised local component (``GeneModulation(local=True)``), applied to every sample; each batch
    then holds ``round(tissue_share * batch_size)`` tissue tiles (at least one, and at least one spot is left),
    drawn seeded by ``(seed, k)``, trained as unconditional samples (gene conditioning dropped), and the local
    decoder is fine-tuned on the spot patches and the tissue tiles together. Without ``tissue`` every draw
    is the one of an adaptation without it.

    Parameters
    ----------
    central
        Frozen central model.
    patches
        uint8 ``(n, 3, tile_px, tile_px)`` spot patches.
    genes
        ``(n, n_genes)`` standardised panel expression of the same spots.
    panel
        ``GenePanel.to_dict()`` stored with the adapter.
    steps, batch_size, lr
        Optimisation settings (AdamW, warm-up + cosine).
    cond_dropout
        Probability of dropping a sample's conditioning.
    lora_rank
        Rank of additional LoRA adapters on the UNet (0: none; needs peft).
    seed
        Seed of the initialisation and of every random draw.
    decoder_steps
        Steps of local decoder fine-tuning (0: decode with the central decoder).
    mixed_precision
        ``"no"`` or ``"bf16"``/``"fp16"``.
    progress
        Show a tqdm bar.
    tissue
        uint8 ``(m, 3, H, W)`` unlabelled tissue tiles (resized to the tile size), or ``None``.
    tissue_share
        Share of each batch taken by tissue tiles, in ``(0, 1)``; used only with ``tissue``.
    local_unconditional
        Give the modulation its unconditional local component (``GeneModulation(local=True)``), trained with
        every sample, so that the gene-conditioned part learns what is specific to a profile and classifier-free
        guidance contrasts a profile with the locally adapted model instead of the central one. ``None``: only
        with ``tissue``.
    n_comps
        The gene encoder reads this many whitened principal-component scores of the profile, fitted on ``genes``
        (``GeneModulation(n_comps=)``, :meth:`~c2lst.core.modulation.GeneModulation.fit_projection`); 0: the
        standardised panel itself.

    Returns
    -------
    The :class:`~c2lst.core.models.LocalModel`.
    """
    has_tissue = tissue is not None and len(tissue) > 0
    if has_tissue and not 0 < tissue_share < 1:
        raise ValueError(f"`tissue_share` must be in (0, 1), got {tissue_share}.")
    if has_tissue and batch_size < 2:
        raise ValueError(f"training on tissue tiles needs `batch_size` >= 2 (spots and tiles in each batch), got "
                         f"{batch_size}.")
    with_local = has_tissue if local_unconditional is None else bool(local_unconditional)
    n_tissue = min(batch_size - 1, max(1, math.floor(tissue_share * batch_size + 0.5))) if has_tissue else 0
    n_spots = batch_size - n_tissue
    accelerator = make_accelerator(mixed_precision)
    device = accelerator.device
    central.to(device)
    cfg = central.config
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init-modulation"))
        modulation = GeneModulation.for_unet(central.unet, genes.shape[1], hidden=cfg.gene_hidden,
                                             cond_dim=cfg.cond_dim, local=with_local,
                                             n_comps=n_comps).to(device)
        if n_comps:
            modulation.fit_projection(torch.from_numpy(np.asarray(genes, dtype=np.float32)).to(device))
        lora_unet = add_lora(central.unet, lora_rank).to(device) if lora_rank > 0 else None
    params = list(modulation.parameters())
    if lora_unet is not None:
        params += [p for p in lora_unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    # accelerate owns the optimiser step (gradient scaling under fp16) and the modules' placement; in one process
    # the prepared modules are the modules themselves, which the LocalModel keeps (unwrapped)
    if lora_unet is None:
        modulation, opt = accelerator.prepare(modulation, opt)
    else:
        modulation, lora_unet, opt = accelerator.prepare(modulation, lora_unet, opt)
        lora_unet = accelerator.unwrap_model(lora_unet, keep_fp32_wrapper=False)
    modulation = accelerator.unwrap_model(modulation, keep_fp32_wrapper=False)
    local = LocalModel(central, modulation, panel, lora_rank=lora_rank, lora_unet=lora_unet)
    x_all = to_model(patches, cfg.tile_px, device=device)
    g_all = torch.from_numpy(np.asarray(genes, dtype=np.float32)).to(device)
    t_all = to_model(tissue, cfg.tile_px, device=device) if has_tissue else None
    noise_sched = DDPMScheduler.from_config(central.scheduler_config)
    losses: list[float] = []
    modulation.train()
    if lora_unet is not None:
        lora_unet.train()
    began = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="adapt", unit="step")
    for k in bar:
        gen = generator(seed, "adapt-step", k, accelerator.process_index)
        idx = torch.randint(0, len(x_all), (n_spots,), generator=gen).to(device)
        x, g = x_all[idx], g_all[idx]
        if t_all is not None:  # unlabelled tissue tiles: unconditional samples at the end of the batch
            tgen = generator(seed, "adapt-tissue", k, accelerator.process_index)
            x = torch.cat([x, t_all[torch.randint(0, len(t_all), (n_tissue,), generator=tgen).to(device)]])
            g = torch.cat([g, torch.zeros(n_tissue, g.shape[1], device=device)])
        x = augment(x, gen, stain_jitter=0.0)
        with torch.no_grad():
            mean, logvar = central.autoencoder.encode(x)
        z = (mean + torch.exp(0.5 * logvar) * randn(mean.shape, gen, like=mean)) * central.scaling_factor
        noise = randn(z.shape, gen, like=z)
        t = torch.randint(0, cfg.num_train_timesteps, (batch_size,), generator=gen).to(device)
        keep = (torch.rand(batch_size, generator=gen) >= cond_dropout).float().to(device)
        keep[n_spots:] = 0.0  # tissue tiles have no expression
        for group in opt.param_groups:
            group["lr"] = lr_at(k, steps, lr, cfg.warmup_steps)
        with accelerator.autocast():
            pred = local.eps(noise_sched.add_noise(z, noise, t), t, g, keep)
        loss = F.mse_loss(pred.float(), noise)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)  # unscales fp16 gradients before clipping
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise ValueError(f"the adaptation loss became {value} at step {k}; lower `lr`.")
        losses.append(value)
        bar.set_postfix(loss=f"{value:.4f}")
    seconds = time.perf_counter() - began
    modulation.eval()
    if lora_unet is not None:
        lora_unet.eval()
    tail = max(1, steps // 10)
    local.summary = {
        "steps": steps, "batch_size": batch_size, "lr": lr, "cond_dropout": cond_dropout, "lora_rank": lora_rank,
        "seed": seed, "n_spots": len(x_all), "loss_first": float(np.mean(losses[:tail])),
        "loss_last": float(np.mean(losses[-tail:])), "seconds": seconds,
        "img_per_s": steps * batch_size / max(seconds, 1e-9), "device": str(device), "decoder_steps": decoder_steps,
        "local_unconditional": with_local, "n_comps": n_comps,
    }
    if t_all is not None:
        local.summary |= {"n_tissue": len(t_all), "tissue_share": tissue_share, "tissue_per_batch": n_tissue}
    if decoder_steps > 0:
        tiles = x_all if t_all is None else torch.cat([x_all, t_all])
        local.decoder, decoder_summary = adapt_decoder(central.autoencoder, tiles, steps=decoder_steps,
                                                       batch_size=batch_size, lr=lr, grad_weight=cfg.ae_grad_weight,
                                                       seed=seed, accelerator=accelerator, progress=progress)
        local.summary["decoder"] = decoder_summary
    return local


def adapt_decoder(autoencoder: TileAutoencoder, tiles: torch.Tensor, *, steps: int, batch_size: int, lr: float,
                  grad_weight: float, seed: int, accelerator: Any, progress: bool = False) -> tuple[TileAutoencoder, dict[str, Any]]:
    """Fine-tune the decoder of a copy of ``autoencoder`` to reconstruct local tiles; the encoder stays frozen.

    The encoder (and so the latent space the central UNet diffuses in) is unchanged, so the same latents
    now decode in the local stain, palette and texture. Loss: pixel L1 + image-gradient L1 (the KL term
    is constant with a frozen encoder), on flipped/rotated tiles, posterior samples of the frozen encoder.

    Parameters
    ----------
    autoencoder
        The central autoencoder (not modified).
    tiles
        Model-space tiles ``(n, 3, tile_px, tile_px)`` in ``[-1, 1]`` on the training device.
    steps, batch_size, lr
        Optimisation settings (AdamW, warm-up + cosine).
    grad_weight
        Weight of the image-gradient term (the central configuration's ``ae_grad_weight``).
    seed
        Seed of every random draw.
    accelerator
        The ``accelerate.Accelerator`` of the adaptation (device, ``prepare``, autocast, backward, clipping).
    progress
        Show a tqdm bar.

    Returns
    -------
    ``(adapted autoencoder copy, summary)``; the summary holds steps, first/last loss and seconds.
    """
    local = copy.deepcopy(autoencoder).to(tiles.device)
    local.encoder.requires_grad_(False)
    local.decoder.requires_grad_(True).train()
    params = list(local.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    decoder, opt = accelerator.prepare(local.decoder, opt)
    local.decoder = accelerator.unwrap_model(decoder, keep_fp32_wrapper=False)
    losses: list[float] = []
    began = time.perf_counter()
    for k in tqdm(range(steps), disable=not progress, desc="adapt decoder", unit="step"):
        gen = generator(seed, "decoder-step", k, accelerator.process_index)
        idx = torch.randint(0, len(tiles), (batch_size,), generator=gen).to(tiles.device)
        x = augment(tiles[idx], gen, stain_jitter=0.0)
        with torch.no_grad():
            mean, logvar = local.encode(x)
        z = mean + torch.exp(0.5 * logvar) * randn(mean.shape, gen, like=mean)
        for group in opt.param_groups:
            group["lr"] = lr_at(k, steps, lr, min(100, steps // 10))
        with accelerator.autocast():
            recon = local.decode(z)
        loss = autoencoder_loss(x, recon.float(), mean, logvar, grad_weight=grad_weight, kl_weight=0.0)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    local.decoder.eval().requires_grad_(False)
    tail = max(1, steps // 10)
    return local, {"steps": steps, "loss_first": float(np.mean(losses[:tail])),
                   "loss_last": float(np.mean(losses[-tail:])), "seconds": time.perf_counter() - began}
