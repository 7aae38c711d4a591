"""In-iteration deflicker: a ``LockstepSampler`` step hook (DiffSynth, arXiv 2308.03463, Sec. 3.3).

At the configured steps the hook takes the clean sample the model currently predicts for every frame,
``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``, deflickers it across the sequence and returns the noise estimate that
makes the scheduler continue from the deflickered prediction, ``eps' = (x_t - sqrt(a_t) x0') / sqrt(1 - a_t)``.

* ``space="pixel"`` (DiffSynth): decode x0 with the VAE, deflicker the images, encode again (posterior mean).
  With ``residual=True`` (default) only the change is encoded, ``x0' = x0 + E(D(I)) - E(I)`` with ``I = decode(x0)``:
  what the VAE round trip itself loses cancels out, and an identity deflicker leaves the sampler exactly unchanged.
  ``residual=False`` is DiffSynth's plain ``x0' = E(D(I))``.
* ``space="latent"``: warp the latents themselves with the motion at latent resolution (flow / 8, validity area-
  averaged, as Rerender-A-Video warps its latents); no VAE calls, so cheap enough for many steps.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Optional

import torch

from neurender.contract import DEFLICKER_SPACES

log = logging.getLogger(__name__)

ImageDeflicker = Callable[..., torch.Tensor]
"""(n, C, H, W) tensor, lo, hi -> (n, C, H, W): e.g. a ``sequence.Deflicker``."""


class DeflickerHook:
    """Step hook: at ``steps`` replace the noise estimate so that x0 becomes ``deflicker(x0)`` (see module doc)."""

    def __init__(self, deflicker: ImageDeflicker, steps: Iterable[int], space: str = "pixel",
                 residual: bool = True) -> None:
        if space not in DEFLICKER_SPACES:
            raise ValueError(f"deflicker space {space!r} is not one of {', '.join(DEFLICKER_SPACES)}")
        self.deflicker = deflicker
        self.steps = frozenset(int(s) for s in steps)
        self.space = space
        self.residual = residual
        self.calls = 0

    def __call__(self, ctx) -> Optional[torch.Tensor]:
        if ctx.step not in self.steps:
            return None
        start = time.perf_counter()
        x0 = ctx.predicted_x0()
        if self.space == "latent":
            x0_new = self.deflicker(x0.float(), float("-inf"), float("inf")).to(x0.dtype)
        else:
            sampler = ctx.sampler
            images = sampler.decode_tensor(x0).float()
            fixed = self.deflicker(images, -1.0, 1.0)
            if self.residual:
                x0_new = x0 + (sampler.encode(fixed) - sampler.encode(images)).to(x0.dtype)
            else:
                x0_new = sampler.encode(fixed).to(x0.dtype)
        self.calls += 1
        log.info("deflicker (%s) at step index %d (progress step %d): %.2f s", self.space, ctx.step, ctx.step + 1,
                 time.perf_counter() - start)
        return ctx.noise_from_x0(x0_new)
