"""Apply LoRA files (Hu et al. 2021, arXiv 2106.09685: W + scale * B A) to a loaded pipeline through diffusers' PEFT
integration: ``load_lora_weights`` per file (diffusers, PEFT and kohya key layouts), then ``set_adapters`` with the
user's weights. Nothing is fused, so weight 0 leaves the model exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurender.contract import LoraSpec
from neurender.errors import ModelLoadError
from neurender.models.checkpoint_files import SAFETENSORS_SUFFIXES, brief, read_checkpoint

log = logging.getLogger(__name__)


def check_lora_file(path: str | Path) -> Path:
    """Refuse anything that is not a readable .safetensors file with LoRA tensors in it."""
    p = Path(path)
    if p.suffix.lower() not in SAFETENSORS_SUFFIXES and p.exists() and p.is_file():
        raise ModelLoadError(f"LoRA {p} has the extension {p.suffix or '(none)'!r}; expected a .safetensors file")
    try:
        info = read_checkpoint(p)
    except ModelLoadError as e:
        raise type(e)(f"LoRA: {brief(e)}") from e
    if not info.has_lora:
        raise ModelLoadError(
            f"LoRA {p} holds no LoRA tensors (no 'lora' in any of its {len(info.shapes)} names; it looks like a "
            f"{info.kind} file)"
        )
    return p


def apply_loras(pipe: Any, loras: Sequence[LoraSpec]) -> list[str]:
    """Load each LoRA as its own adapter and activate them all with their weights; returns the adapter names."""
    names: list[str] = []
    for i, spec in enumerate(loras):
        spec.check()
        path = check_lora_file(spec.path)
        name = f"lora{i}"
        try:
            pipe.load_lora_weights(str(path), adapter_name=name)
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
