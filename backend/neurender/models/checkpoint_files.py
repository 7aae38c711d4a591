"""Read the tensor names and shapes of a checkpoint file without loading it, and tell what kind of model it holds.

Used to refuse a wrong file with a clear message (an SD checkpoint given as a ControlNet, a truncated download, ...)
before diffusers gets to raise something obscure. ``.safetensors`` headers are parsed directly (8-byte little-endian
header length + JSON, see the safetensors format spec); ``.ckpt``/``.pt``/``.pth`` are loaded with
``torch.load(weights_only=True)`` (see ``safe_pickle``: the official SD1.x ``.ckpt`` files load, anything that would
run code is refused and named). ``CheckpointInfo`` also tells the model family from the names and shapes alone (SD1.x,
SD 2.x, SDXL, inpainting; the text-encoder key layout; LoRA variants), so every refusal happens before any weight loads.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurender.errors import ModelLoadError, ModelMissing
from neurender.models import safe_pickle

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth")
CHECKPOINT_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

SD_UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
OPEN_CLIP_PREFIX = "cond_stage_model.model."
SDXL_CONDITIONER_PREFIX = "conditioner.embedders."
CONTROLNET_PREFIX = "control_model."
_CONTROLNET_MARKERS = ("input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight")
_MAX_HEADER = 100 * 1024 * 1024
# Tensor-name endings of LoRA variants (kohya-ss sd-scripts, LyCORIS, PEFT), first match wins.
_LORA_VARIANT_MARKERS = (
    ((".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2"), "loha"),
    ((".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2"), "lokr"),
    ((".oft_blocks", ".oft_diag"), "oft"),
    ((".a1.weight", ".a2.weight", ".b1.weight", ".b2.weight"), "glora"),
    ((".on_input",), "ia3"),
    ((".diff", ".diff_b"), "full"),
    ((".dora_scale", "lora_magnitude_vector", "lora_magnitude_vector.weight"), "dora"),
)


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
    def lora_variant(self) -> str:
        """``"lora"`` (plain low-rank), ``"dora"``, or a LyCORIS format neurender does not apply (``"loha"``, ...)."""
        names = tuple(self.shapes)
        for endings, variant in _LORA_VARIANT_MARKERS:
            if any(k.endswith(endings) for k in names):
                return variant
        return "lora"

    @property
    def is_unprefixed_attn_procs_lora(self) -> bool:
        """An old diffusers attention-processor LoRA saved without the ``unet.`` prefix (``...processor.to_q_lora.*``)."""
        return any(".processor." in k and "_lora." in k for k in self.shapes) and not any(
            k.startswith(("unet.", "text_encoder.")) for k in self.shapes
        )

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

    def cross_attention_width(self, prefix: str = "") -> int | None:
        """Width of the first cross-attention key projection under ``prefix`` (768 SD1.x, 1024 SD 2.x, 2048 SDXL)."""
        widths = [
            shape[-1]
            for name, shape in self.shapes.items()
            if name.startswith(prefix) and name.endswith("attn2.to_k.weight") and len(shape) == 2
        ]
        return int(widths[0]) if widths else None

    @property
    def unet_in_channels(self) -> int | None:
        shape = self.shapes.get(SD_UNET_PREFIX + "input_blocks.0.0.weight")
        return int(shape[1]) if shape is not None and len(shape) == 4 else None

    @property
    def family(self) -> str:
        """Base model of an SD checkpoint or a ControlNet: ``"sdxl"``, ``"sd2"``, ``"sd1"`` or ``"unknown"``.

        SDXL has a class-embedding MLP (``label_emb``; ``add_embedding`` in diffusers layout) that SD1.x/2.x lack, and
        its text conditioners live under ``conditioner.embedders``; SD 2.x has OpenCLIP (``cond_stage_model.model``)
        and cross-attention width 1024.
        """
        names = self.shapes
        if any(
            k.startswith((SDXL_CONDITIONER_PREFIX, SD_UNET_PREFIX + "label_emb.", CONTROLNET_PREFIX + "label_emb."))
            or k.startswith(("label_emb.", "add_embedding."))
            for k in names
        ):
            return "sdxl"
        width = self.cross_attention_width()
        if width == 2048:
            return "sdxl"
        if width == 1024 or any(k.startswith(OPEN_CLIP_PREFIX) for k in names):
            return "sd2"
        if width == 768:
            return "sd1"
        return "unknown"

    @property
    def text_encoder_layout(self) -> str | None:
        """``"text_model"`` (``cond_stage_model.transformer.text_model.*``, the SD1.x files), ``"flat"`` (the same keys
        without ``text_model.``, as diffusers' conversion script writes them under transformers 5), ``"open_clip"``
        (SD 2.x) or None (no text encoder in the file)."""
        text_model = flat = False
        for k in self.shapes:
            if k.startswith(CLIP_PREFIX):
                if k.startswith(CLIP_PREFIX + "text_model."):
                    text_model = True
                else:
                    flat = True
        if text_model:
            return "text_model"
        if flat:
            return "flat"
        if any(k.startswith(OPEN_CLIP_PREFIX) for k in self.shapes):
            return "open_clip"
        return None

    @property
    def has_vae(self) -> bool:
        return any(k.startswith(VAE_PREFIX) for k in self.shapes)

    @property
    def looks_like(self) -> str:
        """What the file looks like, with its article, for messages ("a ControlNet", "an unrecognised file")."""
        return {
            "lora": "a LoRA",
            "controlnet": "a ControlNet",
            "sd-checkpoint": "a Stable Diffusion checkpoint",
        }.get(self.kind, "an unrecognised file")

    def controlnet_shape(self, key: str) -> tuple[int, ...] | None:
        """Shape of a ControlNet tensor named in LDM layout (without ``control_model.``), whatever the file's prefix."""
        for name in (CONTROLNET_PREFIX + key, key):
            if name in self.shapes:
                return self.shapes[name]
        return None


def brief(exc: BaseException, limit: int = 240) -> str:
    """First two lines of a library exception's text, at most ``limit`` characters: wraps it in our sentence.

    ANSI escapes and torch's advice to load with ``weights_only=False`` are dropped (never shown to an artist). Our
    own ``ModelLoadError`` sentences are kept whole: their cause is the part that matters.
    """
    if isinstance(exc, ModelLoadError):
        return str(exc)
    lines = [ln for ln in (safe_pickle.clean_text(ln) for ln in str(exc).splitlines()) if ln]
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
    """``torch.load`` a .ckpt/.pt/.pth safely (weights only, see ``safe_pickle``) and unwrap a ``state_dict`` entry."""
    obj = safe_pickle.load(path)
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
