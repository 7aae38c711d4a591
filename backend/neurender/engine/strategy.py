"""Consistency strategies: how the frames of a shot are grouped and attend to each other at one denoising step.

One signature, small implementations (in the spirit of k-diffusion's samplers, Crowson 2022: every sampler is one
function of the same arguments). ``LockstepSampler`` owns the loop that all modes share (prompt embeddings, noise,
scheduler steps, step hooks, checkpoints); a ``ConsistencyStrategy`` decides only the three things that differ:

* ``prepare(sampler, latents, timesteps) -> (latents, first step)``: the starting state (noise from step 0, or e.g.
  the DDIM-inverted render for img2img);
* ``attention(sampler, models, state)``: a context manager installing the strategy's attention processors on the
  models (the UNet and every ControlNet) for the whole run;
* ``noise_prediction(sampler, latents, t, i, n_steps) -> noise``: the noise estimate of every frame at step ``i``,
  built from model calls over groups of frames (``sampler.evaluate``).

Implementations:

* ``Chunks`` (``off``, ``first``, ``first+prev``): consecutive chunks of ``batch_size`` frames; cross-frame attention
  (``attention.py``) for every mode but ``off``;
* ``Windows`` (``window``): overlapping windows with joint attention, noise estimates blended with triangular
  weights (DiffSynth-Studio's sliding windows);
* ``KeyframeStrategy`` (``keyframes``, ``keyframes.py``): TokenFlow's keyframes + token propagation.

``strategy_for(options)`` picks the strategy once from the typed ``SamplerOptions``; ``STRATEGIES`` maps each
consistency mode to its factory. To add a mode: write a class with the three methods (and the two flags below),
register a factory ``STRATEGIES["name"] = lambda options: YourStrategy(...)`` and add the name to the contract's
``CONSISTENCY_MODES`` -- or pass an instance as ``LockstepSampler(strategy=...)`` when it needs more than the options
(as the job plan does for keyframes, whose correspondences come from the pass folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, ContextManager, Optional, Protocol

import torch

from neurender.contract import ANCHOR_MODES
from neurender.engine.attention import CrossFrameState, cross_frame_attention

if TYPE_CHECKING:  # the sampler imports this module; the names are for annotations only
    from neurender.engine.sampler import LockstepSampler, SamplerOptions


class ConsistencyStrategy(Protocol):
    """What ``LockstepSampler`` calls (see module docstring)."""

    name: str
    """The consistency mode; also the cross-frame attention processors' mode (``CrossFrameState.mode``)."""
    cross_frame: bool
    """False: frames never see each other (the reference image is not used either)."""

    takes_anchors: bool
    """True: precomputed shared anchors (``farm/anchors.py``) replace each group's first frame."""

    def prepare(self, sampler: "LockstepSampler", latents: torch.Tensor, timesteps) -> tuple[torch.Tensor, int]: ...

    def attention(self, sampler: "LockstepSampler", models: list, state: CrossFrameState) -> ContextManager: ...

    def noise_prediction(self, sampler: "LockstepSampler", latents: torch.Tensor, t, i: int,
                         n_steps: int) -> torch.Tensor: ...


def window_groups(frames: int, size: int, stride: int) -> list[list[int]]:
    """Overlapping windows covering 0..frames-1; the last window is aligned to the end."""
    if frames <= size:
        return [list(range(frames))]
    starts = list(range(0, frames - size + 1, stride))
    if starts[-1] + size < frames:
        starts.append(frames - size)
    return [list(range(s, s + size)) for s in starts]


def triangular_weights(length: int) -> torch.Tensor:
    """Blending weights of one window: highest in the middle, never zero (DiffSynth-Studio)."""
    centre = (length - 1) / 2
    half = max(length / 2, 1e-6)
    return torch.tensor([max(1.0 - abs(i - centre) / half, 0.01) for i in range(length)])


def chunk_groups(frames: int, size: int) -> list[list[int]]:
    return [list(range(s, min(s + size, frames))) for s in range(0, frames, size)]


Group = tuple[list[int], Optional[torch.Tensor]]
"""Frame positions of one model call and their blending weights (None: the group's estimates are taken as they are)."""


class _Grouped:
    """Shared body of the grouped strategies: reference passes, then one model call per group, blended."""

    name = "off"
    cross_frame = True

    @property
    def takes_anchors(self) -> bool:
        return self.name in ANCHOR_MODES

    def groups(self, frames: int) -> list[Group]:
        raise NotImplementedError

    def prepare(self, sampler, latents, timesteps):
        return latents, 0

    def attention(self, sampler, models, state):
        return cross_frame_attention(models if self.cross_frame else [], state)

    def noise_prediction(self, sampler, latents, t, i, n_steps):
        sampler.reference_passes(latents, t, i, n_steps)
        out = torch.zeros_like(latents)
        weight_sum = torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
        for positions, weights in self.groups(latents.shape[0]):
            sampler.check_stop()
            pred = sampler.evaluate(positions, latents[positions], t, i, n_steps)
            if weights is None:
                out[positions] = pred
                weight_sum[positions] = 1
            else:
                w = weights.to(latents.device, latents.dtype)
                out[positions] += pred * w[:, None, None, None]
                weight_sum[positions] += w
        if torch.all(weight_sum == 1):
            return out
        return out / weight_sum[:, None, None, None]


@dataclass
class Chunks(_Grouped):
    """Consecutive chunks of ``batch_size`` frames; ``name`` is the attention mode (off / first / first+prev)."""

    name: str = "off"
    batch_size: int = 4

    def __post_init__(self) -> None:
        self.cross_frame = self.name != "off"

    def groups(self, frames: int) -> list[Group]:
        return [(g, None) for g in chunk_groups(frames, self.batch_size)]


@dataclass
class Windows(_Grouped):
    """Overlapping windows with joint attention, blended with triangular weights."""

    size: int = 8
    stride: int = 4
    name: str = "window"

    def groups(self, frames: int) -> list[Group]:
        return [(g, triangular_weights(len(g))) for g in window_groups(frames, self.size, self.stride)]


def _keyframes(options: "SamplerOptions") -> ConsistencyStrategy:
    from neurender.engine.keyframes import KeyframeStrategy  # feature correspondences, start from noise

    return KeyframeStrategy()


STRATEGIES: dict[str, Callable[["SamplerOptions"], ConsistencyStrategy]] = {
    "off": lambda o: Chunks("off", o.batch_size),
    "first": lambda o: Chunks("first", o.batch_size),
    "first+prev": lambda o: Chunks("first+prev", o.batch_size),
    "window": lambda o: Windows(o.window_size, o.window_stride),
    "keyframes": _keyframes,
}
"""Consistency mode -> factory of its strategy from the sampler's options."""


def strategy_for(options: "SamplerOptions") -> ConsistencyStrategy:
    """The strategy of ``options.consistency`` (chosen once, when the sampler is built)."""
    try:
        factory = STRATEGIES[options.consistency]
    except KeyError:
        raise ValueError(f"consistency {options.consistency!r} is not one of {', '.join(STRATEGIES)}") from None
    return factory(options)

