"""Lockstep multi-frame denoising around the stock diffusers components.

All frames of a shot advance through the denoising loop together (one scheduler step for the whole sequence per
iteration), which is what DiffSynth's latent in-iteration deflicker needs (arXiv 2308.03463, Sec. 3.3): at any
step a hook may look at the noise estimates of every frame and replace them. The model itself is evaluated over
groups of frames that bound memory: consecutive chunks of ``batch_size`` frames, or, in ``window`` mode,
overlapping windows whose noise estimates are blended with triangular weights ``max(1 - |i - c| / half, 0.01)``
(DiffSynth-Studio's sliding-window scheme).

How frames are grouped and attend to each other is the consistency strategy's part (``strategy.py``: one
signature for off / first / first+prev / window / keyframes), chosen once from ``SamplerOptions.consistency``.

Per step and per group the code follows diffusers' ``StableDiffusionControlNetPipeline.__call__`` line for line
(CFG batch layout, ``scale_model_input``, ControlNet residuals with guidance start/end, UNet, guidance, scheduler
step), so with one frame and consistency off the result equals the stock pipeline; a test checks it.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from neurender.contract import DEFAULT_CONSISTENCY
from neurender.engine.attention import CrossFrameState, FrameBatch
from neurender.engine.checkpoint import load_checkpoint, restore_generators, restore_scheduler, save_checkpoint
from neurender.engine.memory import attention_slicing, execution_device, vae_tiling
from neurender.engine.noise import initial_latents, make_generator, step_generators
from neurender.engine.prediction import eps_from_x0, predict_x0
from neurender.engine.schedulers import default_eta, make_scheduler
from neurender.engine.strategy import ConsistencyStrategy, strategy_for

log = logging.getLogger(__name__)

LATENT_DTYPE = torch.float32
"""The denoising state (latents, noise estimates, scheduler arithmetic, step hooks) is float32 whatever the model's
dtype; only the model inputs are cast to the model's float16/bfloat16. The state is a few MB, and in bfloat16 (8
mantissa bits) a latent cannot hold a change below ~0.4% of its magnitude: the in-iteration deflicker's correction
(about 0.5% of x0 on the tiny test model) came out 31% wrong in a bfloat16 state, 4% in float32
(tests/backend/test_precision.py)."""

ControlProvider = Callable[[Sequence[int]], list[torch.Tensor]]
"""Frame positions -> one (n, 3, H, W) float tensor per ControlNet unit (control_image_processor output)."""


@dataclass
class SamplerOptions:
    steps: int = 20
    guidance_scale: float = 7.5
    scheduler: str = "dpmpp_2m"
    seed: int = 0
    fixed_noise: bool = True
    consistency: str = DEFAULT_CONSISTENCY  # the contract's default (engine/strategy.py STRATEGIES: the modes)
    window_size: int = 8
    window_stride: int = 4
    batch_size: int = 4
    control_scales: Sequence[float] = ()
    control_start: Sequence[float] = ()
    control_end: Sequence[float] = ()
    eta: Optional[float] = None  # None: the scheduler's default (schedulers.default_eta: 0, TCD's gamma 0.3)
    # memory options (engine/memory.py): equal results, less memory
    attention_slice: int = 0  # at most this many query tokens per attention call; 0: all at once
    vae_slicing: bool = False  # VAE decode/encode one frame at a time instead of batch_size frames
    vae_tiling: bool = False  # diffusers' tiled VAE decode/encode (nearly equal: tiles see less context)


@dataclass
class StepContext:
    """What a step hook sees: the whole sequence at one denoising step, before the scheduler moves it."""

    step: int
    num_steps: int
    timestep: torch.Tensor
    latents: torch.Tensor
    noise_pred: torch.Tensor
    sampler: "LockstepSampler"

    def predicted_x0(self) -> torch.Tensor:
        return predict_x0(self.sampler.scheduler, self.latents, self.noise_pred, self.timestep)

    def noise_from_x0(self, x0: torch.Tensor) -> torch.Tensor:
        return eps_from_x0(self.sampler.scheduler, self.latents, x0, self.timestep)


StepHook = Callable[[StepContext], Optional[torch.Tensor]]
"""Returns a replacement noise estimate for all frames, or None to leave it unchanged."""

StepCallback = Callable[[int, int], None]
"""(steps done, steps total) after every step."""


@dataclass
class AnchorFrames:
    """Precomputed anchor frames (``neurender.farm.anchors``): extra cross-frame anchors shared by every chunk.

    ``latents[i]`` are the anchors' latents x_t at the input of step ``i`` (steps, K, C, h, w), recorded once by the
    anchors run; at each step the sampler evaluates them (with their own ``controls``, one (K, 3, H, W) tensor per
    ControlNet unit) in a reference pass, and the frames attend to them instead of their own first frame.
    """

    latents: torch.Tensor
    controls: Optional[list[torch.Tensor]] = None


@dataclass
class LockstepSampler:
    pipe: object
    options: SamplerOptions
    num_frames: int
    height: int
    width: int
    controls: Optional[ControlProvider] = None
    prompt: str = ""
    negative_prompt: str = ""
    reference_image: Optional[object] = None  # PIL image: an extra cross-frame anchor
    anchors: Optional[AnchorFrames] = None  # precomputed anchor frames shared by the chunks of a shot
    hooks: Sequence[StepHook] = ()
    on_step: Optional[StepCallback] = None
    should_stop: Optional[Callable[[], None]] = None  # raises to stop (e.g. CancelToken.raise_if_cancelled)
    checkpoint_path: Optional[Path] = None
    fingerprint: str = ""
    strategy: Optional[ConsistencyStrategy] = None  # None: strategy_for(options) (engine/strategy.py)
    scheduler: object = field(init=False, default=None)

    def __post_init__(self) -> None:
        pipe = self.pipe
        self.device = execution_device(pipe)  # the UNet's device, or the CPU offload's execution device
        self.dtype = pipe.unet.dtype
        self.controlnet = getattr(pipe, "controlnet", None)
        self.scheduler = make_scheduler(self.options.scheduler, pipe.scheduler.config)
        self.do_cfg = self.options.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
        if self.strategy is None:
            self.strategy = strategy_for(self.options)
        self.reference_latents: Optional[torch.Tensor] = None
        """The reference image's latents (clean), evaluated as an extra anchor at every step; None without one."""

    # ---------------------------------------------------------------------------------------------------------
    def run(self) -> torch.Tensor:
        """Denoise every frame; returns the final latents (frames, C, h, w)."""
        pipe, opt = self.pipe, self.options
        with torch.no_grad():
            pos, neg = pipe.encode_prompt(
                self.prompt, self.device, 1, self.do_cfg, self.negative_prompt if self.negative_prompt else None
            )
            self._pos, self._neg = pos, neg
            self.scheduler.set_timesteps(opt.steps, device=self.device)
            timesteps = self.scheduler.timesteps
            generator = make_generator(opt.seed)
            vsf = pipe.vae_scale_factor
            shape = (pipe.unet.config.in_channels, self.height // vsf, self.width // vsf)
            # the denoising state stays in float32 whatever the model's dtype (see LATENT_DTYPE)
            noise = initial_latents(generator, self.num_frames, shape, opt.fixed_noise, self.device, LATENT_DTYPE)
            self._noise0 = noise[:1]  # the reference image is noised with the first frame's noise
            latents = noise * self.scheduler.init_noise_sigma
            self._generators = step_generators(generator, self.num_frames, opt.fixed_noise)
            self._extra = self._step_kwargs(opt.eta if opt.eta is not None else default_eta(opt.scheduler))
            self._timestep_cond = self._guidance_embedding()
            strategy = self.strategy
            latents, start = strategy.prepare(self, latents, timesteps)
            if self.checkpoint_path is not None:
                saved = load_checkpoint(self.checkpoint_path, self.fingerprint)
                if saved is not None and saved["latents"].shape == latents.shape:
                    start = int(saved["step"]) + 1
                    latents = saved["latents"].to(self.device, latents.dtype)
                    restore_scheduler(self.scheduler, saved["scheduler"], self.device)
                    restore_generators(self._generators, saved["generators"])
                    log.info("resuming from step %d/%d", start, len(timesteps))
            self.reference_latents = self._encode_reference() if strategy.cross_frame else None
            if self.anchors is not None and self.anchors.latents.shape[0] != len(timesteps):
                raise ValueError(f"anchors hold {self.anchors.latents.shape[0]} steps, the render has {len(timesteps)}")
            use_anchors = self.anchors is not None and strategy.takes_anchors
            state = CrossFrameState(
                mode=strategy.name,
                use_reference=self.reference_latents is not None or use_anchors,
                first_from_anchors=use_anchors,
            )
            models = [pipe.unet] + self._controlnet_models()
            with attention_slicing(models, opt.attention_slice), strategy.attention(self, models, state):
                self._state = state
                for i in range(start, len(timesteps)):
                    t = timesteps[i]
                    state.step = i
                    noise_pred = strategy.noise_prediction(self, latents, t, i, len(timesteps))
                    ctx = StepContext(i, len(timesteps), t, latents, noise_pred, self)
                    for hook in self.hooks:
                        replaced = hook(ctx)
                        if replaced is not None:
                            ctx.noise_pred = replaced
                    step = getattr(strategy, "scheduler_step", None)  # optional: a strategy's own frame layout
                    if step is not None:
                        latents = step(self, ctx.noise_pred, t, latents)
                    else:
                        latents = self.scheduler.step(ctx.noise_pred, t, latents, **self._extra, return_dict=False)[0]
                    if self.checkpoint_path is not None and i < len(timesteps) - 1:
                        save_checkpoint(
                            self.checkpoint_path,
                            fingerprint=self.fingerprint,
                            step=i,
                            latents=latents,
                            scheduler=self.scheduler,
                            generators=self._generators,
                        )
                    if self.on_step is not None:
                        self.on_step(i + 1, len(timesteps))
        return latents

    # ---------------------------------------------------------------------------------------------------------
    def _controlnet_models(self) -> list:
        cn = self.controlnet
        if cn is None:
            return []
        return list(getattr(cn, "nets", [cn]))

    # --- what strategies call (engine/strategy.py) -----------------------------------------------------------
    @property
    def step_kwargs(self) -> dict:
        """The keyword arguments of this run's ``scheduler.step`` calls (generator(s), eta): for a strategy that does
        its own scheduler step (``scheduler_step``)."""
        return dict(self._extra)

    def set_reference_noise(self, noise: torch.Tensor) -> None:
        """The (1, C, h, w) noise the reference image is noised with (default: the first frame's initial noise): for
        a strategy that draws the initial noise in another layout in ``prepare``."""
        self._noise0 = noise

    def reference_passes(self, latents: torch.Tensor, t, i: int, n_steps: int) -> None:
        """Evaluate the extra anchors of step ``i`` before the frames: the reference image (noised to ``t`` with the
        first frame's noise) and the precomputed shared anchors; their keys/values become the frames' anchors."""
        if self.reference_latents is not None:
            self.check_stop()
            x_ref = self.scheduler.add_noise(self.reference_latents, self._noise0, t.reshape(1))
            self.evaluate([0], x_ref, t, i, n_steps, reference=True)
        if self._state.first_from_anchors:
            self.check_stop()
            x_anchor = self.anchors.latents[i].to(self.device, latents.dtype)
            positions = list(range(x_anchor.shape[0]))
            self.evaluate(positions, x_anchor, t, i, n_steps, reference=True, control_images=self.anchors.controls)

    def evaluate(
        self, positions, x, t, i, n_steps, reference: bool = False, control_images=None, unet=None
    ) -> torch.Tensor:
        """One model call for a group of frames: the body of the stock pipeline's loop.

        A reference pass skips the ControlNets unless it brings its own ``control_images`` (precomputed anchors).
        """
        pipe, opt = self.pipe, self.options
        n = len(positions)
        cfg = 2 if self.do_cfg else 1
        self._state.batch = FrameBatch(positions=list(positions), cfg=cfg, is_reference=reference)
        prompt_embeds = self._pos.expand(n, -1, -1)
        if self.do_cfg:
            prompt_embeds = torch.cat([self._neg.expand(n, -1, -1), prompt_embeds])
        latent_model_input = torch.cat([x] * 2) if self.do_cfg else x
        latent_model_input = self.scheduler.scale_model_input(latent_model_input, t).to(self.dtype)
        down, mid = None, None
        if self.controlnet is not None and (not reference or control_images is not None):
            scales = self._control_scales(i, n_steps)
            if any(s != 0 for s in scales):
                source = control_images if control_images is not None else self.controls(positions)
                images = [img.to(self.device, self.controlnet.dtype) for img in source]
                if self.do_cfg:
                    images = [torch.cat([img] * 2) for img in images]
                multi = hasattr(self.controlnet, "nets")
                down, mid = self.controlnet(
                    latent_model_input,
                    t,
                    encoder_hidden_states=prompt_embeds,
                    controlnet_cond=images if multi else images[0],
                    conditioning_scale=scales if multi else scales[0],
                    guess_mode=False,
                    return_dict=False,
                )
        noise_pred = (pipe.unet if unet is None else unet)(  # unet: e.g. the motion UNet's video call (engine/motion_windows.py)
            latent_model_input,
            t,
            encoder_hidden_states=prompt_embeds,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
            timestep_cond=getattr(self, "_timestep_cond", None),  # (1, dim): broadcast over the batch, as the pipeline
            return_dict=False,
        )[0]
        self._state.batch = None
        noise_pred = noise_pred.to(LATENT_DTYPE)  # guidance and the scheduler in float32
        if self.do_cfg:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + opt.guidance_scale * (text - uncond)
        return noise_pred

    def _control_scales(self, i: int, n_steps: int) -> list[float]:
        opt = self.options
        scales = []
        for k, scale in enumerate(opt.control_scales):
            s = opt.control_start[k] if k < len(opt.control_start) else 0.0
            e = opt.control_end[k] if k < len(opt.control_end) else 1.0
            keep = 1.0 - float(i / n_steps < s or (i + 1) / n_steps > e)
            scales.append(scale * keep)
        return scales

    def _guidance_embedding(self) -> Optional[torch.Tensor]:
        """Guidance as an input for guidance-distilled UNets (LCM, Luo et al. 2023, eq. 9: ``w`` embedded like a
        timestep, ``time_cond_proj_dim``), exactly as the stock pipeline builds it; None for ordinary UNets (CFG)."""
        dim = self.pipe.unet.config.time_cond_proj_dim
        if dim is None:
            return None
        w = torch.tensor(self.options.guidance_scale - 1).repeat(1)
        return self.pipe.get_guidance_scale_embedding(w, embedding_dim=dim).to(device=self.device, dtype=self.dtype)

    def _step_kwargs(self, eta: float) -> dict:
        """``eta``/``generator`` for schedulers whose ``step`` takes them (as the pipeline's prepare_extra_step_kwargs)."""
        params = inspect.signature(self.scheduler.step).parameters
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = self._generators
        return kwargs

    def check_stop(self) -> None:
        """Raise (``should_stop``) when the job was cancelled; strategies call it before every model call."""
        if self.should_stop is not None:
            self.should_stop()

    # ---------------------------------------------------------------------------------------------------------
    def _encode_reference(self) -> Optional[torch.Tensor]:
        if self.reference_image is None:
            return None
        pixels = self.pipe.image_processor.preprocess(self.reference_image, height=self.height, width=self.width)
        return self.encode(pixels)

    def _vae_chunk(self) -> int:
        return 1 if self.options.vae_slicing else self.options.batch_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, 3, H, W) images in -1..1 -> latents (posterior mean x scaling factor), in chunks."""
        vae = self.pipe.vae
        out = []
        n = self._vae_chunk()
        with torch.no_grad(), vae_tiling(vae, self.options.vae_tiling):
            for s in range(0, pixels.shape[0], n):
                chunk = pixels[s : s + n].to(self.device, vae.dtype)
                out.append(vae.encode(chunk).latent_dist.mean.to(LATENT_DTYPE) * vae.config.scaling_factor)
        return torch.cat(out)

    def decode_tensor(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> (n, 3, H, W) images in -1..1, in chunks."""
        vae = self.pipe.vae
        out = []
        n = self._vae_chunk()
        with torch.no_grad(), vae_tiling(vae, self.options.vae_tiling):
            for s in range(0, latents.shape[0], n):
                chunk = (latents[s : s + n] / vae.config.scaling_factor).to(self.device, vae.dtype)
                out.append(vae.decode(chunk, return_dict=False)[0])
        return torch.cat(out)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents -> (n, H, W, 3) float images in 0..1, exactly as the pipeline's ``output_type="np"``."""
        images = self.decode_tensor(latents)
        return self.pipe.image_processor.postprocess(images, output_type="np")
