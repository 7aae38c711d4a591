"""Read the tensor names and shapes of a checkpoint file without loading it, and tell what kind of model it holds.

Used to refuse a wrong file with a clear message (an SD checkpoint given as a ControlNet, a truncated download, ...)
before diffusers gets to raise something obscure. ``.safetensors`` headers are parsed directly (8-byte little-endian
header length + JSON, see the safetensors format spec); ``.ckpt``/``.pt``/``.pth`` are loaded with
``torch.load(weights_only=True)``, memory-mapped when possible.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurender.errors import ModelLoadError, ModelMissing

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

SD_UNET_PREFIX = "model.diffusion_model."
CONTROLNET_PREFIX = "control_model."
_CONTROLNET_MARKERS = ("input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight")
_MAX_HEADER = 100 * 1024 * 1024


@dataclass
class CheckpointInfo:
    """Tensor names -> shapes of one checkpoint file, and what they look like."""

    path: Path
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def has_sd_unet(self) -> bool:
        return any(k.startswith(SD_UNET_PREFIX) for k in self.shapes)

    @property
    def has_controlnet(self) -> bool:
        return any(k.startswith(CONTROLNET_PREFIX) for k in self.shapes) or any(
            m in self.shapes for m in _CONTROLNET_MARKERS
        )

    @property
    def has_lora(self) -> bool:
        return any("lora" in k.lower() for k in self.shapes)

    @property
    def kind(self) -> str:
        """``"controlnet"``, ``"sd-checkpoint"``, ``"lora"`` or ``"unknown"``."""
        if self.has_lora:
            return "lora"
        if self.has_controlnet:
            return "controlnet"
        if self.has_sd_unet:
            return "sd-checkpoint"
        return "unknown"

    def controlnet_shape(self, key: str) -> tuple[int, ...] | None:
        """Shape of a ControlNet tensor named in LDM layout (without ``control_model.``), whatever the file's prefix."""
        for name in (CONTROLNET_PREFIX + key, key):
            if name in self.shapes:
                return self.shapes[name]
        return None


def brief(exc: BaseException, limit: int = 240) -> str:
    """First two lines of an exception's text, at most ``limit`` characters: wraps library errors in a sentence."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    size = path.stat().st_size
    bad = f"{path} is not a valid .safetensors file (truncated or corrupt download?)"
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelLoadError(bad)
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > _MAX_HEADER or 8 + n > size:
            raise ModelLoadError(bad)
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ModelLoadError(bad) from e
    if not isinstance(header, dict):
        raise ModelLoadError(bad)
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        try:
            shapes[key] = tuple(int(s) for s in meta["shape"])
            end = max(end, int(meta["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise ModelLoadError(bad) from e
    if 8 + n + end > size:
        raise ModelLoadError(
            f"{path} is truncated: its header describes {8 + n + end} bytes but the file has {size} "
            "(re-download it)"
        )
    return shapes


def _flatten(obj: Any, prefix: str, out: dict[str, tuple[int, ...]]) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        out[prefix] = tuple(obj.shape)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)


def load_pickle_state_dict(path: Path) -> dict[str, Any]:
    """``torch.load`` a .ckpt/.pt/.pth safely (weights only) and unwrap a ``state_dict`` entry."""
    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means an unreadable file
        raise ModelLoadError(
            f"{path} is not a readable PyTorch checkpoint (truncated, corrupt, or not weights-only): {brief(e)}"
        ) from e
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(f"{path} does not hold a state dict of tensors")
    return obj


def read_checkpoint(path: str | Path) -> CheckpointInfo:
    """Names and shapes of the tensors in a checkpoint file; ``ModelLoadError`` if missing, unsupported or corrupt."""
    p = Path(path)
    if not p.exists():
        raise ModelMissing(f"{p} does not exist")
    if not p.is_file():
        raise ModelLoadError(f"{p} is not a file; expected a {'/'.join(CHECKPOINT_SUFFIXES)} checkpoint")
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        shapes = _safetensors_shapes(p)
    elif suffix in PICKLE_SUFFIXES:
        shapes = {}
        _flatten(load_pickle_state_dict(p), "", shapes)
    else:
        raise ModelLoadError(
            f"{p} has the unsupported extension {p.suffix or '(none)'!r}; expected one of "
            f"{', '.join(CHECKPOINT_SUFFIXES)} or a diffusers folder"
        )
    if not shapes:
        raise ModelLoadError(f"{p} holds no tensors")
    return CheckpointInfo(path=p, shapes=shapes)
