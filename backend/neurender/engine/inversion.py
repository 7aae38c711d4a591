"""Deterministic DDIM inversion of clean latents (Song et al. 2021, arXiv 2010.02502, eq. 12 run backwards).

DDIM with eta 0 is an ODE discretisation, so it can be run from a clean latent towards noise
(Dhariwal & Nichol 2021, Sec. 4.5; Mokady et al. 2023 "Null-text inversion", Sec. 3): from level s to the next,
noisier level t,

    eps = unet(x_s, t),   x0 = (x_s - sqrt(1 - a_s) eps) / sqrt(a_s),   x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps

(``a`` = alphas_cumprod, a = 1 for the clean start), the same approximation TokenFlow's ``preprocess.py`` uses
(guidance 1, i.e. one conditional pass with the source prompt, default 500 steps there). The latents on the way up are
the *source branch* that Plug-and-Play injects from (``pnp.py``).
"""

from __future__ import annotations

import logging
from typing import Iterable

import torch

from neurender.engine.prediction import eps_from_v

log = logging.getLogger(__name__)


def inversion_timesteps(num_train_timesteps: int, steps: int, until: int, extra: Iterable[int] = ()) -> list[int]:
    """Ascending timesteps of a ``steps``-step even grid up to ``until`` (inclusive), merged with ``extra``."""
    steps = max(1, int(steps))
    ratio = num_train_timesteps // steps
    grid = {k * ratio + 1 for k in range(steps) if k * ratio + 1 <= until}
    grid |= {int(t) for t in extra if int(t) <= until}
    grid.add(int(until))
    return sorted(grid)


def _noise(unet, x: torch.Tensor, t: int, cond: torch.Tensor, a_t: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The UNet's noise estimate for ``x`` at ``t`` (its velocity converted for v-prediction models)."""
    out = unet(x.to(unet.dtype), t, encoder_hidden_states=cond, return_dict=False)[0].float()
    if prediction_type == "v_prediction":
        return eps_from_v(out, x, a_t.float())
    if prediction_type != "epsilon":
        raise ValueError(f"prediction type {prediction_type!r} is not supported by the inversion")
    return out


def ddim_invert(
    unet,
    alphas_cumprod: torch.Tensor,
    latents: torch.Tensor,
    embeds: torch.Tensor,
    timesteps: list[int],
    *,
    record: Iterable[int] = (),
    batch_size: int = 4,
    should_stop=None,
    prediction_type: str = "epsilon",
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Invert clean ``latents`` (n, C, h, w) along ascending ``timesteps``; ``embeds`` (1, L, D) text condition.

    ``prediction_type`` ``v_prediction``: the UNet's velocity is turned into the noise it implies at ``t`` first.

    Returns the latents at the last timestep and ``{t: latents at t}`` for every ``t`` in ``record``.
    """
    keep = {int(t) for t in record}
    recorded: dict[int, torch.Tensor] = {}
    out = []
    with torch.no_grad():
        for s in range(0, latents.shape[0], batch_size):
            x = latents[s : s + batch_size].float()
            cond = embeds.expand(x.shape[0], -1, -1)
            a_prev = torch.tensor(1.0, dtype=torch.float64)
            for t in timesteps:
                if should_stop is not None:
                    should_stop()
                a_t = alphas_cumprod[int(t)].double()
                eps = _noise(unet, x, int(t), cond, a_t, prediction_type)
                x0 = (x - (1 - a_prev).sqrt().float() * eps) / a_prev.sqrt().float()
                x = a_t.sqrt().float() * x0 + (1 - a_t).sqrt().float() * eps
                a_prev = a_t
                if int(t) in keep:
                    recorded.setdefault(int(t), []).append(x.clone())
            out.append(x)
    final = torch.cat(out).to(latents.dtype)
    return final, {t: torch.cat(parts).to(latents.dtype) for t, parts in recorded.items()}


def ddim_reconstruct(unet, alphas_cumprod, x_t: torch.Tensor, embeds: torch.Tensor, timesteps: list[int],
                     batch_size: int = 4, prediction_type: str = "epsilon") -> torch.Tensor:
    """The forward DDIM (eta 0) from ``x_t`` down along descending ``timesteps`` to clean latents (for tests)."""
    out = []
    with torch.no_grad():
        for s in range(0, x_t.shape[0], batch_size):
            x = x_t[s : s + batch_size].float()
            cond = embeds.expand(x.shape[0], -1, -1)
            for k, t in enumerate(timesteps):
                a_t = alphas_cumprod[int(t)].double()
                a_next = alphas_cumprod[int(timesteps[k + 1])].double() if k + 1 < len(timesteps) else torch.tensor(1.0)
                eps = _noise(unet, x, int(t), cond, a_t, prediction_type)
                x0 = (x - (1 - a_t).sqrt().float() * eps) / a_t.sqrt().float()
                x = a_next.double().sqrt().float() * x0 + (1 - a_next.double()).sqrt().float() * eps
            out.append(x)
    return torch.cat(out).to(x_t.dtype)
