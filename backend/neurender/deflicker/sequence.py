"""Deflicker a whole frame sequence: plan the blend once, apply it (and the optional corrections) many times.

``Deflicker`` is what the in-iteration hook, the runner's post pass and the ``neurender deflicker`` command share:
``Deflicker(source, options)(images)`` with (n, C, H, W) tensors in any value range ``lo..hi``. Two engines:

* ``fusion`` (default) -- ``robust.py``: each frame's low-frequency colour deviation undone along the motion, then a
  robust (outlier-rejecting) fusion of the frames within ``window``, and the coarse band fused again over a longer
  reach. It removes flicker; measured with ``scripts/bench_deflicker.py`` it beats plain averages along the motion.
* ``average`` -- ``blend.py``: the triangular-weighted plain average along the motion (DiffSynth's blend with exact
  correspondences); kept for comparison and for ``--compensate``/``--sharpen``.
``deflicker_frames`` is the numpy convenience for finished frames (n, H, W, 3) in 0..1.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from neurender.deflicker.blend import BlendPlan, blend, plan_blend
from neurender.deflicker.enhance import compensate_colour, contrast, sharpness
from neurender.deflicker.motion import MotionSource
from neurender.deflicker.robust import DEFAULT_WINDOW, FusionOptions, FusionPlan, fuse, plan_fusion

log = logging.getLogger(__name__)

SHARPEN_FACTOR = 1.1
"""DiffSynth's contrast and sharpness factor after deflickering."""
ENGINES = ("fusion", "average")


@dataclass
class DeflickerOptions:
    window: int = DEFAULT_WINDOW
    """Neighbours on each side blended into every frame."""
    method: str = "auto"
    """auto | exact | flow | patchmatch (see ``motion.py``)."""
    engine: str = "fusion"
    """fusion (colour compensation + robust fusion, ``robust.py``) | average (plain blend, ``blend.py``)."""
    compensate: bool = False
    """Match each frame's colour statistics to the window average of the input (global flicker, lost contrast)."""
    sharpen: bool = False
    """Contrast x1.1 and sharpness x1.1 after blending (DiffSynth)."""


class Deflicker:
    """A deflicker for one sequence at one size; the correspondences are computed on first use and kept."""

    def __init__(self, source: MotionSource, options: Optional[DeflickerOptions] = None) -> None:
        self.source = source
        self.options = options or DeflickerOptions()
        if self.options.engine not in ENGINES:
            raise ValueError(f"deflicker engine {self.options.engine!r} is not one of {', '.join(ENGINES)}")
        self._plan: Optional[BlendPlan | FusionPlan] = None
        self._moved: dict = {}

    @property
    def plan(self) -> BlendPlan | FusionPlan:
        if self._plan is None:
            start = time.perf_counter()
            opt = self.options
            if opt.engine == "fusion":
                self._plan = plan_fusion(self.source, FusionOptions(window=opt.window), opt.method)
            else:
                self._plan = plan_blend(self.source, opt.window, opt.method)
            log.info("deflicker: %d frame pairs at %dx%d planned in %.2f s", self._plan.pairs, self.source.width,
                     self.source.height, time.perf_counter() - start)
        return self._plan

    def __call__(self, images: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """(n, C, H, W) -> deflickered (n, C, H, W), values kept within ``lo..hi`` when corrections apply."""
        opt = self.options
        if opt.engine == "fusion":
            out = fuse(images, self.plan, lo, hi)  # type: ignore[arg-type]
            return self._corrections(out, images, lo, hi)
        key = (images.device, images.dtype)
        if key not in self._moved:  # keep one copy of the plan per device/dtype (the hook calls this every step)
            self._moved[key] = self.plan.to(images.device, images.dtype)
        return self._corrections(blend(images, self._moved[key]), images, lo, hi)

    def _corrections(self, out: torch.Tensor, images: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        opt = self.options
        if opt.compensate:
            out = compensate_colour(out, images, max(opt.window, 1)).clamp(lo, hi)
        if opt.sharpen and images.shape[1] == 3:
            out = sharpness(contrast(out, SHARPEN_FACTOR, lo, hi), SHARPEN_FACTOR, lo, hi)
        return out


def deflicker_frames(images: np.ndarray, source: MotionSource, options: Optional[DeflickerOptions] = None) -> np.ndarray:
    """(n, H, W, C) float frames in 0..1 -> deflickered float32 frames in 0..1."""
    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    out = Deflicker(source, options)(t, 0.0, 1.0).clamp(0.0, 1.0)
    return out.permute(0, 2, 3, 1).contiguous().numpy()
