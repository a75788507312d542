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
                   generators: Sequence[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Run the reverse process from seeded noise.

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

    Returns
    -------
    Denoised latents (in the scaled latent space of the UNet).
    """
    if steps < 1:
        raise ValueError(f"`steps` must be >= 1, got {steps}.")
    scheduler = make_scheduler(sampler, scheduler_config)
    scheduler.set_timesteps(steps, device=like.device)
    latents = randn(shape, generators, like=like) * scheduler.init_noise_sigma
    gens = list(generators)
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = eps_fn(model_input, t)
        if sampler == "ddim":
            latents = scheduler.step(eps, t, latents, eta=0.0).prev_sample
        else:
            latents = scheduler.step(eps, t, latents, generator=gens).prev_sample
    return latents
