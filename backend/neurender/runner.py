"""The job runner: the one entry point that renders a pass folder into frames.

The CLI (``neurender render``) and the HTTP server (``neurender serve``) are thin adapters over ``run_render``;
neither holds algorithm code. The runner wires the pieces together and owns the durability rules:

* the settings are validated up front, the pass folder is opened and checked before any model is loaded;
* frames already finished (a decodable ``frame_NNNN.png``) are skipped unless ``overwrite``; if every requested frame
  exists nothing is loaded at all;
* the denoising state is checkpointed after every step in ``OUT/.neurender/state.pt``, so a killed job resumes at the
  step it reached; frames are written atomically as they are decoded;
* all frames of the shot advance in lockstep, even when only some are missing, so a resumed shot is as coherent as
  an uninterrupted one (only the missing frames are written).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from neurender.contract import Progress, RenderSettings, parse_frame_range
from neurender.errors import InputError, JobCancelled, OutputConflict

log = logging.getLogger(__name__)

ProgressCallback = Callable[[Progress], None]
STATE_DIR = ".neurender"


class CancelToken:
    """Set from another thread to stop a job at the next denoising step."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelled("job cancelled")


@dataclass
class JobSpec:
    pass_dir: Path
    out_dir: Path
    settings: RenderSettings
    save_controls: Optional[Path] = None
    anchors: Optional[Path] = None
    """Folder of precomputed anchors (``neurender anchors``, see ``neurender.farm.anchors``) shared by every chunk."""


@dataclass
class RenderResult:
    out_dir: Path
    frames_written: list[int] = field(default_factory=list)
    frames_skipped: list[int] = field(default_factory=list)
    random_model: bool = False
    resumed_from_step: int = 0
    anchors_digest: str = ""


def render_size(settings: RenderSettings, pass_width: int, pass_height: int) -> tuple[int, int]:
    """(width, height): the settings' size, or the pass folder's rounded down to a multiple of 8."""
    width = settings.width or (pass_width // 8) * 8
    height = settings.height or (pass_height // 8) * 8
    if width < 8 or height < 8:
        raise InputError(f"the pass resolution {pass_width}x{pass_height} is too small to render (minimum 8x8)")
    return width, height


MEMORY_OPTIONS = ("attention_slice", "vae_slicing", "cpu_offload", "vram_budget")
"""Settings that change the memory a render needs, not its result (engine/memory.py): left out of both fingerprints,
so a job killed for memory resumes with them switched on."""


def fingerprint(settings: RenderSettings, manifest_json: str, frames: list[int], size: tuple[int, int]) -> str:
    """A hash of everything that decides the denoising result (not ``overwrite``, nor the memory options)."""
    data = settings.to_dict()
    for name in ("overwrite", *MEMORY_OPTIONS):
        data.pop(name, None)
    blob = json.dumps({"settings": data, "manifest": manifest_json, "frames": frames, "size": size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def look_fingerprint(settings: RenderSettings, manifest_json: str, size: tuple[int, int]) -> str:
    """A hash of what decides how the frames look; frame subsets, batching, device and precision are left out so a
    shot may be rendered into one folder in parts or on other hardware."""
    data = settings.to_dict()
    for name in ("overwrite", "frames", "batch_size", "device", "dtype", *MEMORY_OPTIONS):
        data.pop(name, None)
    blob = json.dumps({"settings": data, "manifest": manifest_json, "size": size}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _claim_output(out_dir: Path, look: str, done: list[int]) -> None:
    """Refuse to add frames of other settings to a folder holding finished frames (a shot that mixes two looks).

    ``OUT/.neurender/render.json`` records the look fingerprint of the frames in the folder.
    """
    from neurender.frames import write_bytes_atomic

    record = out_dir / STATE_DIR / "render.json"
    try:
        previous = json.loads(record.read_text()).get("look") if record.exists() else None
    except (OSError, ValueError, AttributeError):
        previous = None
    if done and previous is not None and previous != look:
        raise OutputConflict(
            f"{out_dir} already holds {len(done)} frames rendered with other settings; render into another folder "
            "or use --overwrite to replace them"
        )
    if previous != look:
        write_bytes_atomic(record, json.dumps({"look": look}).encode())


class _Reporter:
    def __init__(self, callback: Optional[ProgressCallback], frames_total: int, steps_total: int) -> None:
        self.callback = callback
        self.progress = Progress(frames_total=frames_total, steps_total=steps_total)

    def update(self, **changes) -> None:
        for key, value in changes.items():
            setattr(self.progress, key, value)
        if self.callback is not None:
            self.callback(Progress(**self.progress.to_dict()))


def run_render(
    spec: JobSpec,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    pipelines=None,
) -> RenderResult:
    """Render ``spec.pass_dir`` into ``spec.out_dir`` (``frame_0001.png`` ...), atomically, skipping done frames.

    Raises ``InputError`` subclasses for bad input, ``JobCancelled`` when ``cancel`` is set (frames already
    written stay), anything else for internal failures. ``pipelines`` is a ``PipelineCache`` to keep models
    loaded between jobs (a fresh one is used when None).
    """
    # Heavy imports stay inside the call: importing the runner must not import torch.
    from neurender.controls.builder import ControlBuilder
    from neurender.engine.sampler import LockstepSampler
    from neurender.frames import finished_frames, frame_path, remove_stale_temporaries, write_png_atomic
    from neurender.models.cache import PipelineCache
    from neurender.passes.folder import PassFolder

    settings = spec.settings
    settings.check()
    cancel = cancel or CancelToken()
    frame_range = parse_frame_range(settings.frames) if settings.frames else None
    folder = PassFolder.open(spec.pass_dir, frames=frame_range)
    frames = list(folder.frames)
    width, height = render_size(settings, folder.width, folder.height)
    anchor_set = None
    if spec.anchors is not None:  # render farm (issue #7): checked up front, before any model is loaded
        from neurender.farm.anchors import load_anchors

        anchor_set = load_anchors(spec.anchors, settings)
    # a bad reference image is bad input too: refused before any model is loaded
    reference = _open_reference(settings.reference_image) if settings.reference_image else None
    if settings.motion_module:  # issue #14: a missing / SDXL / non-motion-module file is refused before any load
        from neurender.models.motion import check_motion_module

        check_motion_module(settings.motion_module)
    if settings.img2img_strength > 0 and not folder.has_pass("combined"):
        raise InputError("restyling (img2img strength > 0) needs the Combined (beauty) pass, and this pass folder "
                         "has none")
    # the pixel pre-pass (every frame read once; corrupt depth or data, a shot without geometry) and the control
    # checks, before any model loads and before anything is written to the output folder
    builder = ControlBuilder(folder, sorted(set(_planned_kinds(settings))), width, height,
                             depth_smoothing=settings.depth_smoothing)
    out_dir = Path(spec.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)
    done = [] if settings.overwrite else finished_frames(out_dir, frames)
    _claim_output(out_dir, look_fingerprint(settings, folder.manifest.to_json(), (width, height)), done)
    todo = [f for f in frames if f not in done]
    reporter = _Reporter(progress, len(frames), settings.steps)
    reporter.progress.frames_done = len(done)  # frames kept from an earlier run count from the start: never backwards
    result = RenderResult(out_dir=out_dir, frames_skipped=done, anchors_digest=anchor_set.digest if anchor_set else "")
    if not todo:
        log.info("all %d frames already exist in %s; nothing to do (use --overwrite to render again)", len(frames), out_dir)
        reporter.update(frames_done=len(frames), step=settings.steps, phase="done")
        return result
    if done:
        log.info("%d of %d frames already exist; rendering the shot again to write the other %d", len(done), len(frames), len(todo))

    from neurender.models.devices import pick_device, pick_dtype

    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    reporter.update(phase="loading", message=f"loading models ({device}, {dtype})", device=device, dtype=dtype)
    loaded, kinds = _load(settings, pipelines or PipelineCache(), device, dtype)
    result.random_model = loaded.random_weights
    reporter.update(random_weights=bool(loaded.random_weights))
    cancel.raise_if_cancelled()

    reporter.update(phase="controls", message="deriving control images from the passes")
    if builder.kinds != sorted(set(kinds)):  # the loaded units differ from the plan (cheap: the pre-pass is kept)
        builder = ControlBuilder(folder, sorted(set(kinds)), width, height, depth_smoothing=settings.depth_smoothing)
    controls = {}
    for f in frames:
        cancel.raise_if_cancelled()
        controls[f] = builder.images(f)
        if spec.save_controls is not None:
            builder.save(f, Path(spec.save_controls))
    pipe = loaded.pipe

    def provide(positions):
        return [
            pipe.control_image_processor.preprocess([controls[frames[p]][kind] for p in positions], height=height, width=width)
            for kind in kinds
        ]

    state_path = out_dir / STATE_DIR / "state.pt"
    # deflicker (issue #5): in-iteration hooks from settings.deflicker_steps, with the pass folder's exact motion
    from neurender.deflicker.render_glue import post_deflicker, step_hooks

    hooks = step_hooks(settings, folder, frames, width, height, pipe.vae_scale_factor)
    # live preview (issue #11): the predicted frames after every step, after any deflicker hook changed them
    from neurender.engine.preview import PreviewPublisher

    hooks = [*hooks, PreviewPublisher(out_dir / STATE_DIR, lambda step: reporter.update(preview_step=step))]
    strategy = None
    if settings.consistency == "keyframes":  # issue #6: keyframes + token propagation along the passes' exact motion
        from neurender.engine.keyframes import keyframe_strategy

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
        strategy = keyframe_strategy(folder, frames, width, height, block=settings.keyframe_block, img2img=img2img)
    elif settings.motion_module:  # issue #14: AnimateDiff over context windows of the shot
        from neurender.engine.motion_windows import MotionWindows

        reporter.update(phase="loading", message="loading the motion module")
        strategy = MotionWindows(
            _motion_unet(loaded, settings.motion_module),
            context_length=settings.context_length,
            context_overlap=settings.context_overlap,
            name=settings.consistency,
        )

    # memory (issue 15): batch size 0 / --vram-budget chooses the frames per call from the memory there is
    from neurender.engine.memory import memory_scope
    from neurender.engine.vram import batch_size_for

    batch = batch_size_for(settings, width, height, len(frames), device, dtype, len(kinds))
    run_settings = dataclasses.replace(settings, batch_size=batch)
    sampler = LockstepSampler(
        pipe=pipe,
        options=sampler_options(run_settings, len(kinds)),
        num_frames=len(frames),
        height=height,
        width=width,
        controls=provide if kinds else None,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        reference_image=reference,
        anchors=anchor_set.data if anchor_set is not None else None,
        hooks=hooks,
        strategy=strategy,
        on_step=lambda s, n: reporter.update(step=s, phase="denoise", message=f"step {s}/{n}"),
        should_stop=cancel.raise_if_cancelled,
        checkpoint_path=state_path,
        fingerprint=fingerprint(settings, folder.manifest.to_json(), frames, (width, height))
        + (anchor_set.digest if anchor_set is not None else ""),
    )
    with memory_scope(pipe, device, settings.cpu_offload):  # model CPU offload (engine/memory.py) when asked
        reporter.update(phase="denoise", message="denoising")
        latents = sampler.run()

        reporter.update(phase="decode", message="decoding frames", frames_done=len(done))
        decoded = None
        if settings.post_deflicker:  # deflicker post pass (issue #5): decode every frame, then blend along the motion
            decoded = sampler.decode(latents)
            reporter.update(phase="deflicker", message="deflickering frames")
            decoded = post_deflicker(decoded, settings, folder, frames)
        written = []
        for s in range(0, len(frames), run_settings.batch_size):
            cancel.raise_if_cancelled()
            chunk = list(range(s, min(s + run_settings.batch_size, len(frames))))
            if not any(frames[p] in todo for p in chunk):
                continue
            images = decoded[chunk] if decoded is not None else sampler.decode(latents[chunk])
            for p, image in zip(chunk, images):
                if frames[p] in todo:
                    write_png_atomic(frame_path(out_dir, frames[p]), image)
                    written.append(frames[p])
            reporter.update(frames_done=len(done) + len(written))
    state_path.unlink(missing_ok=True)
    result.frames_written = written
    reporter.update(phase="done", message=f"{len(written)} frames written")
    return result


def sampler_options(settings: RenderSettings, control_units: int, **overrides):
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
        batch_size=settings.batch_size or 4,  # 0 (auto) is resolved by the caller that knows the device (run_render)
        attention_slice=settings.attention_slice,
        vae_slicing=settings.vae_slicing,
        vae_tiling=settings.vae_tiling,
        control_scales=[u.weight for u in units] or [1.0] * control_units,
        control_start=[u.guidance_start for u in units],
        control_end=[u.guidance_end for u in units],
    )
    options.update(overrides)
    return SamplerOptions(**options)


def _planned_kinds(settings: RenderSettings) -> list[str]:
    """The control kinds ``_load`` will return, known before loading (no model: the demo's depth and edges)."""
    if settings.controlnets or settings.model:
        return [u.kind for u in settings.controlnets]
    return ["depth", "edges"]


def _load(settings: RenderSettings, cache, device: str = "", dtype: str = ""):
    """The pipeline for these settings and the control kind of each ControlNet unit, in order.

    ``device``/``dtype``: the settings' values with ``auto`` resolved (default: the settings' own)."""
    from neurender.models.random_models import default_demo_model

    controlnets = [(u.kind, u.model) for u in settings.controlnets]
    model = settings.model
    if not model:
        demo = default_demo_model()
        model = str(demo.model)
        if not controlnets:
            controlnets = [(kind, str(path)) for kind, path in demo.controlnets.items() if kind in ("depth", "edges")]
        log.warning(
            "NO MODEL GIVEN: rendering with neurender's built-in RANDOM-WEIGHT demo model. The output is noise-like "
            "patterns, not an image. Pass --model PATH (an SD 1.5 checkpoint) for real results."
        )
    from neurender.models.devices import pick_device, pick_dtype

    device = device or pick_device(settings.device)
    dtype = dtype or pick_dtype(settings.dtype, device)
    loaded = cache.get(
        model, controlnets, settings.loras, device, dtype,
        embeddings=settings.embeddings, prediction_type=settings.prediction_type,
    )
    if not settings.model:
        loaded.random_weights = True
    return loaded, [kind for kind, _ in controlnets]


def _motion_unet(loaded, path: str):
    """The motion UNet of ``loaded``'s UNet and the motion module at ``path``, kept on ``loaded`` for the next job
    (the cache keeps ``loaded``; one motion module at a time)."""
    from neurender.models.motion import load_motion_adapter, motion_unet

    key = str(Path(path).expanduser().resolve())
    held = getattr(loaded, "motion", None)
    if held is not None and held[0] == key:
        return held[1]
    unet = loaded.pipe.unet
    adapter = load_motion_adapter(path, dict(unet.config), torch_dtype=unet.dtype)
    model = motion_unet(unet, adapter)
    loaded.motion = (key, model)
    return model


def _open_reference(path: str):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"reference image {path} does not exist") from None
    except Exception as exc:
        raise InputError(f"reference image {path} cannot be read: {exc}") from None
