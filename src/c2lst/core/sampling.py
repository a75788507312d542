"""Samplers (diffusers schedulers swapped on the central model's noise schedule) and the sampling loop."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .seeding import randn

SAMPLERS: dict[str, tuple[type[SchedulerMixin], dict[str, Any]]] = {
    "ddpm": (DDPMScheduler, {}),
    "ddim": (DDIMScheduler, {"set_alpha_to_one": True}),
    "dpmsolver++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
}


def make_scheduler(sampler: str, scheduler_config: dict[str, Any]) -> SchedulerMixin:
    """Create a fresh scheduler of kind ``sampler`` on the training noise schedule ``scheduler_config``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {sorted(SAMPLERS)}.")
    cls, extra = SAMPLERS[sampler]
    return cls.from_config(scheduler_config, **extra)


def sample_latents(eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *, sampler: str,
                   scheduler_config: dict[str, Any], steps: int, shape: Sequence[int],
                   generators: Sequence[torch.Generator], like: torch.Tensor, init: torch.Tensor | None = None,
                   strength: float = 1.0) -> torch.Tensor:
    """Run the reverse process from seeded noise, or from noised ``init`` latents (SDEdit-style).

    Parameters
    ----------
    eps_fn
        ``eps_fn(latents, t) -> predicted noise`` (guidance, if any, is inside).
    sampler
        ``"ddpm"``, ``"ddim"`` or ``"dpmsolver++"``.
    scheduler_config
        The central model's training scheduler configuration.
    steps
        Number of denoising steps.
    shape
        Latent batch shape ``(n, C, h, w)``.
    generators
        One CPU generator per sample: initial noise and any stochastic scheduler noise come from it.
    like
        Tensor giving the device and dtype of the latents.
    init
        Optional starting latents ``shape`` (e.g. encoded real tiles). With ``strength < 1`` they are noised
        to the timestep ``strength`` of the way up the schedule and only the last
        ``round(strength * steps)`` steps are run (image-to-image, Meng et al. 2022, SDEdit).
    strength
        Share of the denoising path that is run, in ``(0, 1]``; 1 starts from pure noise (``init`` unused).

    Returns
    -------
    Denoised latents (in the scaled latent space of the UNet).
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    if not 0 < strength <= 1:
        raise ValueError(f"`strength` must be in (0, 1], got {strength}.")
    if strength < 1 and init is None:
        raise ValueError("`strength` < 1 needs `init` latents to start from.")
    scheduler = make_scheduler(sampler, scheduler_config)
    scheduler.set_timesteps(steps, device=like.device)
    noise = randn(shape, generators, like=like)
    timesteps = scheduler.timesteps
    if strength < 1:
        if tuple(init.shape) != tuple(shape):
            raise ValueError(f"`init` latents have shape {tuple(init.shape)}, expected {tuple(shape)}.")
        begin = steps - max(1, round(strength * steps))
        timesteps = timesteps[begin:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(begin)
        start = timesteps[:1].repeat(shape[0]).to(like.device)
        latents = DDPMScheduler.from_config(scheduler_config).add_noise(init.to(like), noise, start)
    else:
        latents = noise * scheduler.init_noise_sigma
    gens = list(generators)
    for t in timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = eps_fn(model_input, t)
        if sampler == "ddim":
            latents = scheduler.step(eps, t, latents, eta=0.0).prev_sample
        else:
            latents = scheduler.step(eps, t, latents, generator=gens).prev_sample
    return latents
