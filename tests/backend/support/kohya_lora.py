"""Write a LoRA in the kohya-ss (sd-scripts) key layout that artists download from model sites.

kohya names every adapted layer by its diffusers module path with dots turned into underscores, under ``lora_unet_``
(``lora_te_`` for the text encoder), with ``.lora_down.weight`` (A), ``.lora_up.weight`` (B) and an ``.alpha`` scalar
(scale = alpha / rank). LCM-LoRA and Hyper-SD LoRAs ship in this layout as well as in the diffusers/PEFT one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def peft_to_kohya(peft_file: str | Path, out_file: str | Path, alpha: float | None = None) -> Path:
    """Re-key a diffusers/PEFT UNet LoRA (``unet.<module>.lora_A.weight``) into kohya's layout; same weights.

    ``alpha`` None writes alpha = rank, so the kohya file applies exactly the PEFT file's update.
    """
    tensors = load_file(str(peft_file))
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        if not key.startswith("unet."):
            continue
        module, kind = key.removeprefix("unet.").rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        if kind == "A.weight":
            out[f"{name}.lora_down.weight"] = value.contiguous()
            out[f"{name}.alpha"] = torch.tensor(float(alpha if alpha is not None else value.shape[0]))
        elif kind == "B.weight":
            out[f"{name}.lora_up.weight"] = value.contiguous()
    out_path = Path(out_file)
    save_file(out, str(out_path), metadata={"ss_network_module": "networks.lora"})
    return out_path
