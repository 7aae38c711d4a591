"""AnimateDiff motion module over overlapping context windows of the shot.

AnimateDiff (Guo et al. 2023, arXiv 2307.04725) adds temporal transformer layers to the image UNet; they attend across
the frames of one batch, and were trained on 16-frame clips (``motion_max_seq_length`` positions at most). A longer
shot is denoised, at every step, over overlapping context windows of ``context_length`` frames (stride
``context_length - context_overlap``, the last window aligned to the end), each window in ONE model call with frame
positions 0..L-1, and the noise estimates of frames covered by several windows are averaged with pyramid weights
``w_i = min(i + 1, L - i)`` (FreeNoise, Qiu et al. 2023, arXiv 2310.15169, Sec. 3.3; AnimateDiff-Evolved's "pyramid"
fuse): highest in a window's middle, lowest at its edges, so a seam never comes from one window's last frame alone.
Memory is bounded by the context length, whatever the shot length: only the latents of the whole shot are held.

Per window the body is the sampler's own (``LockstepSampler._evaluate``: CFG layout, ControlNet residuals computed
per frame as diffusers' ``AnimateDiffControlNetPipeline`` does, guidance), with the motion UNet called on the video
layout (batch, channels, frames, h, w). With one window, consistency off and no fixed noise, a render equals that
pipeline for the same components, seed and scheduler: the initial noise and any stochastic scheduler noise are drawn
in its (1, C, F, h, w) layout (``prepare``, ``scheduler_step``); tests/backend/test_motion_windows.py checks it.

The cross-frame attention of ``first``/``first+prev`` (and the reference image / shared farm anchors) still applies: the
motion UNet shares the 2D UNet's spatial attention modules and their processors (models/motion.py ``motion_unet``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from neurender.engine.attention import cross_frame_attention
from neurender.contract import ANCHOR_MODES
from neurender.engine.strategy import window_groups
from neurender.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 16
DEFAULT_CONTEXT_OVERLAP = 4


def context_windows(frames: int, length: int, overlap: int) -> list[list[int]]:
    """Frame positions of every context window; one window when the shot fits, the last aligned to the end."""
    if length < 1 or not (0 <= overlap < length):
        raise ValueError(f"context length {length} / overlap {overlap}: need length >= 1 and 0 <= overlap < length")
    return window_groups(frames, length, length - overlap)


def pyramid_weights(length: int) -> torch.Tensor:
    """FreeNoise's pyramid blending weights of one window: 1, 2, ..., peak, ..., 2, 1."""
    return torch.tensor([float(min(i + 1, length - i)) for i in range(length)])


def blend_windows(
    frames: int, windows: list[list[int]], predict, like: torch.Tensor
) -> torch.Tensor:
    """Weighted average over ``windows`` of ``predict(positions) -> (len(positions), ...)`` per frame.

    A frame covered by one window takes that window's estimate unchanged (no weight arithmetic)."""
    if len(windows) == 1:
        return predict(windows[0])
    out = torch.zeros_like(like)
    weight_sum = torch.zeros(frames, device=like.device, dtype=like.dtype)
    for positions in windows:
        w = pyramid_weights(len(positions)).to(like.device, like.dtype)
        pred = predict(positions)
        out[positions] += pred * w.reshape(-1, *([1] * (pred.ndim - 1)))
        weight_sum[positions] += w
    if torch.any(weight_sum == 0):
        raise ValueError("context windows leave frames uncovered")
    return out / weight_sum.reshape(-1, *([1] * (out.ndim - 1)))


class VideoUNet:
    """The motion UNet behind the 2D UNet's call signature: (cfg*n, C, h, w) in and out, frames grouped per call."""

    def __init__(self, motion_unet: Any, cfg: int) -> None:
        self.unet = motion_unet
        self.cfg = cfg

    def __call__(self, sample, timestep, encoder_hidden_states=None, down_block_additional_residuals=None,
                 mid_block_additional_residual=None, timestep_cond=None, return_dict=False):
        n = sample.shape[0] // self.cfg
        video = sample.reshape(self.cfg, n, *sample.shape[1:]).permute(0, 2, 1, 3, 4)
        out = self.unet(
            video,
            timestep,
            encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=down_block_additional_residuals,
            mid_block_additional_residual=mid_block_additional_residual,
            timestep_cond=timestep_cond,
            return_dict=False,
        )[0]
        return (out.permute(0, 2, 1, 3, 4).reshape(sample.shape),)


def _video(x: torch.Tensor) -> torch.Tensor:
    """(F, C, h, w) -> (1, C, F, h, w)."""
    return x.permute(1, 0, 2, 3).unsqueeze(0)


def _frames(x: torch.Tensor) -> torch.Tensor:
    """(1, C, F, h, w) -> (F, C, h, w)."""
    return x[0].permute(1, 0, 2, 3).contiguous()


@dataclass
class MotionWindows:
    """The consistency strategy of a motion-module render (engine/strategy.py protocol), passed as
    ``LockstepSampler(strategy=...)``. ``name`` is the cross-frame attention mode on top of the temporal layers
    (``off``, ``first``, ``first+prev``: the settings' consistency)."""

    motion_unet: Any
    context_length: int = DEFAULT_CONTEXT_LENGTH
    context_overlap: int = DEFAULT_CONTEXT_OVERLAP
    name: str = "off"

    @property
    def cross_frame(self) -> bool:
        return self.name != "off"

    @property
    def takes_anchors(self) -> bool:
        return self.name in ANCHOR_MODES

    def __post_init__(self) -> None:
        positions = int(self.motion_unet.config.get("motion_max_seq_length") or 32)
        if self.context_length > positions:
            raise InputError(
                f"context length {self.context_length} exceeds the motion module's {positions} frame positions; "
                f"use --context-length {positions} or less (16 is what AnimateDiff was trained on)"
            )
        context_windows(1, self.context_length, self.context_overlap)  # validates

    def windows(self, frames: int) -> list[list[int]]:
        return context_windows(frames, self.context_length, self.context_overlap)

    # --- strategy interface (LockstepSampler) --------------------------------------------------------------------
    def prepare(self, sampler, latents: torch.Tensor, timesteps):
        """Per-frame noise reinterpreted in the video layout the AnimateDiff pipeline draws: one (1, C, F, h, w)
        tensor from the seed (the same draws, so the generator's state afterwards is unchanged). Fixed noise is
        one frame repeated and stays as it is."""
        if not sampler.options.fixed_noise and latents.shape[0] > 1:
            f, c, h, w = latents.shape
            latents = _frames(latents.reshape(1, c, f, h, w))
            sampler.set_reference_noise(latents[:1] / sampler.scheduler.init_noise_sigma)
        log.info("motion module over %d context window(s) of %d frames (overlap %d)",
                 len(self.windows(latents.shape[0])), self.context_length, self.context_overlap)
        return latents, 0

    def attention(self, sampler, models, state):
        # first+prev: a window's first frame follows one inside the previous window (the last window, aligned to the
        # end, may overlap more than context_overlap): keep enough trailing frames of each window for the next
        windows = self.windows(sampler.num_frames)
        state.keep_previous = max([1] + [a[-1] - b[0] + 2 for a, b in zip(windows, windows[1:])])
        return cross_frame_attention(models if self.cross_frame else [], state)

    def noise_prediction(self, sampler, latents: torch.Tensor, t, i: int, n_steps: int) -> torch.Tensor:
        sampler.reference_passes(latents, t, i, n_steps)
        video = VideoUNet(self.motion_unet, 2 if sampler.do_cfg else 1)

        def predict(positions):
            sampler.check_stop()
            return sampler.evaluate(positions, latents[positions], t, i, n_steps, unet=video)

        return blend_windows(latents.shape[0], self.windows(latents.shape[0]), predict, latents)

    def scheduler_step(self, sampler, noise_pred: torch.Tensor, t, latents: torch.Tensor) -> torch.Tensor:
        """The scheduler step on the video layout when one generator draws the noise of all frames (as the
        pipeline); per-frame generators (fixed noise) step the frames as the plain sampler does."""
        extra = sampler.step_kwargs
        if isinstance(extra.get("generator"), list) or latents.shape[0] == 1:
            return sampler.scheduler.step(noise_pred, t, latents, **extra, return_dict=False)[0]
        out = sampler.scheduler.step(_video(noise_pred), t, _video(latents), **extra, return_dict=False)[0]
        return _frames(out)
