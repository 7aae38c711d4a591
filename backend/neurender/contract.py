"""The wire contract between the Blender extension and the neurender backend.

This module is the single source of truth for everything that crosses the boundary:

* the pass folder (``manifest.json`` + per-frame multilayer EXR) that Blender writes and the backend reads,
* the typed render settings (one object, validated up front, used by the CLI, the server and the add-on),
* job states, progress records and the HTTP routes of ``neurender serve``.

It uses the Python standard library only: the extension build script copies this file verbatim into the
extension zip (as ``neurender_contract.py``), so Blender's bundled Python can import it without torch.
Keep it that way; a test enforces it.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change to the HTTP API or the settings object."""

PASS_SCHEMA_VERSION = 1
"""Version of the pass-folder layout (``manifest.json``)."""

MANIFEST_NAME = "manifest.json"
FRAME_FILE_PATTERN = "frame_{frame:04d}.png"
CONTROLS_DIR = ".neurender/controls"
"""``neurender serve`` writes the control images it derived from the passes here, inside a job's output folder,
one ``CONTROL_FILE_PATTERN`` per kind and frame (the CLI does the same with ``--save-controls DIR``)."""
CONTROL_FILE_PATTERN = "{kind}_{frame:04d}.png"
"""Names of output frames; ``frame`` is the Blender frame number."""

PASS_FILE_PATTERN = "passes_{frame:04d}.exr"
"""Names of per-frame multilayer EXR files inside a pass folder."""

# Upper bounds that keep one request from exhausting a machine. The server refuses anything beyond them.
MAX_RESOLUTION = 2048
MAX_STEPS = 150
MAX_FRAMES = 10000
MAX_CONTROLNETS = 4
MAX_PROMPT_CHARS = 4000
MAX_EMBEDDINGS = 64

# Depth background: Cycles writes 1e10 where no geometry is hit (EEVEE about 1000). Anything at or beyond
# this fraction of the stored far value is treated as background.
DEPTH_BACKGROUND_THRESHOLD = 1e9

# The pass names the backend understands (keys of ``PassManifest.passes``).
KNOWN_PASSES = ("depth", "normal", "vector", "object_index", "combined")

SCHEDULERS = ("ddim", "euler_a", "dpmpp_2m", "lcm", "tcd")
FEW_STEP_SCHEDULERS = ("lcm", "tcd")
"""Consistency-distilled samplers (LCM-LoRA, TCD / Hyper-SD LoRAs): at most 50 steps (their distillation schedule)."""
CONSISTENCY_MODES = ("off", "first", "first+prev", "window", "keyframes")
DEFAULT_CONSISTENCY = "first+prev"
ANCHOR_MODES = ("first", "first+prev", "window")
"""Consistency modes whose cross-frame attention takes precomputed shared anchors (``neurender anchors``)."""
CONTROL_KINDS = ("depth", "normal", "edges")
DTYPES = ("float32", "float16", "bfloat16", "auto")
"""``auto``: float16 on a GPU, float32 on the CPU (resolved by the backend, which reports what it picked)."""
DEFLICKER_SPACES = ("pixel", "latent")
DEVICES = ("cpu", "cuda", "mps", "auto")
PREDICTION_TYPES = ("auto", "epsilon", "v_prediction")
"""What the UNet predicts. ``auto``: a ``.yaml`` next to a single-file checkpoint (``parameterization: "v"``), else the
model folder's scheduler config, else ``epsilon`` (SD 1.5). ``v_prediction`` for SD1.x v-prediction fine-tunes."""
"""``auto``: CUDA, else MPS, else the CPU (resolved by the backend, which reports what it picked)."""


class ErrorKind(str, enum.Enum):
    """Why a request or a job failed, as one machine-readable word.

    Carried as ``error_kind`` in every 4xx/5xx body of ``neurender serve`` and in every failed (or cancelled) job
    record, so a client words each kind for the artist without parsing the ``detail`` text. The value is the wire
    string; ``ERROR_STATUS`` gives the HTTP status the server answers with. Adding a kind is a compatible change
    (clients treat an unknown kind like ``internal``); renaming one is not.
    """

    BAD_REQUEST = "bad_request"
    """The request body has the wrong shape: not JSON, a missing or unknown field, a value of the wrong type."""
    BAD_HEADER = "bad_header"
    """An HTTP header that cannot be parsed (e.g. a ``Content-Length`` that is not a number)."""
    BAD_SETTINGS = "bad_settings"
    """A RenderSettings field is invalid (unknown key, wrong type, out of range, contradictory fields)."""
    BAD_FRAMES = "bad_frames"
    """The ``frames`` subset selects no frame of the pass folder, or more frames than one job may hold."""
    BAD_PASS_FOLDER = "bad_pass_folder"
    """The pass folder is missing, incomplete or corrupt (manifest, EXR files, required passes)."""
    BAD_INPUT = "bad_input"
    """Other input that cannot be rendered (an unreadable reference image, a pass resolution below 8x8 ...)."""
    BAD_ANCHORS = "bad_anchors"
    """A render-farm anchor folder that is missing, corrupt or computed for other settings."""
    BAD_UPLOAD = "bad_upload"
    """An uploaded zip that is not a safe, readable archive of one pass folder."""
    MODEL_MISSING = "model_missing"
    """A model, ControlNet, LoRA or other weight file named in the settings does not exist."""
    MODEL_INVALID = "model_invalid"
    """A model file exists but is corrupt, of the wrong kind or does not fit the base model."""
    PATH_REFUSED = "path_refused"
    """A path in a request is malformed (relative, contains ``..``, not a folder where one is needed)."""
    PATH_OUTSIDE_ROOTS = "path_outside_roots"
    """A path lies outside the folders this server may read or write (``--root``/``--model-root``)."""
    OUTPUT_CONFLICT = "output_conflict"
    """The output folder already holds frames rendered with other settings (render elsewhere or overwrite)."""
    BUSY = "busy"
    """The output folder is being written by another queued or running job."""
    QUEUE_FULL = "queue_full"
    """The server's queue holds its maximum of active jobs; retry later."""
    TOKEN = "token"
    """The bearer token is missing or wrong."""
    FORBIDDEN = "forbidden"
    """The request came from a web page (an ``Origin`` header); only the add-on and the CLI may call."""
    WRONG_HOST = "wrong_host"
    """A server bound to localhost got a request addressed to another host name (DNS-rebinding guard)."""
    TOO_LARGE = "too_large"
    """The request body or an uploaded archive exceeds the server's size limits."""
    NOT_FOUND = "not_found"
    """No such job, route or frame (or the frame is not finished yet)."""
    METHOD_NOT_ALLOWED = "method_not_allowed"
    """The route exists but not with this HTTP method; the ``Allow`` header lists the ones it has."""
    CANCELLED = "cancelled"
    """The job was cancelled on request; its finished frames stay on disk."""
    OUT_OF_MEMORY = "out_of_memory"
    """The device ran out of memory; a smaller size, batch size or precision may fit."""
    INTERNAL = "internal"
    """A failure inside neurender (a bug or a broken environment); the server log has the traceback."""


ERROR_STATUS: dict[ErrorKind, int] = {
    ErrorKind.BAD_REQUEST: 422,
    ErrorKind.BAD_HEADER: 400,
    ErrorKind.BAD_SETTINGS: 422,
    ErrorKind.BAD_FRAMES: 422,
    ErrorKind.BAD_PASS_FOLDER: 422,
    ErrorKind.BAD_INPUT: 422,
    ErrorKind.BAD_ANCHORS: 422,
    ErrorKind.BAD_UPLOAD: 400,
    ErrorKind.MODEL_MISSING: 422,
    ErrorKind.MODEL_INVALID: 422,
    ErrorKind.PATH_REFUSED: 400,
    ErrorKind.PATH_OUTSIDE_ROOTS: 403,
    ErrorKind.OUTPUT_CONFLICT: 409,
    ErrorKind.BUSY: 409,
    ErrorKind.QUEUE_FULL: 429,
    ErrorKind.TOKEN: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.WRONG_HOST: 421,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.METHOD_NOT_ALLOWED: 405,
    ErrorKind.CANCELLED: 409,
    ErrorKind.OUT_OF_MEMORY: 507,
    ErrorKind.INTERNAL: 500,
}
"""The HTTP status ``neurender serve`` answers with for each kind (the one table; the server never picks another)."""


class ContractError(ValueError):
    """A pass folder, manifest or settings object that breaks the contract. The message is for the artist.

    ``kind`` (an ``ErrorKind``) says why, for clients; each subclass sets its own default and a raise site may pass
    a more precise one (``ContractError("...", kind=ErrorKind.BAD_PASS_FOLDER)``).
    """

    kind: ErrorKind = ErrorKind.BAD_SETTINGS

    def __init__(self, message: str = "", *, kind: Optional[ErrorKind] = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class ManifestError(ContractError):
    """A pass folder manifest (or camera record) that breaks the contract."""

    kind = ErrorKind.BAD_PASS_FOLDER


def error_kind_of(exc: BaseException) -> ErrorKind:
    """The ``ErrorKind`` of any exception: its own ``kind`` (``ContractError`` and neurender's errors), ``out_of_memory`` for a device
    out-of-memory error (recognised by name, so this module needs no torch), else ``internal``."""
    kind = getattr(exc, "kind", None)
    if isinstance(kind, ErrorKind):
        return kind
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return ErrorKind.OUT_OF_MEMORY
    return ErrorKind.INTERNAL


def error_body(kind: ErrorKind, detail: str) -> dict[str, str]:
    """The JSON body of every error answer of ``neurender serve``: ``{"detail": reason, "error_kind": kind}``."""
    return {"detail": detail, "error_kind": ErrorKind(kind).value}


# --------------------------------------------------------------------------------------------------------------
# Pass folder
# --------------------------------------------------------------------------------------------------------------


@dataclass
class FrameCamera:
    """Camera of one frame.

    ``world_to_camera`` is the 4x4 row-major view matrix (Blender camera convention: the camera looks down its
    local -Z, +Y up). ``fx, fy, cx, cy`` are pinhole intrinsics in pixels of the rendered image, with the
    origin at the top-left pixel corner and y pointing down (image convention).
    """

    world_to_camera: list[list[float]]
    fx: float
    fy: float
    cx: float
    cy: float

    def check(self) -> None:
        m = self.world_to_camera
        if not isinstance(m, list) or len(m) != 4 or any(not isinstance(row, list) or len(row) != 4 for row in m):
            raise ManifestError("camera world_to_camera must be a 4x4 matrix (a list of 4 lists of 4 numbers)")
        values = [v for row in m for v in row] + [self.fx, self.fy, self.cx, self.cy]
        if not all(_is_number(v) and math.isfinite(v) for v in values):
            raise ManifestError("camera matrix and intrinsics must be finite numbers")
        if self.fx <= 0 or self.fy <= 0:
            raise ManifestError("camera focal lengths must be positive")


@dataclass
class FrameEntry:
    frame: int
    file: str
    camera: Optional[FrameCamera] = None


@dataclass
class PassManifest:
    """``manifest.json`` of a pass folder.

    ``depth_range`` is the shot-wide (near, far) of the finite depth actually seen over all frames, in scene
    units; the backend normalises depth with this one range for the whole shot so depth never "breathes".
    ``passes`` maps a pass name from ``KNOWN_PASSES`` to the EXR channel prefix holding it
    (e.g. ``"depth": "ViewLayer.Depth"`` for channel ``ViewLayer.Depth.Z``).
    """

    frame_start: int
    frame_end: int
    fps: float
    width: int
    height: int
    clip_start: float
    clip_end: float
    passes: dict[str, str]
    frames: list[FrameEntry]
    depth_range: Optional[tuple[float, float]] = None
    schema_version: int = PASS_SCHEMA_VERSION
    scene: str = ""
    camera_type: str = "PERSP"
    generator: str = ""

    @property
    def frame_numbers(self) -> list[int]:
        return [f.frame for f in self.frames]

    @classmethod
    def read(cls, folder: "Path | str") -> "PassManifest":
        """The manifest of the pass folder ``folder`` (``ManifestError`` when it is missing, unreadable or broken)."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        try:
            is_folder, has_manifest = folder.is_dir(), path.is_file()
        except OSError as exc:  # a name over 255 bytes, a path too deep, no permission
            raise ManifestError(f"pass folder {folder} cannot be used: {exc.strerror}") from None
        if not is_folder:
            raise ManifestError(f"pass folder {folder} does not exist or is not a folder")
        if not has_manifest:
            raise ManifestError(f"{path} is missing: a pass folder needs a {MANIFEST_NAME}")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{path} cannot be read: {exc}") from None
        try:
            return cls.from_json(text)
        except ContractError as exc:
            raise ManifestError(f"{path}: {exc}", kind=exc.kind) from None

    def select_frames(self, frames: "str | tuple[int, int] | None" = None) -> list[int]:
        """The frames a job renders: every frame of the shot, or those within ``frames`` (``"A-B"`` or an inclusive
        ``(first, last)``), which must lie within the shot's ``frame_start..frame_end`` and select at least one.

        The one frame-selection rule: the server applies it at submit (a 4xx ``bad_frames`` before the job is queued),
        the runner when it opens the pass folder, the farm when it cuts a shot into chunks."""
        selected = sorted(self.frame_numbers)
        if frames:
            first, last = parse_frame_range(frames) if isinstance(frames, str) else (int(frames[0]), int(frames[1]))
            if last < first:
                raise ContractError(f"requested frame range {first}-{last} is empty", kind=ErrorKind.BAD_FRAMES)
            if first < self.frame_start or last > self.frame_end:
                raise ContractError(f"requested frames {first}-{last} lie outside the shot's frames "
                                    f"{self.frame_start}-{self.frame_end}", kind=ErrorKind.BAD_FRAMES)
            selected = [f for f in selected if first <= f <= last]
            if not selected:
                raise ContractError(f"the pass folder has no frames within {first}-{last}", kind=ErrorKind.BAD_FRAMES)
        if len(selected) > MAX_FRAMES:
            raise ContractError(f"{len(selected)} frames exceed the limit of {MAX_FRAMES} per job",
                                kind=ErrorKind.BAD_FRAMES)
        return selected

    def check(self) -> None:
        if self.schema_version != PASS_SCHEMA_VERSION:
            raise ManifestError(
                f"pass folder schema version {self.schema_version} is not supported "
                f"(this neurender reads version {PASS_SCHEMA_VERSION})"
            )
        if self.frame_end < self.frame_start:
            raise ManifestError(f"frame range {self.frame_start}-{self.frame_end} is empty")
        if not (0 < self.width <= 16384 and 0 < self.height <= 16384):
            raise ManifestError(f"resolution {self.width}x{self.height} is not valid")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ManifestError("fps must be a positive number")
        if not (0 < self.clip_start < self.clip_end and math.isfinite(self.clip_end)):
            raise ManifestError(f"clip range {self.clip_start}..{self.clip_end} is not valid")
        unknown = sorted(set(self.passes) - set(KNOWN_PASSES))
        if unknown:
            raise ManifestError(f"unknown passes in manifest: {', '.join(unknown)}")
        if "depth" not in self.passes:
            raise ManifestError("the pass folder has no depth pass; neurender needs at least depth")
        if not self.frames:
            raise ManifestError("the manifest lists no frames")
        seen: set[int] = set()
        for entry in self.frames:
            if entry.frame in seen:
                raise ManifestError(f"frame {entry.frame} is listed twice")
            seen.add(entry.frame)
            if not (self.frame_start <= entry.frame <= self.frame_end):
                raise ManifestError(f"frame {entry.frame} lies outside {self.frame_start}-{self.frame_end}")
            if not entry.file or "/" in entry.file or "\\" in entry.file or entry.file.startswith("."):
                raise ManifestError(f"frame {entry.frame}: file name {entry.file!r} must be a plain file name")
            if entry.camera is not None:
                entry.camera.check()
        if self.depth_range is not None:
            near, far = self.depth_range
            if not (math.isfinite(near) and math.isfinite(far) and 0 <= near < far):
                raise ManifestError(f"depth_range {self.depth_range} is not a valid (near, far)")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if self.depth_range is not None:
            d["depth_range"] = list(self.depth_range)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PassManifest":
        """Build from parsed JSON. Types are checked strictly (``"width": "128"`` or ``"schema_version": true`` are
        refused, not coerced); every problem is a ``ManifestError`` naming the field."""
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        version = data.get("schema_version")
        if not _is_int(version) or version != PASS_SCHEMA_VERSION:
            raise ManifestError(
                f"pass folder schema version {version!r} is not supported (this neurender reads version "
                f"{PASS_SCHEMA_VERSION})"
            )
        for key in ("frame_start", "frame_end", "fps", "width", "height", "clip_start", "clip_end", "passes", "frames"):
            if key not in data:
                raise ManifestError(f"manifest is malformed: {key!r} is missing")
        raw_frames = data["frames"]
        if not isinstance(raw_frames, list):
            raise ManifestError("manifest is malformed: 'frames' must be a list of objects")
        frames = []
        for i, f in enumerate(raw_frames):
            if not isinstance(f, dict):
                raise ManifestError(f"manifest is malformed: frames[{i}] must be an object with 'frame' and 'file'")
            for key in ("frame", "file"):
                if key not in f:
                    raise ManifestError(f"manifest is malformed: frames[{i}] has no {key!r}")
            cam = f.get("camera")
            camera = None
            if cam is not None:
                if not isinstance(cam, dict):
                    raise ManifestError(f"manifest is malformed: frames[{i}].camera must be an object")
                unknown = sorted(set(cam) - {"world_to_camera", "fx", "fy", "cx", "cy"})
                missing = sorted({"world_to_camera", "fx", "fy", "cx", "cy"} - set(cam))
                if unknown or missing:
                    raise ManifestError(
                        f"manifest is malformed: frames[{i}].camera needs world_to_camera, fx, fy, cx, cy"
                        + (f" (unknown: {', '.join(map(repr, unknown))})" if unknown else "")
                    )
                camera = FrameCamera(
                    world_to_camera=cam["world_to_camera"],
                    fx=_manifest_number(cam["fx"], f"frames[{i}].camera.fx"),
                    fy=_manifest_number(cam["fy"], f"frames[{i}].camera.fy"),
                    cx=_manifest_number(cam["cx"], f"frames[{i}].camera.cx"),
                    cy=_manifest_number(cam["cy"], f"frames[{i}].camera.cy"),
                )
                camera.check()
            frames.append(
                FrameEntry(
                    frame=_manifest_int(f["frame"], f"frames[{i}].frame"),
                    file=_manifest_text(f["file"], f"frames[{i}].file"),
                    camera=camera,
                )
            )
        passes = data["passes"]
        if not isinstance(passes, dict):
            raise ManifestError("manifest is malformed: 'passes' must be an object of pass name -> channel prefix")
        dr = data.get("depth_range")
        depth_range = None
        if dr is not None:
            if not isinstance(dr, list) or len(dr) != 2:
                raise ManifestError("manifest is malformed: 'depth_range' must be [near, far]")
            depth_range = (_manifest_number(dr[0], "depth_range[0]"), _manifest_number(dr[1], "depth_range[1]"))
        manifest = cls(
            frame_start=_manifest_int(data["frame_start"], "frame_start"),
            frame_end=_manifest_int(data["frame_end"], "frame_end"),
            fps=_manifest_number(data["fps"], "fps"),
            width=_manifest_int(data["width"], "width"),
            height=_manifest_int(data["height"], "height"),
            clip_start=_manifest_number(data["clip_start"], "clip_start"),
            clip_end=_manifest_number(data["clip_end"], "clip_end"),
            passes={_manifest_text(k, "passes"): _manifest_text(v, f"passes.{k}") for k, v in passes.items()},
            frames=frames,
            depth_range=depth_range,
            schema_version=version,
            scene=_manifest_text(data.get("scene", ""), "scene"),
            camera_type=_manifest_text(data.get("camera_type", "PERSP"), "camera_type"),
            generator=_manifest_text(data.get("generator", ""), "generator"),
        )
        manifest.check()
        return manifest

    @classmethod
    def from_json(cls, text: str) -> "PassManifest":
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ManifestError(f"manifest.json is not valid JSON: {exc}") from None
        except ValueError as exc:  # e.g. an integer of more digits than Python converts
            raise ManifestError(f"manifest.json holds a value that cannot be read: {exc}") from None
        return cls.from_dict(data)


# Manifest values are checked strictly: JSON has one number type, but a width of "128", true or 1e400 is a bug in
# whatever wrote the manifest, and silently coercing it hides that bug.
MAX_MANIFEST_INT = 10**9


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _manifest_int(value: Any, name: str) -> int:
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_MANIFEST_INT:
        value = int(value)  # 24.0 from a writer that only has floats
    if not _is_int(value) or abs(value) > MAX_MANIFEST_INT:
        raise ManifestError(f"manifest is malformed: {name} must be an integer within +-{MAX_MANIFEST_INT}, not {value!r:.40}")
    return value


def _manifest_number(value: Any, name: str) -> float:
    if not _is_number(value):
        raise ManifestError(f"manifest is malformed: {name} must be a number, not {value!r:.40}")
    try:
        number = float(value)
    except OverflowError:
        raise ManifestError(f"manifest is malformed: {name} is too large") from None
    if not math.isfinite(number):
        raise ManifestError(f"manifest is malformed: {name} must be a finite number, not {value!r:.40}")
    return number


def _manifest_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"manifest is malformed: {name} must be text, not {value!r:.40}")
    check_text(value, f"manifest {name}", kind=ErrorKind.BAD_PASS_FOLDER)
    return value


def check_text(value: str, name: str, *, kind: ErrorKind = ErrorKind.BAD_SETTINGS) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate such as ``"\\udc80"`` cannot be encoded as UTF-8,
    so no response or file holding it could ever be written)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ContractError(
            f"{name} is not valid Unicode text (it holds a lone surrogate code point)", kind=kind
        ) from None


# --------------------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------------------


@dataclass
class ControlNetUnit:
    """One ControlNet applied to one control signal derived from the passes."""

    kind: str
    model: str
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0

    def check(self) -> None:
        if self.kind not in CONTROL_KINDS:
            raise ContractError(f"controlnet kind {self.kind!r} is not one of {', '.join(CONTROL_KINDS)}")
        if not self.model:
            raise ContractError(f"controlnet {self.kind}: no model path given")
        if not (math.isfinite(self.weight) and 0.0 <= self.weight <= 4.0):
            raise ContractError(f"controlnet {self.kind}: weight {self.weight} must be within 0..4")
        if not (0.0 <= self.guidance_start < self.guidance_end <= 1.0):
            raise ContractError(
                f"controlnet {self.kind}: guidance start/end {self.guidance_start}/{self.guidance_end} must satisfy "
                "0 <= start < end <= 1"
            )


@dataclass
class LoraSpec:
    path: str
    weight: float = 1.0

    def check(self) -> None:
        if not self.path:
            raise ContractError("LoRA: no file path given")
        if not (math.isfinite(self.weight) and -4.0 <= self.weight <= 4.0):
            raise ContractError(f"LoRA {self.path}: weight {self.weight} must be within -4..4")


_FRAMES_RE = re.compile(r"^\s*(-?[0-9]{1,9})\s*(?:-\s*(-?[0-9]{1,9})\s*)?$")
MAX_FRAME_RANGE_CHARS = 64


def render_size(settings: "RenderSettings", pass_width: int, pass_height: int) -> tuple[int, int]:
    """(width, height) of a job: the settings' size, or the pass folder's rounded down to a multiple of 8.

    The one render-size rule (the server at submit, the runner, the farm)."""
    width = settings.width or (pass_width // 8) * 8
    height = settings.height or (pass_height // 8) * 8
    if width < 8 or height < 8:
        raise ContractError(f"the pass resolution {pass_width}x{pass_height} is too small to render (minimum 8x8)",
                            kind=ErrorKind.BAD_INPUT)
    if width > MAX_RESOLUTION or height > MAX_RESOLUTION:
        raise ContractError(f"the render size {width}x{height} exceeds {MAX_RESOLUTION}; set width/height in the settings")
    return width, height


def frame_number(name: str, pattern: str = FRAME_FILE_PATTERN) -> Optional[int]:
    """The frame number of a file named by ``pattern`` (``frame_0012.png`` -> 12; ``PASS_FILE_PATTERN`` for pass
    files), None for any other name (temporary files included). The one frame-file-name rule."""
    prefix, _, suffix = pattern.partition("{frame:04d}")
    m = re.fullmatch(re.escape(prefix) + r"(-?\d+)" + re.escape(suffix), name)
    return int(m.group(1)) if m else None


def parse_frame_range(text: str) -> tuple[int, int]:
    """Parse ``"A-B"`` or ``"A"`` into an inclusive range (frame numbers of at most 9 digits)."""
    if not isinstance(text, str):
        raise ContractError("frame range must be text like 12-48 or 12", kind=ErrorKind.BAD_FRAMES)
    m = _FRAMES_RE.match(text) if len(text) <= MAX_FRAME_RANGE_CHARS else None
    if not m:
        raise ContractError(
            f"frame range {text[:MAX_FRAME_RANGE_CHARS]!r} must look like 12-48 or 12", kind=ErrorKind.BAD_FRAMES
        )
    a = int(m.group(1))
    b = int(m.group(2)) if m.group(2) is not None else a
    if b < a:
        raise ContractError(f"frame range {text!r} is empty", kind=ErrorKind.BAD_FRAMES)
    return a, b


@dataclass
class RenderSettings:
    """Everything that decides a render. One typed object for the CLI, the server and the Blender add-on.

    ``width``/``height`` of 0 mean "the pass folder's resolution rounded down to a multiple of 8".
    """

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 20
    guidance_scale: float = 7.5
    scheduler: str = "dpmpp_2m"
    width: int = 0
    height: int = 0
    model: str = ""
    controlnets: list[ControlNetUnit] = field(default_factory=list)
    loras: list[LoraSpec] = field(default_factory=list)
    consistency: str = DEFAULT_CONSISTENCY
    fixed_noise: bool = True
    window_size: int = 8
    window_stride: int = 4
    reference_image: str = ""
    keyframe_block: int = 8
    """``keyframes`` mode: one keyframe drawn from every block of this many frames, redrawn at every step (TokenFlow)."""
    img2img_strength: float = 0.0
    """``keyframes`` mode: above 0, start from the DDIM inversion of the Combined pass (1 = fully inverted); 0 = noise."""
    inversion_steps: int = 50
    pnp_features: float = 0.8
    """img2img: fraction of the steps with the render's decoder ResNet features injected (Plug-and-Play); 0 = off."""
    pnp_attention: float = 0.5
    """img2img: fraction of the steps with the render's decoder self-attention queries/keys injected; 0 = off."""
    batch_size: int = 4
    """Frames per model call; 0 = chosen from ``vram_budget`` or the device's free memory (engine/vram.py)."""
    # memory options for small GPUs (engine/memory.py): the same frames with less memory
    attention_slice: int = 0
    """At most this many query tokens per attention call (attention slicing); 0 = all at once."""
    vae_slicing: bool = False
    """VAE decode/encode one frame at a time (also in the pixel deflicker hooks)."""
    vae_tiling: bool = False
    """Tiled VAE decode/encode for frames larger than one tile (nearly equal: tiles see less context)."""
    cpu_offload: bool = False
    """Keep the models in CPU memory and move each to the GPU only while it runs (6-8 GB cards)."""
    vram_budget: float = 0.0
    """GiB the render may use (batch size chosen to fit; caps a given batch size); 0 = the device's free memory."""
    depth_smoothing: int = 0
    """Savitzky-Golay window (odd, >= 3) over the per-frame depth range; 0 keeps one fixed shot-wide range."""
    deflicker_steps: list[int] = field(default_factory=list)
    """0-based denoising step indices (0..steps-1) at which the in-iteration deflicker runs (empty: never). The
    progress counts steps done, so index i is reported as step i+1 of N. With img2img the steps before its start
    (``img2img_start_step``) are never run and are refused. Text form: ``parse_step_list``."""
    deflicker_method: str = "auto"
    deflicker_window: int = 4
    post_deflicker: bool = False
    deflicker_compensate: bool = False
    """After blending, match each frame's colour statistics to its window's input (global colour/brightness flicker)."""
    deflicker_sharpen: bool = False
    """After blending, contrast x1.1 and sharpness x1.1 (DiffSynth's remedy for the slight blur of blending)."""
    deflicker_space: str = "pixel"
    """In-iteration deflicker on decoded images (``pixel``, DiffSynth) or directly on the latents (``latent``, cheaper)."""
    frames: str = ""
    """Optional ``A-B`` subset of the shot's frames."""
    device: str = "cpu"
    dtype: str = "float32"
    overwrite: bool = False
    embeddings: list[str] = field(default_factory=list)
    """Textual-inversion embeddings (A1111 ``.pt``/``.safetensors`` files, or folders of them): each is usable in the
    prompt and the negative prompt by its file name (``easynegative.safetensors`` -> ``easynegative``)."""
    prediction_type: str = "auto"
    """``auto``, ``epsilon`` or ``v_prediction`` (see ``PREDICTION_TYPES``)."""
    motion_module: str = ""
    """AnimateDiff motion module (a diffusers MotionAdapter folder or an original ``mm_sd_v15_v2.ckpt``-style file);
    empty: frames are denoised by the image UNet alone."""
    context_length: int = 16
    """Motion module: frames per context window (one model call each; memory is bounded by it, not the shot)."""
    context_overlap: int = 4
    """Motion module: frames shared by neighbouring windows, whose noise estimates are blended (pyramid weights)."""

    def check(self) -> None:
        """Raise ``ContractError`` with one concise reason for the first invalid field."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str):
                check_text(value, f.name.replace("_", " "))
        for unit in [*self.controlnets, *self.loras]:
            for value in dataclasses.astuple(unit):
                if isinstance(value, str):
                    check_text(value, "controlnet/LoRA path")
        if not isinstance(self.prompt, str) or len(self.prompt) > MAX_PROMPT_CHARS:
            raise ContractError(f"prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        if not isinstance(self.negative_prompt, str) or len(self.negative_prompt) > MAX_PROMPT_CHARS:
            raise ContractError(f"negative prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        if not (0 <= self.seed < 2**63):
            raise ContractError("seed must be within 0 .. 2**63-1")
        if not (1 <= self.steps <= MAX_STEPS):
            raise ContractError(f"steps must be within 1..{MAX_STEPS}")
        if not (math.isfinite(self.guidance_scale) and 0.0 <= self.guidance_scale <= 50.0):
            raise ContractError("guidance scale must be within 0..50")
        if self.scheduler not in SCHEDULERS:
            raise ContractError(f"scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if self.scheduler in FEW_STEP_SCHEDULERS and self.steps > 50:
            raise ContractError(f"scheduler {self.scheduler} takes at most 50 steps (typically 2-8)")
        for name, value in (("width", self.width), ("height", self.height)):
            if value != 0 and not (8 <= value <= MAX_RESOLUTION and value % 8 == 0):
                raise ContractError(f"{name} {value} must be a multiple of 8 within 8..{MAX_RESOLUTION}")
        if len(self.controlnets) > MAX_CONTROLNETS:
            raise ContractError(f"at most {MAX_CONTROLNETS} ControlNet units")
        for unit in self.controlnets:
            unit.check()
        for lora in self.loras:
            lora.check()
        if self.consistency not in CONSISTENCY_MODES:
            raise ContractError(f"consistency {self.consistency!r} is not one of {', '.join(CONSISTENCY_MODES)}")
        if not (2 <= self.window_size <= 64):
            raise ContractError("window size must be within 2..64")
        if not (1 <= self.window_stride <= self.window_size):
            raise ContractError("window stride must be within 1..window size")
        if not (1 <= self.keyframe_block <= 64):
            raise ContractError("keyframe block must be within 1..64")
        if not (math.isfinite(self.img2img_strength) and 0.0 <= self.img2img_strength <= 1.0):
            raise ContractError("img2img strength must be within 0..1")
        if self.img2img_strength > 0 and self.consistency != "keyframes":
            raise ContractError("img2img strength above 0 needs consistency 'keyframes'")
        if not (1 <= self.inversion_steps <= 1000):
            raise ContractError("inversion steps must be within 1..1000")
        for name in ("pnp_features", "pnp_attention"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ContractError(f"{name.replace('_', ' ')} must be a fraction within 0..1")
        if not (0 <= self.batch_size <= 64):
            raise ContractError("batch size must be within 1..64 (0: chosen from the free memory)")
        if not (0 <= self.attention_slice <= 1 << 20):
            raise ContractError("attention slice must be 0 (off) or a number of query tokens")
        if not (math.isfinite(self.vram_budget) and 0.0 <= self.vram_budget <= 4096.0):
            raise ContractError("vram budget must be 0 (the free memory) or GiB within 0..4096")
        if self.depth_smoothing != 0 and not (3 <= self.depth_smoothing <= 99 and self.depth_smoothing % 2 == 1):
            raise ContractError("depth smoothing window must be 0 (off) or an odd number within 3..99")
        for s in self.deflicker_steps:
            if not (0 <= s < self.steps):
                raise ContractError(f"deflicker step {s} is outside 0..{self.steps - 1} (step indices are 0-based)")
        start = img2img_start_step(self.steps, self.img2img_strength) if self.img2img_strength > 0 else 0
        early = sorted(s for s in self.deflicker_steps if s < start)
        if early:
            raise ContractError(
                f"deflicker steps {', '.join(map(str, early))} come before the img2img start (step index {start} of "
                f"{self.steps} at strength {self.img2img_strength:g}) and would never run; use steps {start}.."
                f"{self.steps - 1} or a higher strength"
            )
        if self.deflicker_method not in ("auto", "exact", "flow", "patchmatch"):
            raise ContractError("deflicker method must be auto, exact, flow or patchmatch")
        if not (1 <= self.deflicker_window <= 32):
            raise ContractError("deflicker window must be within 1..32")
        if self.deflicker_space not in DEFLICKER_SPACES:
            raise ContractError(f"deflicker space {self.deflicker_space!r} is not one of {', '.join(DEFLICKER_SPACES)}")
        if self.frames:
            parse_frame_range(self.frames)
        if self.device not in DEVICES:
            raise ContractError(f"device {self.device!r} is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise ContractError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if len(self.embeddings) > MAX_EMBEDDINGS:
            raise ContractError(f"at most {MAX_EMBEDDINGS} embeddings")
        for path in self.embeddings:
            if not isinstance(path, str) or not path.strip():
                raise ContractError("each embedding must be a file or folder path")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ContractError(
                f"prediction type {self.prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}"
            )
        if not (2 <= self.context_length <= 64):
            raise ContractError("context length must be within 2..64 frames")
        if not (0 <= self.context_overlap < self.context_length):
            raise ContractError("context overlap must be within 0..context length - 1")
        if self.motion_module and self.consistency in ("window", "keyframes"):
            raise ContractError(
                f"a motion module renders over its own context windows: use consistency off, first or first+prev "
                f"with it, not {self.consistency}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, check: bool = True) -> "RenderSettings":
        """Build from JSON-like data; unknown keys and wrong types are errors, never silently dropped.

        ``check=False`` skips ``check()`` for a caller that checks once itself after changing fields (the CLI), or
        that reads settings checked when they entered (the server's worker reading its own job records)."""
        if not isinstance(data, dict):
            raise ContractError("settings must be a JSON object")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ContractError(f"unknown settings: {', '.join(unknown)}")
        kwargs: dict[str, Any] = {}
        defaults = cls()
        for name, value in data.items():
            if name == "controlnets":
                kwargs[name] = [_build(ControlNetUnit, u, "controlnet") for u in _as_list(value, name)]
            elif name == "loras":
                kwargs[name] = [_build(LoraSpec, u, "lora") for u in _as_list(value, name)]
            elif name in _LIST_ITEMS:
                kwargs[name] = [_coerce(_LIST_ITEMS[name], v, name) for v in _as_list(value, name)]
            else:
                kwargs[name] = _coerce(type(getattr(defaults, name)), value, name)
        settings = cls(**kwargs)
        if check:
            settings.check()
        return settings

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def digest(self, leave_out: tuple[str, ...] = ("overwrite",), **context: Any) -> str:
        """SHA-256 of these settings without the ``leave_out`` fields, with ``context`` (JSON values, e.g. the
        manifest) as ``{"settings": ..., **context}``; without context, of the settings alone. The one settings hash:
        the runner's resume and look fingerprints, the farm's chunk and anchor hashes (the values are stored in
        output and anchor folders, so the layout of the hashed JSON must not change)."""
        data = self.to_dict()
        for name in leave_out:
            data.pop(name, None)
        payload = {"settings": data, **context} if context else data
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


_LIST_ITEMS: dict[str, type] = {"deflicker_steps": int, "embeddings": str}
"""The list fields of plain values in ``RenderSettings`` and the type of their items."""


def img2img_start_step(steps: int, strength: float) -> int:
    """The first denoising step index an img2img render runs (diffusers' img2img: ``strength`` 1 starts at 0)."""
    return min(steps - 1, int(round(steps * (1 - strength))))


def parse_step_list(text: str) -> list[int]:
    """``"4,9,14"`` (commas or semicolons, spaces allowed) -> ``[4, 9, 14]``: 0-based denoising step indices.

    The one text form of ``deflicker_steps`` (CLI ``--deflicker-steps``, the add-on's field)."""
    out = []
    for part in str(text).replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not re.fullmatch(r"\d{1,6}", part):
            raise ContractError(f"deflicker steps {str(text)[:64]!r} must be whole numbers separated by commas")
        out.append(int(part))
    return out


def _as_list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise ContractError(f"{name} must be a list")
    return value


def _coerce(kind: type, value: Any, name: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ContractError(f"{name} must be true or false")
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ContractError(f"{name} must be an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ContractError(f"{name} must be a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ContractError(f"{name} must be text")
        check_text(value, name)
        return value
    raise ContractError(f"{name} has an unsupported type")


def _build(cls: type, data: Any, what: str) -> Any:
    if not isinstance(data, dict):
        raise ContractError(f"{what} entries must be JSON objects")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ContractError(f"unknown {what} settings: {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        default = fields[name].default
        kind = type(default) if default is not dataclasses.MISSING else str
        kwargs[name] = _coerce(kind, value, f"{what}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ContractError(f"{what}: {exc}") from None


# --------------------------------------------------------------------------------------------------------------
# Jobs and the HTTP API
# --------------------------------------------------------------------------------------------------------------

JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_DONE = "done"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_STATES = (JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED, JOB_CANCELLED)
JOB_FINAL_STATES = (JOB_DONE, JOB_FAILED, JOB_CANCELLED)

# HTTP API of ``neurender serve`` (JSON unless noted; every error is a 4xx/5xx with
# ``{"detail": "<reason>", "error_kind": ErrorKind value}``, status from ``ERROR_STATUS``):
#   GET    /version                -> {"backend_version", "protocol_version", "pass_schema_version", "device",
#                                      "models": {...what is loaded...}, "token_required": bool}
#   POST   /jobs                   <- {"pass_dir": "/abs/path", "settings": {RenderSettings}, "out_dir": optional abs path}
#                                  -> 201 Job
#   POST   /jobs/upload            <- multipart: "file" = zip of a pass folder, "settings" = JSON text -> 201 Job
#   GET    /jobs                   -> {"jobs": [Job, ...]}  (newest first)
#   GET    /jobs/{id}              -> Job
#   GET    /jobs/{id}/frames/{n}   -> image/png of finished frame n (Blender frame number)
#   GET    /jobs/{id}/preview      -> image/png: a small contact sheet of the predicted frames at the latest denoising
#                                     step (``Progress.preview_step`` says which; 404 until the first step)
#   GET    /jobs/{id}/controls/{kind}/{n} -> image/png: the control image of ``kind`` (CONTROL_KINDS) the job derived
#                                     for frame n (404 until it is derived, or for a kind the job does not use)
#   GET    /jobs/{id}/events       -> text/event-stream of Job snapshots (optional; polling works on its own)
#   DELETE /jobs/{id}              -> Job (a queued job is cancelled at once, a running one at its next step)
#   POST   /models/free            -> {"freed": true}
# Job = {"id", "state" (JOB_STATES), "progress": Progress.to_dict(), "error": str | null,
#        "error_kind": ErrorKind value | null (set when failed or cancelled), "created", "updated" (unix s),
#        "frames_done": [frame numbers finished], "frame_start", "frame_end", "out_dir", "settings": {RenderSettings}}
#        (its keys, in order: JOB_FIELDS; the server's store and OpenAPI model are built from / tested against it)

JOB_FIELDS = ("id", "state", "progress", "error", "error_kind", "created", "updated", "frames_done", "frame_start",
              "frame_end", "out_dir", "settings")
"""The keys of a ``Job`` object of the HTTP API (see the comment above)."""

TOKEN_HEADER = "Authorization"
"""Requests carry ``Authorization: Bearer <token>`` whenever the server requires a token."""

ROUTE_VERSION = "/version"
ROUTE_JOBS = "/jobs"
ROUTE_JOB = "/jobs/{job_id}"
ROUTE_JOB_FRAME = "/jobs/{job_id}/frames/{frame}"
ROUTE_JOB_EVENTS = "/jobs/{job_id}/events"
ROUTE_JOB_UPLOAD = "/jobs/upload"
ROUTE_JOB_PREVIEW = "/jobs/{job_id}/preview"
ROUTE_JOB_CONTROL = "/jobs/{job_id}/controls/{kind}/{frame}"
PREVIEW_HEADER = "X-Neurender-Preview-Step"
"""The preview response carries the denoising step it shows in this header."""
ROUTE_FREE = "/models/free"


@dataclass
class Progress:
    """Progress of one job, as reported by the runner and served by ``GET /jobs/{id}``."""

    frames_done: int = 0
    frames_total: int = 0
    step: int = 0
    """Denoising steps done (1..steps_total). Step *indices* in the settings (``deflicker_steps``) are 0-based: the
    deflicker at index i runs in the iteration that ends with ``step == i + 1``."""
    steps_total: int = 0
    phase: str = ""
    message: str = ""
    preview_step: int = 0
    """The denoising step of the latest live preview (``ROUTE_JOB_PREVIEW``); 0: none yet."""
    random_weights: bool = False
    """The model has random weights (the built-in demo model, or a test model): the output is noise, not an image."""
    device: str = ""
    dtype: str = ""
    """The device and precision the backend picked (``auto`` resolved), once the models are loaded."""

    @property
    def fraction(self) -> float:
        if self.steps_total <= 0:
            return 0.0
        return min(1.0, self.step / self.steps_total)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compatible_protocol(server_protocol: int) -> bool:
    """The add-on refuses a backend speaking another protocol version."""
    return server_protocol == PROTOCOL_VERSION
