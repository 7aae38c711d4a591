"""Anchor files: the on-disk form of shared anchors (``neurender anchors``, computed in ``farm/anchors.py``).

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
from typing import TYPE_CHECKING, Sequence

from neurender.contract import ANCHOR_MODES, RenderSettings
from neurender.errors import AnchorError

if TYPE_CHECKING:  # annotations only
    from neurender.engine.sampler import AnchorFrames

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


@dataclass
class AnchorSet:
    """Loaded anchors: frame numbers, the sampler's ``AnchorFrames`` and the data file's digest."""

    folder: Path
    frames: list[int]
    digest: str
    meta: dict
    data: "AnchorFrames"


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
    return settings.digest(("frames", "overwrite"))


def write_anchors(out: Path, settings: RenderSettings, frames: list[int], size: tuple[int, int], kinds: Sequence[str],
                  latents, controls: list, images, pass_dir: Path | str) -> None:
    """Save a computed anchor trajectory: data first, images, then the metadata that marks the folder complete."""
    import torch

    from neurender.frames import write_bytes_atomic, write_png_atomic

    buf = io.BytesIO()
    torch.save({"latents": latents, "controls": [c.to(torch.float32) for c in controls]}, buf)
    raw = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    (out / ANCHORS_META).unlink(missing_ok=True)  # the folder is incomplete until the new metadata lands
    write_bytes_atomic(out / ANCHORS_DATA, raw)
    for f, image in zip(frames, images):
        write_png_atomic(out / ANCHOR_IMAGE.format(frame=f), image)
    meta = {
        "version": ANCHORS_VERSION,
        "frames": frames,
        "size": list(size),
        "key": anchor_key(settings),
        "settings_hash": _settings_hash(settings),
        "digest": _digest(raw),
        "control_kinds": list(kinds),
        "pass_dir": str(Path(pass_dir).resolve()),
        "settings": settings.to_dict(),
    }
    write_bytes_atomic(out / ANCHORS_META, json.dumps(meta, indent=1, sort_keys=True).encode())
