"""The job runner: the one entry point that renders a pass folder into frames.

The CLI (``neurender render``) and the HTTP server (``neurender serve``) are thin adapters over ``run_render``;
neither holds algorithm code. The runner is open -> load -> build -> run on top of the job plan (``neurender.plan``,
which turns the settings into engine objects) and owns the durability rules:

* the settings are validated up front, the pass folder is opened and checked before any model is loaded;
* frames already finished (a decodable ``frame_NNNN.png``) are skipped unless ``overwrite``; if every requested frame
  exists nothing is loaded at all;
* the denoising state is checkpointed after every step in ``OUT/.neurender/state.pt``, so a killed job resumes at the
  step it reached; frames are written atomically as they are decoded;
* all frames of the shot advance in lockstep, even when only some are missing, so a resumed shot is as coherent as
  an uninterrupted one (only the missing frames are written).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from neurender.contract import Progress, RenderSettings
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
    settings_checked: bool = False
    """True: the caller checked ``settings`` where they entered its process (CLI arguments, the server's submit),
    so the runner trusts them; False (direct use of the API): the runner checks them first."""


@dataclass
class RenderResult:
    out_dir: Path
    frames_written: list[int] = field(default_factory=list)
    frames_skipped: list[int] = field(default_factory=list)
    random_model: bool = False
    resumed_from_step: int = 0
    anchors_digest: str = ""


MEMORY_OPTIONS = ("attention_slice", "vae_slicing", "cpu_offload", "vram_budget")
"""Settings that change the memory a render needs, not its result (engine/memory.py): left out of both fingerprints,
so a job killed for memory resumes with them switched on."""


def fingerprint(settings: RenderSettings, manifest_json: str, frames: list[int], size: tuple[int, int]) -> str:
    """A hash of everything that decides the denoising result (not ``overwrite``, nor the memory options)."""
    return settings.digest(("overwrite", *MEMORY_OPTIONS), manifest=manifest_json, frames=frames, size=size)


def look_fingerprint(settings: RenderSettings, manifest_json: str, size: tuple[int, int]) -> str:
    """A hash of what decides how the frames look; frame subsets, batching, device and precision are left out so a
    shot may be rendered into one folder in parts or on other hardware."""
    return settings.digest(("overwrite", "frames", "batch_size", "device", "dtype", *MEMORY_OPTIONS),
                           manifest=manifest_json, size=size)


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
    from neurender import plan
    from neurender.engine.memory import memory_scope
    from neurender.frames import finished_frames, remove_stale_temporaries

    settings = spec.settings
    if not spec.settings_checked:
        settings.check()
    cancel = cancel or CancelToken()
    shot = plan.open_shot(settings, spec.pass_dir, spec.anchors)  # bad input is refused before any model loads
    frames, size, manifest_json = shot.frames, (shot.width, shot.height), shot.folder.manifest.to_json()
    out_dir = Path(spec.out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a name over 255 bytes, a file in the way, no permission: the user's path
        raise InputError(f"the output folder {out_dir} cannot be created: {exc.strerror}") from None
    remove_stale_temporaries(out_dir)
    done = [] if settings.overwrite else finished_frames(out_dir, frames)
    _claim_output(out_dir, look_fingerprint(settings, manifest_json, size), done)
    todo = [f for f in frames if f not in done]
    reporter = _Reporter(progress, len(frames), settings.steps)
    reporter.progress.frames_done = len(done)  # frames kept from an earlier run count from the start: never backwards
    digest = shot.anchors.digest if shot.anchors is not None else ""
    result = RenderResult(out_dir=out_dir, frames_skipped=done, anchors_digest=digest)
    if not todo:
        log.info("all %d frames already exist in %s; nothing to do (use --overwrite to render again)", len(frames), out_dir)
        reporter.update(frames_done=len(frames), step=settings.steps, phase="done")
        return result
    if done:
        log.info("%d of %d frames already exist; rendering the shot again to write the other %d", len(done), len(frames), len(todo))

    models = _load_models(settings, pipelines, reporter)
    result.random_model = models.random_weights
    cancel.raise_if_cancelled()
    reporter.update(phase="controls", message="deriving control images from the passes")
    controls = plan.control_provider(shot, models, settings, frames, save_to=spec.save_controls,
                                     should_stop=cancel.raise_if_cancelled)
    state_path = out_dir / STATE_DIR / "state.pt"
    run_settings = plan.with_batch_size(settings, shot, models)  # batch size 0 / --vram-budget (issue 15)
    sampler = plan.build_sampler(
        run_settings, shot, models, num_frames=len(frames), controls=controls,
        hooks=_step_hooks(settings, shot, models, out_dir, reporter),
        strategy=_strategy(settings, shot, models, reporter),
        on_step=lambda s, n: reporter.update(step=s, phase="denoise", message=f"step {s}/{n}"),
        should_stop=cancel.raise_if_cancelled,
        checkpoint_path=state_path,
        fingerprint=fingerprint(settings, manifest_json, frames, size) + digest,
    )
    with memory_scope(models.pipe, sampler.device, settings.cpu_offload):  # model CPU offload (engine/memory.py)
        reporter.update(phase="denoise", message="denoising")
        latents = sampler.run()
        result.frames_written = _write_frames(sampler, latents, run_settings, shot, done, todo, out_dir, reporter,
                                              cancel)
    state_path.unlink(missing_ok=True)
    reporter.update(phase="done", message=f"{len(result.frames_written)} frames written")
    return result


def _load_models(settings: RenderSettings, pipelines, reporter: _Reporter):
    """``plan.load_models`` with ``auto`` device/dtype resolved and reported."""
    from neurender import plan
    from neurender.models.cache import PipelineCache
    from neurender.models.devices import pick_device, pick_dtype

    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    reporter.update(phase="loading", message=f"loading models ({device}, {dtype})", device=device, dtype=dtype)
    models = plan.load_models(settings, pipelines or PipelineCache(), device, dtype)
    reporter.update(random_weights=models.random_weights)
    return models


def _strategy(settings: RenderSettings, shot, models, reporter: _Reporter):
    """Keyframes with the passes' exact motion (issue #6), the motion module (issue #14), or the options' own."""
    from neurender import plan

    if settings.motion_module:
        reporter.update(phase="loading", message="loading the motion module")
    return plan.consistency_strategy(settings, shot, models)


def _step_hooks(settings: RenderSettings, shot, models, out_dir: Path, reporter: _Reporter) -> list:
    """The in-iteration deflicker (issue #5), then the live preview (issue #11) of the frames it may have changed."""
    from neurender import plan
    from neurender.engine.preview import PreviewPublisher

    hooks = plan.deflicker_hooks(settings, shot, models.pipe.vae_scale_factor)
    return [*hooks, PreviewPublisher(out_dir / STATE_DIR, lambda step: reporter.update(preview_step=step))]


def _write_frames(sampler, latents, settings: RenderSettings, shot, done: list[int], todo: list[int], out_dir: Path,
                  reporter: _Reporter, cancel: CancelToken) -> list[int]:
    """Decode and write the missing frames atomically; with the deflicker post pass (issue #5) every frame is decoded
    first and blended along the motion."""
    from neurender import plan
    from neurender.frames import frame_path, write_png_atomic

    frames = shot.frames
    reporter.update(phase="decode", message="decoding frames", frames_done=len(done))
    decoded = None
    if settings.post_deflicker:
        from neurender.deflicker.render_glue import post_deflicker

        decoded = sampler.decode(latents)
        reporter.update(phase="deflicker", message="deflickering frames")
        decoded = post_deflicker(decoded, plan.deflicker_options(settings), shot.folder, frames)
    written = []
    for s in range(0, len(frames), settings.batch_size):
        cancel.raise_if_cancelled()
        chunk = list(range(s, min(s + settings.batch_size, len(frames))))
        if not any(frames[p] in todo for p in chunk):
            continue
        images = decoded[chunk] if decoded is not None else sampler.decode(latents[chunk])
        for p, image in zip(chunk, images):
            if frames[p] in todo:
                write_png_atomic(frame_path(out_dir, frames[p]), image)
                written.append(frames[p])
        reporter.update(frames_done=len(done) + len(written))
    return written
