"""Write a diffusers ``MotionAdapter`` in the ORIGINAL AnimateDiff key layout (guoyww/AnimateDiff ``motion_module.py``),
as ``mm_sd_v15_v2.ckpt`` holds it, to test single-file loading without real weights.

diffusers only converts original -> diffusers (``convert_animatediff_checkpoint_to_diffusers``); this is the other
direction, written from the original module structure: ``motion_modules.J.temporal_transformer.{norm,proj_in,proj_out}``,
``transformer_blocks.K.attention_blocks.{0,1}`` (two temporal self-attentions, each with its own
``pos_encoder.pe``), ``norms.{0,1}`` and ``ff_norm``. Every tensor must be renamed by exactly one rule, or
``ExportError`` is raised: an incomplete mapping cannot pass silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

_MODULE = re.compile(r"^((?:down_blocks|up_blocks)\.\d+|mid_block)\.motion_modules\.(\d+)\.(.+)$")
_BLOCK = re.compile(r"^transformer_blocks\.(\d+)\.(.+)$")
_INNER = (
    ("attn1.", "attention_blocks.0."),
    ("attn2.", "attention_blocks.1."),
    ("norm1.", "norms.0."),
    ("norm2.", "norms.1."),
    ("norm3.", "ff_norm."),
    ("ff.", "ff."),
)


class ExportError(ValueError):
    pass


def original_state_dict(adapter) -> dict[str, torch.Tensor]:
    """The adapter's tensors under their original AnimateDiff names (contiguous copies)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in adapter.state_dict().items():
        m = _MODULE.match(key)
        if m is None:
            raise ExportError(f"no original name for {key}")
        block, j, rest = m.groups()
        head = f"{block}.motion_modules.{j}.temporal_transformer."
        b = _BLOCK.match(rest)
        if b is None:
            if not rest.startswith(("norm.", "proj_in.", "proj_out.")):
                raise ExportError(f"no original name for {key}")
            out[head + rest] = value
            continue
        k, inner = b.groups()
        tb = f"{head}transformer_blocks.{k}."
        if inner == "pos_embed.pe":  # one table per block in diffusers, one per attention block in the original
            out[tb + "attention_blocks.0.pos_encoder.pe"] = value
            out[tb + "attention_blocks.1.pos_encoder.pe"] = value
            continue
        for mine, theirs in _INNER:
            if inner.startswith(mine):
                out[tb + theirs + inner[len(mine):]] = value
                break
        else:
            raise ExportError(f"no original name for {key}")
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def export_original(adapter, path: str | Path) -> Path:
    """Save ``adapter`` as an original-layout ``.safetensors`` or ``.ckpt`` (plain state dict, as the official files)."""
    path = Path(path)
    sd = original_state_dict(adapter)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save(sd, str(path))
    return path
