"""Conversions between a noisy sample, the model's output and the predicted clean sample.

The model output is the noise ``eps`` (epsilon prediction, SD 1.5) or the velocity ``v`` (v-prediction fine-tunes),
as the scheduler's ``config.prediction_type`` says.

For variance-preserving schedulers (DDIM, DPM-Solver++, LCM, TCD), with ``a = alphas_cumprod[t]``:
    eps:  x0 = (x_t - sqrt(1 - a) * eps) / sqrt(a)        (Ho et al. 2020, eq. 15)
    v:    x0 = sqrt(a) * x_t - sqrt(1 - a) * v             (Salimans & Ho 2022, "Progressive Distillation", Sec. 4)
(DiffSynth, arXiv 2308.03463, Sec. 3.3 uses the epsilon pair around its in-iteration deflicker.)
For k-diffusion-style schedulers (Euler ancestral), x_t = x0 + sigma * eps (Karras et al. 2022, eq. 1 with s=1), and
for v-prediction x0 = x_t / (sigma^2 + 1) - sigma * v / sqrt(sigma^2 + 1) (the same v in the sigma parametrisation).
Each ``*_from_x0`` is the exact inverse: the model output that makes ``predict_x0`` return that ``x0``.
"""

from __future__ import annotations

import torch

from neurender.engine.schedulers import uses_sigmas

PREDICTIONS = ("epsilon", "v_prediction")


def prediction_type(scheduler) -> str:
    """``epsilon`` or ``v_prediction``; anything else (``sample``) is refused rather than converted wrongly."""
    kind = getattr(scheduler.config, "prediction_type", "epsilon") or "epsilon"
    if kind not in PREDICTIONS:
        raise ValueError(f"prediction type {kind!r} is not supported (epsilon or v_prediction)")
    return kind


def _sigma(scheduler, timestep) -> torch.Tensor:
    index = scheduler.step_index
    if index is None:
        index = scheduler.index_for_timestep(timestep)
    return scheduler.sigmas[index]


def _alpha(scheduler, timestep) -> torch.Tensor:
    t = int(timestep)
    return scheduler.alphas_cumprod[t]


def _coefficients(scheduler, sample: torch.Tensor, timestep) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_x, c_out)`` with ``x0 = c_x * x_t + c_out * model_output`` for this scheduler, step and prediction type."""
    v = prediction_type(scheduler) == "v_prediction"
    if uses_sigmas(scheduler):
        sigma = _sigma(scheduler, timestep).to(sample.device, torch.float32)
        if v:
            return 1 / (sigma**2 + 1), -sigma / (sigma**2 + 1).sqrt()
        return torch.ones_like(sigma), -sigma
    a = _alpha(scheduler, timestep).to(sample.device, torch.float32)
    if v:
        return a.sqrt(), -(1 - a).sqrt()
    return 1 / a.sqrt(), -(1 - a).sqrt() / a.sqrt()


def predict_x0(scheduler, sample: torch.Tensor, output: torch.Tensor, timestep) -> torch.Tensor:
    """The clean sample the model currently predicts from its ``output`` (eps or v)."""
    c_x, c_out = _coefficients(scheduler, sample, timestep)
    return (c_x * sample.float() + c_out * output.float()).to(sample.dtype)


def eps_from_x0(scheduler, sample: torch.Tensor, x0: torch.Tensor, timestep) -> torch.Tensor:
    """The model output (eps or v, as the scheduler expects) that makes ``predict_x0`` return ``x0``."""
    c_x, c_out = _coefficients(scheduler, sample, timestep)
    return ((x0.float() - c_x * sample.float()) / c_out).to(sample.dtype)


def eps_from_v(v: torch.Tensor, sample: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """The noise a v-prediction output implies for a variance-preserving ``sample`` at ``alpha_cumprod``:
    ``eps = sqrt(a) * v + sqrt(1 - a) * x_t`` (Salimans & Ho 2022)."""
    a = alpha_cumprod.to(sample.device, torch.float32)
    return a.sqrt() * v.float() + (1 - a).sqrt() * sample.float()
