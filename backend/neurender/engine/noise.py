"""Initial noise and per-step noise generators.

Fixed noise (DiffSynth, arXiv 2308.03463, Sec. 3.1): one Gaussian tensor of shape (1, 4, H/8, W/8) is shared by
every frame, so frames that look alike start alike. For ancestral samplers the per-step noise is shared too: every
frame gets its own ``torch.Generator`` in the same state, so each step draws identical noise for all frames.
With one frame and fixed noise the draws are exactly those of diffusers' pipeline with ``generator=seed``.
"""

from __future__ import annotations

import torch
from diffusers.utils.torch_utils import randn_tensor


def make_generator(seed: int) -> torch.Generator:
    # CPU generator: the same noise on every device, as diffusers recommends for reproducibility.
    return torch.Generator("cpu").manual_seed(seed)


def initial_latents(
    generator: torch.Generator, frames: int, shape: tuple[int, int, int], fixed: bool, device, dtype
) -> torch.Tensor:
    """(frames, C, h, w) unscaled Gaussian latents; identical for every frame when ``fixed``."""
    if fixed:
        one = randn_tensor((1, *shape), generator=generator, device=torch.device(device), dtype=dtype)
        return one.repeat(frames, 1, 1, 1)
    return randn_tensor((frames, *shape), generator=generator, device=torch.device(device), dtype=dtype)


def step_generators(generator: torch.Generator, frames: int, fixed: bool):
    """What to hand to ``scheduler.step(generator=...)`` for the whole batch of frames."""
    if not fixed or frames == 1:
        return generator
    state = generator.get_state()
    gens = []
    for _ in range(frames):
        g = torch.Generator("cpu")
        g.set_state(state.clone())
        gens.append(g)
    return gens
