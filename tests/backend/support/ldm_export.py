"""Write diffusers models as original-layout (CompVis LDM / ControlNet "cldm") checkpoints, to test single-file loading.

diffusers only converts LDM -> diffusers; this is the other direction, written from the structure of the LDM
``openaimodel.UNetModel`` (input_blocks / middle_block / output_blocks, ``in_layers``/``out_layers`` resnets),
the LDM ``Encoder``/``Decoder`` of the autoencoder (``down.i.block.j``, ``mid.attn_1`` with 1x1-conv q/k/v/proj_out) and
ControlNet's ``ControlNet`` (``input_hint_block``, ``zero_convs``, ``middle_block_out``). Every diffusers tensor must
map to exactly one LDM name, or ``ExportError`` is raised: an incomplete mapping cannot pass silently.
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
CONTROLNET_PREFIX = "control_model."

_RESNET_UNET = (
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
)
_RESNET_VAE = (("conv_shortcut.", "nin_shortcut."),)
_VAE_ATTN = (
    ("group_norm.", "norm."),
    ("to_q.", "q."),
    ("to_k.", "k."),
    ("to_v.", "v."),
    ("to_out.0.", "proj_out."),
)


class ExportError(AssertionError):
    pass


class _Mapper:
    """Rewrites key prefixes; inside a prefix, optional sub-renames (first match wins)."""

    def __init__(self) -> None:
        self.rules: list[tuple[str, str, tuple[tuple[str, str], ...]]] = []

    def add(self, src: str, dst: str, renames: tuple[tuple[str, str], ...] = ()) -> None:
        self.rules.append((src, dst, renames))

    def convert(self, state: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
        rules = sorted(self.rules, key=lambda r: -len(r[0]))
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            for src, dst, renames in rules:
                if key == src or (src.endswith(".") and key.startswith(src)):
                    rest = key[len(src) :]
                    for a, b in renames:
                        if rest.startswith(a):
                            rest = b + rest[len(a) :]
                            break
                    new = dst + rest
                    break
            else:
                raise ExportError(f"{what}: no LDM name for {key}")
            if new in out:
                raise ExportError(f"{what}: two tensors map to {new}")
            out[new] = value
        return out


def _encoder_rules(m: _Mapper, cfg: dict[str, Any]) -> None:
    """Shared by UNet and ControlNet: time embedding, conv_in, down blocks, mid block."""
    m.add("time_embedding.linear_1.", "time_embed.0.")
    m.add("time_embedding.linear_2.", "time_embed.2.")
    m.add("conv_in.", "input_blocks.0.0.")
    n, per = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    for i in range(n):
        for j in range(per):
            idx = 1 + i * (per + 1) + j
            m.add(f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{idx}.0.", _RESNET_UNET)
            m.add(f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{idx}.1.")
        if i < n - 1:
            m.add(f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{1 + i * (per + 1) + per}.0.op.")
    m.add("mid_block.resnets.0.", "middle_block.0.", _RESNET_UNET)
    m.add("mid_block.attentions.0.", "middle_block.1.")
    m.add("mid_block.resnets.1.", "middle_block.2.", _RESNET_UNET)


def unet_to_ldm(state: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict -> LDM UNetModel names (without the ``model.diffusion_model.`` prefix)."""
    m = _Mapper()
    _encoder_rules(m, cfg)
    n, per = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    for i, block_type in enumerate(cfg["up_block_types"]):
        has_attn = "CrossAttn" in block_type
        for j in range(per + 1):
            idx = i * (per + 1) + j
            m.add(f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{idx}.0.", _RESNET_UNET)
            m.add(f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{idx}.1.")
        if i < n - 1:
            last = i * (per + 1) + per
            m.add(f"up_blocks.{i}.upsamplers.0.conv.", f"output_blocks.{last}.{2 if has_attn else 1}.conv.")
    m.add("conv_norm_out.", "out.0.")
    m.add("conv_out.", "out.2.")
    return m.convert(state, "unet")


def controlnet_to_ldm(state: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ControlNetModel state dict -> cldm ControlNet names (without the ``control_model.`` prefix)."""
    m = _Mapper()
    _encoder_rules(m, cfg)
    n_blocks = 2 * (len(cfg["conditioning_embedding_out_channels"]) - 1)
    m.add("controlnet_cond_embedding.conv_in.", "input_hint_block.0.")
    for k in range(n_blocks):
        m.add(f"controlnet_cond_embedding.blocks.{k}.", f"input_hint_block.{2 * (k + 1)}.")
    m.add("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * (n_blocks + 1)}.")
    n_zero = sum(1 for k in state if k.startswith("controlnet_down_blocks.") and k.endswith(".weight"))
    for k in range(n_zero):
        m.add(f"controlnet_down_blocks.{k}.", f"zero_convs.{k}.0.")
    m.add("controlnet_mid_block.", "middle_block_out.0.")
    return m.convert(state, "controlnet")


def vae_to_ldm(state: dict[str, torch.Tensor], cfg: dict[str, Any]) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict -> LDM AutoencoderKL names; mid-attention linears become 1x1 convs."""
    m = _Mapper()
    n, per = len(cfg["block_out_channels"]), cfg["layers_per_block"]
    for part in ("encoder", "decoder"):
        m.add(f"{part}.conv_in.", f"{part}.conv_in.")
        m.add(f"{part}.conv_out.", f"{part}.conv_out.")
        m.add(f"{part}.conv_norm_out.", f"{part}.norm_out.")
        m.add(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", _RESNET_VAE)
        m.add(f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", _RESNET_VAE)
        m.add(f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTN)
    for i in range(n):
        for j in range(per):
            m.add(f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}.", _RESNET_VAE)
        m.add(f"encoder.down_blocks.{i}.downsamplers.0.conv.", f"encoder.down.{i}.downsample.conv.")
        ldm_i = n - 1 - i  # the LDM decoder numbers its levels from the lowest resolution up
        for j in range(per + 1):
            m.add(f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{ldm_i}.block.{j}.", _RESNET_VAE)
        m.add(f"decoder.up_blocks.{i}.upsamplers.0.conv.", f"decoder.up.{ldm_i}.upsample.conv.")
    for name in ("quant_conv.", "post_quant_conv."):
        m.add(name, name)
    out = m.convert(state, "vae")
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            out[key] = value.reshape(*value.shape, 1, 1)  # nn.Linear [C, C] -> nn.Conv2d 1x1 [C, C, 1, 1]
    return out


def _schedule_buffers(n: int = 1000) -> dict[str, torch.Tensor]:
    """The DDPM schedule buffers that real SD1.x checkpoints carry (scaled-linear betas 0.00085..0.012)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, n, dtype=torch.float64) ** 2
    return {"betas": betas.float(), "alphas_cumprod": torch.cumprod(1 - betas, 0).float()}


def sd_checkpoint_state(unet: Any, vae: Any, text_encoder: Any, text_layout: str = "text_model") -> dict[str, torch.Tensor]:
    """One LDM-layout state dict for a whole SD model, as found in an SD1.x ``.safetensors``/``.ckpt``.

    ``text_layout="flat"`` writes the CLIP keys without ``text_model.`` (``cond_stage_model.transformer.encoder...``),
    as diffusers' convert_diffusers_to_original_stable_diffusion.py does under transformers 5.
    """
    inner = "text_model." if text_layout == "text_model" else ""
    state: dict[str, torch.Tensor] = dict(_schedule_buffers())
    for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items():
        state[UNET_PREFIX + k] = v
    for k, v in vae_to_ldm(vae.state_dict(), dict(vae.config)).items():
        state[VAE_PREFIX + k] = v
    for k, v in text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel; SD1.x files keep the old "text_model." level.
        state[CLIP_PREFIX + inner + k.removeprefix("text_model.")] = v
    n_pos = text_encoder.config.max_position_embeddings
    state[CLIP_PREFIX + inner + "embeddings.position_ids"] = torch.arange(n_pos, dtype=torch.int64)[None]
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def controlnet_checkpoint_state(controlnet: Any) -> dict[str, torch.Tensor]:
    """``control_model.*`` state dict of a ControlNet, as in ``control_v11*_sd15_*.pth``."""
    state = controlnet_to_ldm(controlnet.state_dict(), dict(controlnet.config))
    return {CONTROLNET_PREFIX + k: v.detach().contiguous().clone() for k, v in state.items()}


def save_checkpoint(state: dict[str, torch.Tensor], path: str | Path) -> Path:
    """``.safetensors`` via safetensors, anything else as a zip-format ``torch.save`` of ``{"state_dict": ...}``."""
    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(p))
    else:
        torch.save({"state_dict": state}, p)
    return p


class _RenamingPickler(pickle._Pickler):
    """Pure-Python pickler that writes chosen globals under other names (module and class of 2022's libraries)."""

    renames: dict[Any, str] = {}

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj in self.renames:
            module, qualname = self.renames[obj].rsplit(".", 1)
            self.write(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


class ModelCheckpoint:
    """Written as ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` (PyTorch Lightning 1.4)."""


def save_official_ckpt(state: dict[str, torch.Tensor], path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """A ``.ckpt`` with the top level of the CompVis/Stability SD1.x releases (sd-v1-4.ckpt, v1-5-pruned.ckpt).

    Written by PyTorch Lightning 1.4 with numpy 1.2x: ``epoch``/``global_step`` numpy int64 scalars (pickled through
    ``numpy.core.multiarray.scalar`` and ``numpy.dtype``), ``pytorch-lightning_version``, ``callbacks`` keyed by the
    ``ModelCheckpoint`` class (its state a dict), plus here a ``ModelCheckpoint`` instance, and ``state_dict``.
    """
    import numpy as np

    scalar = np._core.multiarray.scalar if hasattr(np, "_core") else np.core.multiarray.scalar
    renames = {scalar: "numpy.core.multiarray.scalar",
               ModelCheckpoint: "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"}
    pickler = type("Pickler", (_RenamingPickler,), {"renames": renames})
    callback = ModelCheckpoint()
    callback.__dict__.update(monitor=None, save_top_k=-1, best_model_path="", dirpath="/fsx/logs/checkpoints")
    top = {
        "epoch": np.int64(6),
        "global_step": np.int64(840000),
        "pytorch-lightning_version": "1.4.2",
        "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_score": None, "best_model_path": "",
                                        "current_score": None, "dirpath": "/fsx/logs/checkpoints"}},
        "hparams_callback": callback,
        "state_dict": state,
        **(extra or {}),
    }
    p = Path(path)
    torch.save(top, p, pickle_module=types.SimpleNamespace(Pickler=pickler, __name__="pickle"))
    return p
