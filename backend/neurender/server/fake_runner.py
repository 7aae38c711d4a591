"""A stand-in job runner with the exact interface of ``neurender.runner.run_render``, for tests and benchmarks of
the HTTP layer (no torch, no model).

It reads the pass folder's manifest, "denoises" each frame in ``settings.steps`` steps of
``NEURENDER_FAKE_STEP_SECONDS`` (read at call time, default 0.01 s), checks the cancel token at every step,
skips frames already on disk, and writes a small deterministic PNG per frame atomically (temp file, fsync,
rename), so a killed process never leaves a partial frame under a final name.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path
from typing import Optional

from neurender.contract import FRAME_FILE_PATTERN, MANIFEST_NAME, PassManifest, Progress, render_size
from neurender.runner import CancelToken, JobSpec, ProgressCallback, RenderResult

STEP_SECONDS_ENV = "NEURENDER_FAKE_STEP_SECONDS"


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """Encode 8-bit RGB pixels as a PNG (stdlib only)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + rgb[y * width * 3 : (y + 1) * width * 3] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _frame_pixels(width: int, height: int, seed: int, frame: int, prompt: str) -> bytes:
    key = zlib.crc32(f"{seed}:{frame}:{prompt}".encode())
    out = bytearray(width * height * 3)
    for y in range(height):
        for x in range(width):
            i = (y * width + x) * 3
            out[i] = (x * 4 + key) & 0xFF
            out[i + 1] = (y * 4 + (key >> 8)) & 0xFF
            out[i + 2] = (frame * 16 + (key >> 16)) & 0xFF
    return bytes(out)


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def run_fake_render(
    spec: JobSpec,
    *,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    pipelines: object = None,
) -> RenderResult:
    step_seconds = float(os.environ.get(STEP_SECONDS_ENV, "0.01"))
    manifest = PassManifest.read(spec.pass_dir)  # the contract's rules, as the real runner
    frames = manifest.select_frames(spec.settings.frames)
    width, height = render_size(spec.settings, manifest.width, manifest.height)
    out_dir = Path(spec.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = RenderResult(out_dir=out_dir)
    steps = spec.settings.steps
    preview = out_dir / ".neurender" / "preview.png"
    preview.parent.mkdir(parents=True, exist_ok=True)
    state = Progress(frames_total=len(frames), steps_total=len(frames) * steps, phase="denoise")
    for index, frame in enumerate(frames):
        target = out_dir / FRAME_FILE_PATTERN.format(frame=frame)
        if target.exists() and not spec.settings.overwrite:
            result.frames_skipped.append(frame)
            state.frames_done += 1
            state.step = (index + 1) * steps
            if progress:
                progress(state)
            continue
        for step in range(steps):
            if cancel is not None:
                cancel.raise_if_cancelled()
            time.sleep(step_seconds)
            state.step = index * steps + step + 1
            state.message = f"frame {frame} step {step + 1}/{steps}"
            # a live preview like the real runner's (engine/preview.py): a small image that changes every step
            write_atomic(preview, png_bytes(16, 8, bytes([(state.step * 37) & 0xFF, frame & 0xFF, step & 0xFF]) * 128))
            state.preview_step = state.step
            if progress:
                progress(state)
        pixels = _frame_pixels(width, height, spec.settings.seed, frame, spec.settings.prompt)
        write_atomic(target, png_bytes(width, height, pixels))
        result.frames_written.append(frame)
        state.frames_done += 1
        if progress:
            progress(state)
    state.phase = "done"
    if progress:
        progress(state)
    return result


def write_fake_pass_folder(
    path: Path, frames: int = 4, width: int = 64, height: int = 48, start: int = 1, exr: bool = True
) -> Path:
    """A pass folder: ``manifest.json`` plus, with ``exr``, one small depth-only EXR per frame (a tilted plane at
    2..6 units), enough for the server's checks at submit and for the real runner's pixel pre-pass."""
    from neurender.contract import FrameEntry

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    manifest = PassManifest(
        frame_start=start,
        frame_end=start + frames - 1,
        fps=24.0,
        width=width,
        height=height,
        clip_start=0.1,
        clip_end=100.0,
        passes={"depth": "ViewLayer.Depth"},
        frames=[FrameEntry(frame=f, file=f"passes_{f:04d}.exr") for f in range(start, start + frames)],
        depth_range=(1.0, 10.0),
        generator="neurender fake pass folder",
    )
    if exr:
        import numpy as np

        from neurender.passes.exr import write_multilayer_exr

        ramp = np.linspace(2.0, 6.0, width, dtype=np.float32)
        for entry in manifest.frames:
            depth = np.repeat(ramp[None, :], height, axis=0) + np.float32(0.01 * (entry.frame - start))
            write_multilayer_exr(path / entry.file, {"ViewLayer.Depth.Z": depth})
    (path / MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
    return path
