"""Scheduler names of the contract mapped onto diffusers' schedulers (built from the checkpoint's own config).

* ``ddim``      DDIM, Song et al. 2021 (eta 0: deterministic).
* ``euler_a``   Euler ancestral, Karras et al. 2022 / k-diffusion ``sample_euler_ancestral``.
* ``dpmpp_2m``  DPM-Solver++(2M), Lu et al. 2022, Algorithm 2 (multistep, second order).
"""

from __future__ import annotations

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

from neurender.errors import InputError


def make_scheduler(name: str, config):
    """A fresh scheduler of kind ``name`` from a scheduler ``config`` (e.g. ``pipe.scheduler.config``)."""
    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", solver_order=2)
    raise InputError(f"unknown scheduler {name!r}")


def uses_sigmas(scheduler) -> bool:
    """True for k-diffusion-style schedulers whose sample is x0 + sigma * eps (scaled before the UNet)."""
    return isinstance(scheduler, EulerAncestralDiscreteScheduler)
