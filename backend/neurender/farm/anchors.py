"""Shared anchors: the anchor frames' denoising trajectory, computed once per shot and read by every chunk.

Cross-frame attention makes frames draw their appearance from anchor frames (Text2Video-Zero's first frame,
Khachatryan et al. 2023, Sec. 3.3; Rerender-A-Video's first + previous frame, Yang et al. 2023, Sec. 4.1). When a
shot is cut into chunks rendered on different machines, each chunk's own first frame would be a different anchor and
the chunks would drift apart. So ``neurender anchors`` denoises a few anchor frames once, jointly (every anchor
attends to all anchors, as in DiffSynth-Studio's windows), and records their latents x_t at the input of every
step. A chunk then evaluates those saved latents at each step as a reference pass (``engine.sampler.AnchorFrames``)
and its frames attend to them instead of to the chunk's first frame: every chunk, on every node, sees bit-identical
anchors because they are read from one file, not recomputed.

Folder layout (``DIR``): ``anchors.pt`` (latents (steps, K, C, h, w) and the control tensors (K, 3, H, W) per
ControlNet unit, loaded with ``weights_only=True``), ``anchors.json`` (version, anchor frame numbers, size, the
settings that must match, the SHA-256 of ``anchors.pt``; written last, so it marks a complete folder), and
``anchor_NNNN.png`` (the anchors' final images, for people and for looks).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from neurender.contract import ANCHOR_MODES, RenderSettings, parse_frame_range
from neurender.errors import AnchorError

log = logging.getLogger(__name__)

ANCHORS_VERSION = 1
ANCHORS_META = "anchors.json"
ANCHORS_DATA = "anchors.pt"
ANCHOR_IMAGE = "anchor_{frame:04d}.png"


def anchor_key(settings: RenderSettings) -> dict:
    """What must be equal between the anchors run and a render that uses them.

    The timesteps (steps, scheduler) must match step for step, and the latent space and attention features must be
    the same model (base model, LoRAs, ControlNet kinds and models in order). Prompt, seed, guidance and size may
    differ: the anchors are evaluated with the render's own prompt, and their tokens need not match its size.
    """
    return {
        "model": settings.model,
        "loras": [[lo.path, lo.weight] for lo in settings.loras],
        "controlnets": [[u.kind, u.model] for u in settings.controlnets],
        "steps": settings.steps,
        "scheduler": settings.scheduler,
    }


def pick_anchor_frames(frames: Sequence[int], count: int) -> list[int]:
    """``count`` frames spread evenly over the shot, first and last included (the middle one for a single anchor)."""
    frames = sorted(frames)
    if count < 1:
        raise AnchorError(f"anchor count {count} must be at least 1")
    if count >= len(frames):
        return list(frames)
    if count == 1:
        return [frames[len(frames) // 2]]
    return sorted({frames[int(j * (len(frames) - 1) / (count - 1) + 0.5)] for j in range(count)})


@dataclass
class AnchorSet:
    """Loaded anchors: frame numbers, the sampler's ``AnchorFrames`` and the data file's digest."""

    folder: Path
    frames: list[int]
    digest: str
    meta: dict
    data: object  # engine.sampler.AnchorFrames


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_meta(folder: Path) -> dict:
    folder = Path(folder)
    meta_path = folder / ANCHORS_META
    if not meta_path.is_file():
        raise AnchorError(
            f"anchors folder {folder} has no {ANCHORS_META}; create it with `neurender anchors PASS_DIR --out {folder}`"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AnchorError(f"{meta_path} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("version") != ANCHORS_VERSION:
        raise AnchorError(f"{meta_path} has anchors version {meta.get('version') if isinstance(meta, dict) else '?'}; "
                         f"this neurender reads version {ANCHORS_VERSION}")
    return meta


def check_compatible(meta: dict, settings: RenderSettings, folder: Path) -> None:
    want = anchor_key(settings)
    have = meta.get("key", {})
    for name, value in want.items():
        if have.get(name) != value:
            raise AnchorError(
                f"anchors in {folder} were computed with {name} = {have.get(name)!r}, but this render uses {value!r}; "
                "compute anchors with the same settings"
            )


def load_anchors(folder: Path | str, settings: RenderSettings) -> AnchorSet:
    """Read and verify an anchors folder for a render with ``settings`` (InputError when it does not fit)."""
    import torch

    from neurender.engine.sampler import AnchorFrames

    folder = Path(folder)
    if settings.consistency not in ANCHOR_MODES:
        raise AnchorError(f"shared anchors work with consistency {', '.join(ANCHOR_MODES)}, not {settings.consistency!r}")
    meta = read_meta(folder)
    check_compatible(meta, settings, folder)
    data_path = folder / ANCHORS_DATA
    try:
        raw = data_path.read_bytes()
    except OSError as exc:
        raise AnchorError(f"anchors data {data_path} cannot be read: {exc}") from None
    digest = _digest(raw)
    if digest != meta.get("digest"):
        raise AnchorError(
            f"anchors data {data_path} does not match its {ANCHORS_META} (corrupt or replaced); compute the anchors again"
        )
    payload = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    controls = payload.get("controls") or None
    frames = AnchorFrames(latents=payload["latents"], controls=controls)
    return AnchorSet(folder=folder, frames=[int(f) for f in meta["frames"]], digest=digest, meta=meta, data=frames)


def anchors_ready(folder: Path | str, settings: RenderSettings, frames: Sequence[int], pass_dir: Path | str) -> bool:
    """True if ``folder`` already holds complete anchors of these frames of this pass folder for these settings
    (idempotent reruns; anchors of another shot with the same frame numbers are not reused)."""
    try:
        meta = read_meta(Path(folder))
        check_compatible(meta, settings, Path(folder))
    except AnchorError:
        return False
    same = (meta.get("frames") == list(frames) and meta.get("settings_hash") == _settings_hash(settings)
            and meta.get("pass_dir") == str(Path(pass_dir).resolve()))
    return same and (Path(folder) / ANCHORS_DATA).is_file()


def _settings_hash(settings: RenderSettings) -> str:
    data = settings.to_dict()
    for name in ("frames", "overwrite"):
        data.pop(name, None)
    return _digest(json.dumps(data, sort_keys=True).encode())


def compute_anchors(
    pass_dir: Path | str,
    out_dir: Path | str,
    settings: RenderSettings,
    *,
    count: int = 3,
    frames: Optional[Sequence[int]] = None,
    pipelines=None,
    progress=None,
    cancel=None,
) -> AnchorSet:
    """Denoise the anchor frames of a shot once and save their trajectory to ``out_dir``.

    ``frames`` are explicit anchor frame numbers; otherwise ``count`` frames are spread over ``settings.frames`` (or
    the whole shot). A folder that already holds the same anchors is returned as is. ``progress(step, steps)``.
    """
    import torch

    from neurender.controls.builder import ControlBuilder
    from neurender.engine.sampler import LockstepSampler
    from neurender.frames import write_bytes_atomic, write_png_atomic
    from neurender.models.cache import PipelineCache
    from neurender.passes.folder import PassFolder
    from neurender.runner import _load, _open_reference, render_size, sampler_options

    settings.check()
    if settings.consistency == "off":
        raise AnchorError("anchors need cross-frame attention, but consistency is off; choose first, first+prev or window")
    out = Path(out_dir)
    shot = PassFolder.open(pass_dir, frames=parse_frame_range(settings.frames) if settings.frames else None)
    if frames:
        missing = sorted(set(frames) - set(shot.frames))
        if missing:
            raise AnchorError(
                f"anchor frames {missing} are not frames of the pass folder {pass_dir} "
                f"(range {shot.frames[0]}-{shot.frames[-1]})"
            )
        chosen = sorted(set(int(f) for f in frames))
    else:
        chosen = pick_anchor_frames(shot.frames, count)
    if not settings.overwrite and anchors_ready(out, settings, chosen, pass_dir):
        log.info("anchors in %s are up to date (frames %s)", out, chosen)
        return load_anchors(out, settings)
    width, height = render_size(settings, shot.width, shot.height)

    loaded, kinds = _load(settings, pipelines or PipelineCache())
    pipe = loaded.pipe
    builder = ControlBuilder(shot, sorted(set(kinds)), width, height, depth_smoothing=settings.depth_smoothing)
    images = {f: builder.images(f) for f in chosen}
    controls = [
        pipe.control_image_processor.preprocess([images[f][kind] for f in chosen], height=height, width=width)
        for kind in kinds
    ]
    recorded: list[torch.Tensor] = []

    def record(ctx):  # the anchors' x_t at the input of every step
        recorded.append(ctx.latents.detach().to("cpu", torch.float32).clone())
        return None

    sampler = LockstepSampler(
        pipe=pipe,
        options=sampler_options(
            settings, len(kinds),
            consistency="window",  # joint attention over all anchors
            window_size=max(len(chosen), 2),
            window_stride=1,
        ),
        num_frames=len(chosen),
        height=height,
        width=width,
        controls=(lambda positions: [c[list(positions)] for c in controls]) if kinds else None,
        prompt=settings.prompt,
        negative_prompt=settings.negative_prompt,
        reference_image=_open_reference(settings.reference_image) if settings.reference_image else None,
        hooks=[record],
        on_step=progress,
        should_stop=cancel.raise_if_cancelled if cancel is not None else None,
    )
    final = sampler.run()
    buf = io.BytesIO()
    torch.save({"latents": torch.stack(recorded), "controls": [c.to(torch.float32) for c in controls]}, buf)
    raw = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    (out / ANCHORS_META).unlink(missing_ok=True)  # the folder is incomplete until the new metadata lands
    write_bytes_atomic(out / ANCHORS_DATA, raw)
    for f, image in zip(chosen, sampler.decode(final)):
        write_png_atomic(out / ANCHOR_IMAGE.format(frame=f), image)
    meta = {
        "version": ANCHORS_VERSION,
        "frames": chosen,
        "size": [width, height],
        "key": anchor_key(settings),
        "settings_hash": _settings_hash(settings),
        "digest": _digest(raw),
        "control_kinds": list(kinds),
        "pass_dir": str(Path(pass_dir).resolve()),
        "settings": settings.to_dict(),
    }
    write_bytes_atomic(out / ANCHORS_META, json.dumps(meta, indent=1, sort_keys=True).encode())
    log.info("anchors of frames %s written to %s", chosen, out)
    return load_anchors(out, settings)
