"""The job plan: the one place that turns checked ``RenderSettings`` and a pass folder into engine objects.

A render and the farm's anchor computation are both ``open -> load -> build -> run``:

* ``open_shot``      the pass folder, its selected frames, the render size, the reference image, shared anchors, the
                     motion module file, the pixel pre-pass of the control images -- everything that can be refused
                     before a model is loaded;
* ``load_models``    the pipeline (from the settings, or the random-weight demo model) and the control kinds;
* ``build_sampler``  a ``LockstepSampler`` with its typed ``SamplerOptions``, the control images, the step hooks
                     (in-iteration deflicker) and the consistency strategy (``engine/strategy.py``).

Only this module reads ``RenderSettings`` to build engine objects: ``engine/`` and ``deflicker/`` take typed options
(``SamplerOptions``, ``DeflickerOptions``, ``Img2Img``). The settings are trusted here (checked at the boundary).
Heavy imports stay inside the functions: importing the plan must not import torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from neurender.contract import RenderSettings, render_size
from neurender.errors import InputError

if TYPE_CHECKING:  # annotations only
    from neurender.controls.builder import ControlBuilder
    from neurender.deflicker.sequence import DeflickerOptions
    from neurender.engine.sampler import ControlProvider, LockstepSampler, SamplerOptions, StepHook
    from neurender.engine.strategy import ConsistencyStrategy
    from neurender.farm.anchor_files import AnchorSet
    from neurender.passes.folder import PassFolder

log = logging.getLogger(__name__)

DEMO_CONTROL_KINDS = ("depth", "edges")
"""The ControlNets of the built-in random-weight demo model used without ``--model``."""


@dataclass
class Shot:
    """A pass folder opened for one job: what the render reads besides the models."""

    folder: "PassFolder"
    frames: list[int]
    width: int
    height: int
    reference: Optional[Any] = None  # PIL image: an extra cross-frame anchor
    anchors: Optional["AnchorSet"] = None  # precomputed shared anchors (render farm)
    builder: Optional["ControlBuilder"] = None  # the control images' builder of the planned kinds (pre-pass done)


@dataclass
class Models:
    """The loaded pipeline and the control kind of each ControlNet unit, in order."""

    pipe: Any
    kinds: list[str]
    random_weights: bool
    loaded: Any = None  # the cache's entry (``LoadedPipeline``): what lives as long as the cached models
    device: str = ""
    dtype: str = ""


# ---- open -------------------------------------------------------------------------------------------------------
def open_shot(settings: RenderSettings, pass_dir: Path | str, anchors_dir: Optional[Path | str] = None) -> Shot:
    """Open and check everything the job reads, before any model is loaded (``InputError`` when it does not fit)."""
    from neurender.passes.folder import PassFolder

    folder = PassFolder.open(pass_dir, frames=settings.frames or None)  # the contract's frame-selection rule
    width, height = render_size(settings, folder.width, folder.height)
    anchor_set = None
    if anchors_dir is not None:  # render farm (issue #7)
        from neurender.farm.anchor_files import load_anchors

        anchor_set = load_anchors(anchors_dir, settings)
    reference = open_reference(settings.reference_image) if settings.reference_image else None
    if settings.motion_module:  # issue #14: a missing / SDXL / non-motion-module file is refused before any load
        from neurender.models.motion import check_motion_module

        check_motion_module(settings.motion_module)
    if settings.img2img_strength > 0 and not folder.has_pass("combined"):
        raise InputError("restyling (img2img strength > 0) needs the Combined (beauty) pass, and this pass folder "
                         "has none")
    # the pixel pre-pass (every frame read once; corrupt depth or data, a shot without geometry) and the control
    # checks, before any model loads and before anything is written to the output folder
    from neurender.controls.builder import ControlBuilder

    builder = ControlBuilder(folder, sorted(set(planned_kinds(settings))), width, height,
                             depth_smoothing=settings.depth_smoothing)
    return Shot(folder=folder, frames=list(folder.frames), width=width, height=height, reference=reference,
                anchors=anchor_set, builder=builder)


def planned_kinds(settings: RenderSettings) -> list[str]:
    """The control kinds ``load_models`` will return, known before loading (no model: the demo's depth and edges)."""
    if settings.controlnets or settings.model:
        return [u.kind for u in settings.controlnets]
    return list(DEMO_CONTROL_KINDS)


def open_reference(path: str):
    """The reference image as RGB (``InputError`` when it is missing or unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"reference image {path} does not exist") from None
    except Exception as exc:
        raise InputError(f"reference image {path} cannot be read: {exc}") from None


# ---- load -------------------------------------------------------------------------------------------------------
def load_models(settings: RenderSettings, cache, device: str = "", dtype: str = "") -> Models:
    """The pipeline for these settings (from ``cache``, a ``PipelineCache``).

    ``device``/``dtype``: the settings' values with ``auto`` resolved (default: resolved here)."""
    from neurender.models.devices import pick_device, pick_dtype
    from neurender.models.random_models import default_demo_model

    controlnets = [(u.kind, u.model) for u in settings.controlnets]
    model = settings.model
    if not model:
        demo = default_demo_model()
        model = str(demo.model)
        if not controlnets:
            controlnets = [(kind, str(path)) for kind, path in demo.controlnets.items() if kind in DEMO_CONTROL_KINDS]
        log.warning(
            "NO MODEL GIVEN: rendering with neurender's built-in RANDOM-WEIGHT demo model. The output is noise-like "
            "patterns, not an image. Pass --model PATH (an SD 1.5 checkpoint) for real results."
        )
    device = device or pick_device(settings.device)
    dtype = dtype or pick_dtype(settings.dtype, device)
    loaded = cache.get(model, controlnets, settings.loras, device, dtype, embeddings=settings.embeddings,
                       prediction_type=settings.prediction_type)
    if not settings.model:
        loaded.random_weights = True
    return Models(pipe=loaded.pipe, kinds=[kind for kind, _ in controlnets], random_weights=bool(loaded.random_weights),
                  loaded=loaded, device=device, dtype=dtype)


# ---- build ------------------------------------------------------------------------------------------------------
def sampler_options(settings: RenderSettings, control_units: int, **overrides) -> "SamplerOptions":
    """The sampler's options for these settings (``overrides`` replace single fields, e.g. ``consistency``)."""
    from neurender.engine.sampler import SamplerOptions

    units = settings.controlnets
    options = dict(
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        scheduler=settings.scheduler,
        seed=settings.seed,
        fixed_noise=settings.fixed_noise,
        consistency=settings.consistency,
        window_size=settings.window_size,
        window_stride=settings.window_stride,
        batch_size=settings.batch_size or 4,  # 0 (auto) is resolved by with_batch_size, which knows the device
        attention_slice=settings.attention_slice,
        vae_slicing=settings.vae_slicing,
        vae_tiling=settings.vae_tiling,
        control_scales=[u.weight for u in units] or [1.0] * control_units,
        control_start=[u.guidance_start for u in units],
        control_end=[u.guidance_end for u in units],
    )
    options.update(overrides)
    return SamplerOptions(**options)


def with_batch_size(settings: RenderSettings, shot: Shot, models: Models) -> RenderSettings:
    """The settings with the frames per model call the memory allows (batch size 0 or ``vram_budget``: chosen from
    the device's free memory or the budget, ``engine/vram.py``; otherwise as given)."""
    import dataclasses

    from neurender.engine.vram import MemoryPlan, batch_size_for

    device = models.device
    plan = MemoryPlan(
        width=shot.width, height=shot.height, frames=len(shot.frames), consistency=settings.consistency,
        window_size=settings.window_size, keyframe_block=settings.keyframe_block, dtype=models.dtype,
        cfg=settings.guidance_scale > 1, controlnets=len(models.kinds),
        fused_attention=device.split(":")[0] != "mps",  # torch 2 SDPA: flash / memory-efficient on CUDA and the CPU
        attention_slice=settings.attention_slice, vae_slicing=settings.vae_slicing, vae_tiling=settings.vae_tiling,
        cpu_offload=settings.cpu_offload,
    )
    batch = batch_size_for(plan, settings.batch_size, settings.vram_budget, device)
    return dataclasses.replace(settings, batch_size=batch)


def deflicker_options(settings: RenderSettings) -> "DeflickerOptions":
    from neurender.deflicker.sequence import DeflickerOptions

    return DeflickerOptions(window=settings.deflicker_window, method=settings.deflicker_method,
                            compensate=settings.deflicker_compensate, sharpen=settings.deflicker_sharpen)


def control_provider(shot: Shot, models: Models, settings: RenderSettings, frames: Sequence[int], *,
                     save_to: Optional[Path] = None,
                     should_stop: Optional[Callable[[], None]] = None) -> Optional["ControlProvider"]:
    """The control images of ``frames`` derived from the passes (all derived now, so a bad pass fails before the
    denoising); the provider preprocesses those of the positions asked for (one (n, 3, H, W) tensor per ControlNet
    unit) when the sampler asks. None without ControlNets."""
    from neurender.controls.builder import ControlBuilder

    builder = shot.builder
    if builder is None or builder.kinds != sorted(set(models.kinds)):  # the loaded units differ from the plan
        builder = ControlBuilder(shot.folder, sorted(set(models.kinds)), shot.width, shot.height,
                                 depth_smoothing=settings.depth_smoothing)
    images = {}
    for f in frames:
        if should_stop is not None:
            should_stop()
        images[f] = builder.images(f)
        if save_to is not None:
            builder.save(f, Path(save_to))
    if not models.kinds:
        return None
    process = models.pipe.control_image_processor.preprocess
    frames = list(frames)

    def provide(positions: Sequence[int]) -> list:
        return [process([images[frames[p]][kind] for p in positions], height=shot.height, width=shot.width)
                for kind in models.kinds]

    return provide


def consistency_strategy(settings: RenderSettings, shot: Shot, models: Models) -> Optional["ConsistencyStrategy"]:
    """The strategy when it needs more than the sampler's options (keyframes: the pass folder's exact motion and the
    img2img source; a motion module: its UNet); None: the sampler picks it from ``SamplerOptions.consistency``
    (``engine/strategy.py``)."""
    if settings.consistency != "keyframes":
        if settings.motion_module:  # issue #14: AnimateDiff over context windows of the shot
            from neurender.engine.motion_windows import MotionWindows

            return MotionWindows(_motion_unet(models, settings.motion_module), context_length=settings.context_length,
                                 context_overlap=settings.context_overlap, name=settings.consistency)
        return None
    from neurender.engine.keyframes import keyframe_strategy

    folder, frames, width, height = shot.folder, shot.frames, shot.width, shot.height
    img2img = None
    if settings.img2img_strength > 0:
        from neurender.engine.pnp import Img2Img, source_frames_from_passes

        img2img = Img2Img(
            source=lambda: source_frames_from_passes(folder, frames, width, height),
            strength=settings.img2img_strength,
            inversion_steps=settings.inversion_steps,
            pnp_features=settings.pnp_features,
            pnp_attention=settings.pnp_attention,
        )
    return keyframe_strategy(folder, frames, width, height, block=settings.keyframe_block, img2img=img2img)


def _motion_unet(models: Models, path: str):
    """The motion UNet of the loaded UNet and the motion module at ``path``, kept on the cache's entry for the next
    job (the cache keeps it; one motion module at a time)."""
    from neurender.models.motion import load_motion_adapter, motion_unet

    key = str(Path(path).expanduser().resolve())
    held = getattr(models.loaded, "motion", None)
    if held is not None and held[0] == key:
        return held[1]
    unet = models.pipe.unet
    adapter = load_motion_adapter(path, dict(unet.config), torch_dtype=unet.dtype)
    model = motion_unet(unet, adapter)
    models.loaded.motion = (key, model)
    return model


def deflicker_hooks(settings: RenderSettings, shot: Shot, vae_scale_factor: int) -> list["StepHook"]:
    """The in-iteration deflicker at ``settings.deflicker_steps`` (empty: none), with the pass folder's motion."""
    if not settings.deflicker_steps:
        return []
    from neurender.deflicker.render_glue import step_hooks

    return step_hooks(deflicker_options(settings), settings.deflicker_steps, settings.deflicker_space, shot.folder,
                      shot.frames, shot.width, shot.height, vae_scale_factor)


def build_sampler(
    settings: RenderSettings,
    shot: Shot,
    models: Models,
    *,
    num_frames: int,
    controls: Optional["ControlProvider"],
    options: Optional["SamplerOptions"] = None,
    hooks: Sequence["StepHook"] = (),
    strategy: Optional["ConsistencyStrategy"] = None,
    **run_options,
) -> "LockstepSampler":
    """The sampler of ``num_frames`` frames with ``controls`` (``control_provider``); ``options`` default to the
    settings'. ``run_options``: the sampler's run-time fields (``on_step``, ``should_stop``, ``checkpoint_path``,
    ``fingerprint``)."""
    from neurender.engine.sampler import LockstepSampler

    return LockstepSampler(
        pipe=models.pipe,
        options=options or sampler_options(settings, len(models.kinds)),
        num_frames=num_frames,
        height=shot.height,
        width=shot.width,
        controls=controls,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        reference_image=shot.reference,
        anchors=shot.anchors.data if shot.anchors is not None else None,
        hooks=list(hooks),
        strategy=strategy,
        **run_options,
    )
