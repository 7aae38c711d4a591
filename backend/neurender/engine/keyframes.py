"""Keyframe mode (``consistency == "keyframes"``): TokenFlow's per-step keyframes and token propagation.

TokenFlow (Geyer et al. 2023, arXiv 2307.10373, Sec. 4, Algorithm 1), per denoising step:

* keyframes: one frame drawn at random from every block of ``block`` frames, redrawn at every step (so every frame is
  sometimes a keyframe and seams between blocks move); drawn from ``(seed, step)`` so a resumed job redraws the same;
* the keyframes are denoised together in one model call with self-attention extended over all of them;
* the other frames are denoised in chunks of ``batch_size`` with every self-attention output replaced by the
  keyframes' outputs carried along correspondences (``tokenflow_attention.py``), from the nearest keyframe on either
  side, weighted linearly by distance (``keyframe_neighbours``).

Correspondences come from the renderer's passes where they exist (``tokenflow_correspondence.PassCorrespondences``),
else from nearest neighbours of the diffusion features (``FeatureCorrespondences``).

Optionally (``Img2Img``) the shot starts from the DDIM inversion of the beauty render instead of noise, with
Plug-and-Play structure injection from the source branch during the early steps (``inversion.py``, ``pnp.py``).

``KeyframeStrategy`` is the ``keyframes`` implementation of the consistency-strategy protocol (``strategy.py``);
step hooks (the deflicker) still see and may replace the noise estimates of all frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from neurender.engine.attention import CrossFrameState
from neurender.engine.pnp import Img2Img
from neurender.engine.tokenflow_attention import KeyframeContext, keyframe_attention
from neurender.engine.tokenflow_correspondence import Correspondences, FeatureCorrespondences

if TYPE_CHECKING:  # the sampler imports strategy.py, which builds this strategy; annotations only
    from neurender.engine.sampler import LockstepSampler

log = logging.getLogger(__name__)

DEFAULT_BLOCK = 8


def pick_keyframes(frames: int, block: int, seed: int, step: int) -> list[int]:
    """One random frame position of every block of ``block`` consecutive frames, reproducible from (seed, step)."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(step)])
    return [s + int(rng.integers(0, min(block, frames - s))) for s in range(0, frames, max(1, block))]


def keyframe_neighbours(frame: int, keyframes: Sequence[int]) -> list[tuple[int, float]]:
    """The nearest keyframe at or before and at or after ``frame`` with weights falling linearly with distance.

    A keyframe is its own neighbour with weight 1; at the ends of the shot the one keyframe on the inner side has
    weight 1. Between keyframes a and b: ``w_a = (b - f) / (b - a)``, ``w_b = (f - a) / (b - a)``.
    """
    before = [k for k in keyframes if k <= frame]
    after = [k for k in keyframes if k >= frame]
    if not before and not after:
        raise ValueError("no keyframes")
    if not before or not after:
        return [((before or after)[-1 if before else 0], 1.0)]
    a, b = max(before), min(after)
    if a == b:
        return [(a, 1.0)]
    return [(a, (b - frame) / (b - a)), (b, (frame - a) / (b - a))]


@dataclass
class KeyframeStrategy:
    """Replaces the sampler's per-step grouping with keyframes + propagation (see module docstring).

    ``correspondences``: a ``PassCorrespondences``/``FeatureCorrespondences`` (None: feature nearest neighbours).
    ``img2img``: an ``Img2Img`` (DDIM inversion of the source frames + optional PnP), or None to start from noise.
    """

    block: int = DEFAULT_BLOCK
    correspondences: Optional[Correspondences] = None
    img2img: Optional[Img2Img] = None
    last_keyframes: list[int] = field(default_factory=list)
    name = "keyframes"
    cross_frame = True
    takes_anchors = False

    def __post_init__(self) -> None:
        if self.block < 1:
            raise ValueError("keyframe block must be at least 1")
        if self.correspondences is None:
            self.correspondences = FeatureCorrespondences()
        self.ctx: Optional[KeyframeContext] = None

    # --- the strategy protocol (engine/strategy.py) ----------------------------------------------------------
    def attention(self, sampler: "LockstepSampler", models: list, state: CrossFrameState) -> keyframe_attention:
        """Context manager installing the keyframe processors on every ``attn1`` of ``models``."""
        vsf = sampler.pipe.vae_scale_factor
        size = (sampler.height // vsf, sampler.width // vsf)
        self.ctx = KeyframeContext(cross=state, latent_size=size, correspondences=self.correspondences)
        return keyframe_attention(models, self.ctx)

    def prepare(self, sampler: "LockstepSampler", latents: torch.Tensor, timesteps) -> tuple[torch.Tensor, int]:
        """Initial latents and first step: noise from step 0, or the inverted source frames (img2img)."""
        if self.img2img is None:
            return latents, 0
        return self.img2img.prepare(sampler, latents, timesteps)

    def noise_prediction(self, sampler: "LockstepSampler", latents: torch.Tensor, t, i: int,
                         n_steps: int) -> torch.Tensor:
        ctx = self.ctx
        n = latents.shape[0]
        keys = pick_keyframes(n, self.block, sampler.options.seed, i)
        self.last_keyframes = keys
        ctx.keyframes = keys
        ctx.neighbours = {p: keyframe_neighbours(p, keys) for p in range(n)}
        pnp = self.img2img.pnp_active(i, n_steps) if self.img2img is not None else (False, False)
        ctx.phase = "keyframes"
        sampler.reference_passes(latents, t, i, n_steps)  # the reference image, if any (no shared anchors here)
        out = torch.zeros_like(latents)
        others = [p for p in range(n) if p not in keys]
        groups = [(keys, "keyframes")] + [
            (others[s : s + sampler.options.batch_size], "propagate")
            for s in range(0, len(others), sampler.options.batch_size)
        ]
        for positions, phase in groups:
            sampler.check_stop()
            if any(pnp):
                ctx.phase = "keyframes" if phase == "keyframes" else "plain"
                self.img2img.record_source(sampler, positions, t, i, pnp, ctx)
            ctx.phase = phase
            ctx.pnp_mode = "inject" if pnp[1] else None
            with self.img2img.injecting(pnp[0]) if self.img2img is not None else _nothing():
                out[positions] = sampler.evaluate(positions, latents[positions], t, i, n_steps)
            ctx.pnp_mode = None
        ctx.phase = "off"
        return out


class _nothing:  # noqa: N801
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def keyframe_strategy(folder, frames: Sequence[int], width: int, height: int, *, block: int = DEFAULT_BLOCK,
                      img2img: Optional[Img2Img] = None) -> KeyframeStrategy:
    """The strategy for a render job: exact correspondences from the pass folder (render size) where possible."""
    from neurender.engine.tokenflow_correspondence import correspondences_for

    corr = correspondences_for(folder, frames, height, width)
    log.info("keyframe mode: block %d, %s correspondences", block,
             "exact pass" if not corr.needs_features else "feature nearest-neighbour")
    return KeyframeStrategy(block=block, correspondences=corr, img2img=img2img)
