"""Conversions between a noisy sample, the noise estimate and the predicted clean sample.

For variance-preserving schedulers (DDIM, DPM-Solver++): Ho et al. 2020, eq. 15,
    x0 = (x_t - sqrt(1 - a_t) * eps) / sqrt(a_t),     eps = (x_t - sqrt(a_t) * x0) / sqrt(1 - a_t)
(DiffSynth, arXiv 2308.03463, Sec. 3.3 uses exactly this pair around its in-iteration deflicker).
For k-diffusion-style schedulers (Euler ancestral), x_t = x0 + sigma * eps (Karras et al. 2022, eq. 1 with s=1).
Only epsilon-prediction models (SD 1.5) are supported.
"""

from __future__ import annotations

import torch

from neurender.engine.schedulers import uses_sigmas


def _sigma(scheduler, timestep) -> torch.Tensor:
    index = scheduler.step_index
    if index is None:
        index = scheduler.index_for_timestep(timestep)
    return scheduler.sigmas[index]


def _alpha(scheduler, timestep) -> torch.Tensor:
    t = int(timestep)
    return scheduler.alphas_cumprod[t]


def predict_x0(scheduler, sample: torch.Tensor, eps: torch.Tensor, timestep) -> torch.Tensor:
    """The clean sample the model currently predicts."""
    if uses_sigmas(scheduler):
        sigma = _sigma(scheduler, timestep).to(sample.device, torch.float32)
        return (sample.float() - sigma * eps.float()).to(sample.dtype)
    a = _alpha(scheduler, timestep).to(sample.device, torch.float32)
    return ((sample.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()).to(sample.dtype)


def eps_from_x0(scheduler, sample: torch.Tensor, x0: torch.Tensor, timestep) -> torch.Tensor:
    """The noise estimate that makes ``predict_x0`` return ``x0`` for this sample and step."""
    if uses_sigmas(scheduler):
        sigma = _sigma(scheduler, timestep).to(sample.device, torch.float32)
        return ((sample.float() - x0.float()) / sigma).to(sample.dtype)
    a = _alpha(scheduler, timestep).to(sample.device, torch.float32)
    return ((sample.float() - a.sqrt() * x0.float()) / (1 - a).sqrt()).to(sample.dtype)
