"""Image-to-image restyling of the beauty render: DDIM inversion + Plug-and-Play structure injection.

Plug-and-Play (Tumanyan et al. 2023, arXiv 2211.12572, Sec. 4), as TokenFlow uses it (arXiv 2307.10373, Sec. 5):
the source frames (the Combined pass) are DDIM-inverted (``inversion.py``); sampling starts from the inverted
latents, and at every early step a *source branch* evaluates the UNet on the source's inverted latent of that step
(source prompt, no guidance, no ControlNet). Its features are injected into the generation:

* the output of the decoder ResNet ``up_blocks[1].resnets[1]`` for the first ``pnp_features`` of the steps
  (PnP: 0.8), replacing the generated frames' own;
* the self-attention queries and keys of the decoder layers (``up_blocks.*``) for the first ``pnp_attention`` of
  the steps (PnP: 0.5), so attention maps -- the layout -- come from the render while values carry the new look.

``strength`` < 1 starts later in the schedule (inverting only as far as needed), like diffusers' img2img.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from neurender.contract import img2img_start_step
from neurender.engine.attention import FrameBatch
from neurender.engine.inversion import ddim_invert, inversion_timesteps
from neurender.engine.prediction import prediction_type
from neurender.engine.schedulers import uses_sigmas
from neurender.errors import InputError

log = logging.getLogger(__name__)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 transfer function (the view transform "Standard")."""
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def source_frames_from_passes(folder, frames: Sequence[int], width: int, height: int) -> torch.Tensor:
    """(n, 3, H, W) in -1..1: the Combined (beauty) pass of each frame, sRGB-encoded, area-resized to the render."""
    if not folder.has_pass("combined"):
        raise InputError(f"img2img needs the Combined pass, but the pass folder {folder.path} has none")
    out = []
    for f in frames:
        rgb = folder.read(f).combined
        if rgb is None:
            raise InputError(f"frame {f} of {folder.path} has no Combined pass (needed by img2img)")
        img = torch.from_numpy(_linear_to_srgb(np.asarray(rgb, dtype=np.float32)[..., :3]).astype(np.float32))
        img = img.permute(2, 0, 1)[None]
        if img.shape[-2:] != (height, width):
            img = torch.nn.functional.interpolate(img, size=(height, width), mode="area")
        out.append(img[0] * 2 - 1)
    return torch.stack(out)


@dataclass
class Img2Img:
    """Start from the inverted source frames; inject their structure early (see module docstring)."""

    source: Callable[[], torch.Tensor]
    strength: float = 1.0
    inversion_steps: int = 50
    pnp_features: float = 0.8
    pnp_attention: float = 0.5
    source_prompt: str = ""

    def __post_init__(self) -> None:
        if not (0 < self.strength <= 1):
            raise ValueError("img2img strength must be within (0, 1]")
        self._latents: dict[int, torch.Tensor] = {}
        self._embeds: Optional[torch.Tensor] = None
        self._features: Optional[torch.Tensor] = None
        self._resnet = None

    # --- sampler side ------------------------------------------------------------------------------------------
    def prepare(self, sampler, latents: torch.Tensor, timesteps) -> tuple[torch.Tensor, int]:
        pipe = sampler.pipe
        n_steps = len(timesteps)
        start = img2img_start_step(n_steps, self.strength)
        used = [int(t) for t in timesteps]
        t_start = used[start]
        pnp_until = max(self.pnp_features, self.pnp_attention)
        record = [used[i] for i in range(start, n_steps) if i < pnp_until * n_steps] + [t_start]
        pixels = self.source()
        if pixels.shape[0] != latents.shape[0]:
            raise InputError(f"img2img has {pixels.shape[0]} source frames for {latents.shape[0]} frames")
        x0 = sampler.encode(pixels)
        self._embeds = pipe.encode_prompt(self.source_prompt, sampler.device, 1, False)[0]
        steps = inversion_timesteps(pipe.scheduler.config.num_train_timesteps, self.inversion_steps, t_start, record)
        log.info("img2img: DDIM inversion of %d frames over %d timesteps up to t=%d", x0.shape[0], len(steps), t_start)
        alphas = sampler.scheduler.alphas_cumprod
        _, self._latents = ddim_invert(pipe.unet, alphas, x0, self._embeds, steps, record=record,
                                       batch_size=sampler.options.batch_size, should_stop=sampler.should_stop,
                                       prediction_type=prediction_type(sampler.scheduler))
        self._resnet = pipe.unet.up_blocks[1].resnets[1] if len(pipe.unet.up_blocks) > 1 else None
        x = self._latents[t_start]
        if uses_sigmas(sampler.scheduler):  # k-diffusion parameterisation: x_sigma = x_t / sqrt(a_t)
            x = x / alphas[t_start].sqrt().to(x.dtype)
        return x.to(latents.dtype), start

    def pnp_active(self, i: int, n_steps: int) -> tuple[bool, bool]:
        """(inject ResNet features, inject attention queries/keys) at step ``i``."""
        return i < self.pnp_features * n_steps, i < self.pnp_attention * n_steps

    def record_source(self, sampler, positions: list[int], t, i: int, pnp: tuple[bool, bool], ctx) -> None:
        """Evaluate the source branch for ``positions`` at step ``i``, keeping its features for the next call."""
        x = self._latents.get(int(t))
        if x is None:
            return
        x = x[positions].to(sampler.device, sampler.pipe.unet.dtype)
        self._features = None
        ctx.pnp_mode = "record"
        ctx.cross.batch = FrameBatch(positions=list(positions), cfg=1)
        handle = self._resnet.register_forward_hook(self._keep) if (pnp[0] and self._resnet is not None) else None
        try:
            with torch.no_grad():
                sampler.pipe.unet(x, t, encoder_hidden_states=self._embeds.expand(len(positions), -1, -1),
                                  return_dict=False)
        finally:
            if handle is not None:
                handle.remove()
            ctx.cross.batch = None
            ctx.pnp_mode = None

    def injecting(self, active: bool):
        """Context manager: the ResNet's output is replaced by the source branch's during the next model call."""
        return _Injection(self if active and self._features is not None and self._resnet is not None else None)

    # --- hooks -------------------------------------------------------------------------------------------------
    def _keep(self, module, args, output):
        self._features = output.detach()

    def _replace(self, module, args, output):
        src = self._features
        if src is None or output.shape[0] % src.shape[0] != 0 or output.shape[1:] != src.shape[1:]:
            return output
        return src.repeat(output.shape[0] // src.shape[0], 1, 1, 1).to(output.dtype)


class _Injection:
    def __init__(self, owner: Optional[Img2Img]) -> None:
        self.owner = owner
        self.handle = None

    def __enter__(self):
        if self.owner is not None:
            self.handle = self.owner._resnet.register_forward_hook(self.owner._replace)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
        return None
