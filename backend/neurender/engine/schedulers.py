"""Scheduler names of the contract mapped onto diffusers' schedulers (built from the checkpoint's own config).

* ``ddim``      DDIM, Song et al. 2021 (eta 0: deterministic).
* ``euler_a``   Euler ancestral, Karras et al. 2022 / k-diffusion ``sample_euler_ancestral``.
* ``dpmpp_2m``  DPM-Solver++(2M), Lu et al. 2022, Algorithm 2 (multistep, second order).
* ``lcm``       Latent Consistency Model multistep sampling, Luo et al. 2023 (arXiv 2310.04378), Algorithm 1: each
                step predicts x0 with the consistency function and re-noises it to the next timestep. Meant for 2-8
                steps with an LCM-distilled model or an LCM-LoRA, guidance ~1-2 (1 turns classifier-free guidance off).
* ``tcd``       Trajectory Consistency Distillation, Zheng et al. 2024 (arXiv 2402.19159), Strategic Stochastic
                Sampling (eq. 9): ``eta`` is the paper's gamma (0 deterministic, 1 fully stochastic; default 0.3).
                For TCD / Hyper-SD LoRAs, 2-8 steps.

Both few-step schedulers accept at most ``FEW_STEP_MAX_STEPS`` steps (their ``original_inference_steps`` skipping
schedule of 50 distillation timesteps).
"""

from __future__ import annotations

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    LCMScheduler,
    TCDScheduler,
)

from neurender.errors import InputError

FEW_STEP_MAX_STEPS = 50
TCD_DEFAULT_GAMMA = 0.3


def make_scheduler(name: str, config):
    """A fresh scheduler of kind ``name`` from a scheduler ``config`` (e.g. ``pipe.scheduler.config``)."""
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    if name == "lcm":
        return LCMScheduler.from_config(config)
    if name == "tcd":
        return TCDScheduler.from_config(config)
    raise InputError(f"unknown scheduler {name!r}")


def default_eta(name: str) -> float:
    """The ``eta`` handed to ``scheduler.step`` when the settings give none: 0 (DDIM as the pipeline), TCD's gamma 0.3."""
    return TCD_DEFAULT_GAMMA if name == "tcd" else 0.0


def uses_sigmas(scheduler) -> bool:
    """True for k-diffusion-style schedulers whose sample is x0 + sigma * eps (scaled before the UNet)."""
    return isinstance(scheduler, EulerAncestralDiscreteScheduler)
