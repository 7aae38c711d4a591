"""What the job plan needs from the deflicker engine, from typed ``DeflickerOptions`` (one call each; the plan,
``neurender.plan``, turns the settings into options).

* ``step_hooks`` -> the in-iteration ``DeflickerHook`` at ``steps`` (empty list when none), with the pass folder's
  exact motion resized to the render size (``pixel``) or the latent size (``latent``);
* ``post_deflicker`` -> the post pass over all decoded frames (bicubic sampling: the finished frames keep their fine
  detail; the hooks sample bilinearly, which is about 4x faster).

The guides for a PatchMatch fallback are the Combined pass of the pass folder.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from neurender.deflicker.hook import DeflickerHook
from neurender.deflicker.motion import MotionSource
from neurender.deflicker.sequence import Deflicker, DeflickerOptions, deflicker_frames

log = logging.getLogger(__name__)


def step_hooks(options: DeflickerOptions, steps: Sequence[int], space: str, folder, frames: Sequence[int], width: int,
               height: int, vae_scale_factor: int = 8) -> list:
    if not steps:
        return []
    if space == "latent":
        h, w = height // vae_scale_factor, width // vae_scale_factor
    else:
        h, w = height, width
    # bilinear: fast at every configured step (and a bicubic footprint of 4 latent cells would span 32 px)
    src = MotionSource.from_folder(folder, frames=list(frames), height=h, width=w, interpolation="bilinear")
    log.info("in-iteration deflicker (%s space, %s motion, window %d) at steps %s", space,
             src.resolve(options.method), options.window, sorted(steps))
    return [DeflickerHook(Deflicker(src, options), steps, space=space)]


def post_deflicker(images: np.ndarray, options: DeflickerOptions, folder, frames: Sequence[int]) -> np.ndarray:
    """(n, H, W, 3) decoded frames in 0..1 -> deflickered frames (the post pass)."""
    h, w = images.shape[1:3]
    source = MotionSource.from_folder(folder, frames=list(frames), height=h, width=w, interpolation="bicubic")
    log.info("post deflicker of %d frames (%s motion, window %d)", len(frames),
             source.resolve(options.method), options.window)
    return deflicker_frames(images, source, options)
