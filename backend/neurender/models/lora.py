"""Apply LoRA files (Hu et al. 2021, arXiv 2106.09685: W + scale * B A) to a loaded pipeline through diffusers' PEFT
integration: ``load_lora_weights`` per file (diffusers, PEFT and kohya key layouts), then ``set_adapters`` with the
user's weights. Nothing is fused, so weight 0 leaves the model exactly as it was.

Refused up front, with the format named: LyCORIS LoHa/LoKr/OFT/GLoRA/IA3/full-diff files, and DoRA (Liu et al. 2024,
arXiv 2402.09353: W' = m * (W + BA) / ||W + BA||). diffusers drops a DoRA file's ``dora_scale`` magnitudes for SD1.x
pipelines and applies the rest as a plain LoRA, which is not the DoRA result, so neurender does not apply it at all.
An old diffusers attention-processor LoRA saved without the ``unet.`` prefix (``...processor.to_q_lora.down.weight``)
gets the prefix before loading, so diffusers' own conversion of that layout applies it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurender.contract import LoraSpec
from neurender.errors import ModelLoadError
from neurender.models.checkpoint_files import SAFETENSORS_SUFFIXES, CheckpointInfo, brief, read_checkpoint

log = logging.getLogger(__name__)

_VARIANT_NAMES = {
    "loha": "LoHa",
    "lokr": "LoKr",
    "oft": "OFT",
    "glora": "GLoRA",
    "ia3": "IA3",
    "full": "LyCORIS full (diff)",
}


def check_lora_file(path: str | Path) -> Path:
    """Refuse anything that is not a readable .safetensors file of plain LoRA tensors (see the module docstring)."""
    return check_lora(path)[0]


def check_lora(path: str | Path) -> tuple[Path, CheckpointInfo]:
    """``check_lora_file`` and the file's tensor info."""
    p = Path(path)
    if p.suffix.lower() not in SAFETENSORS_SUFFIXES and p.exists() and p.is_file():
        raise ModelLoadError(f"LoRA {p} has the extension {p.suffix or '(none)'!r}; expected a .safetensors file")
    try:
        info = read_checkpoint(p)
    except ModelLoadError as e:
        raise type(e)(f"LoRA: {e}") from e
    if not info.has_lora:
        raise ModelLoadError(
            f"LoRA {p} holds no LoRA tensors (no 'lora' in any of its {len(info.shapes)} names; it looks like "
            f"{info.looks_like})"
        )
    variant = info.lora_variant
    if variant in _VARIANT_NAMES:
        raise ModelLoadError(
            f"LoRA {p}: this LoRA format ({_VARIANT_NAMES[variant]}) is not supported; neurender applies plain LoRA "
            "files (kohya-ss, diffusers and PEFT layouts)"
        )
    if variant == "dora":
        raise ModelLoadError(
            f"LoRA {p} is a DoRA (weight-decomposed LoRA, with magnitude tensors); diffusers cannot apply DoRA to SD1.x "
            "models and applying it as a plain LoRA gives a different picture, so it is not supported"
        )
    if info.family == "sdxl" or any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in info.shapes):
        raise ModelLoadError(f"LoRA {p} is an SDXL LoRA; it does not fit an SD1.x model")
    return p, info


def _lora_input(path: Path, info: CheckpointInfo) -> Any:
    """What to hand ``load_lora_weights``: the path, or the tensors with the ``unet.`` prefix an old file lacks."""
    if not info.is_unprefixed_attn_procs_lora:
        return str(path)
    from safetensors.torch import load_file

    log.info("LoRA %s is an attention-processor LoRA without the 'unet.' prefix; adding it", path)
    return {f"unet.{k}": v for k, v in load_file(str(path)).items()}


def apply_loras(pipe: Any, loras: Sequence[LoraSpec]) -> list[str]:
    """Load each LoRA as its own adapter and activate them all with their weights; returns the adapter names."""
    names: list[str] = []
    for i, spec in enumerate(loras):
        spec.check()
        path, info = check_lora(spec.path)
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(_lora_input(path, info), adapter_name=name)
        except Exception as e:  # noqa: BLE001 - diffusers/peft raise many types for a bad file
            raise ModelLoadError(f"LoRA {path} does not fit this model (an SD1.5 LoRA was expected): {brief(e)}") from e
        if name not in _loaded_adapters(pipe):
            raise ModelLoadError(f"LoRA {path} matched no layer of this model (an SD1.5 LoRA was expected)")
        names.append(name)
        log.info("loaded LoRA %s (weight %g)", path, spec.weight)
    if names:
        pipe.set_adapters(names, adapter_weights=[float(s.weight) for s in loras])
    return names


def _loaded_adapters(pipe: Any) -> set[str]:
    found: set[str] = set()
    for adapters in pipe.get_list_adapters().values():
        found.update(adapters)
    return found
