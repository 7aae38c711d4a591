"""Random-weight Stable-Diffusion-shaped models, built in code (no pretrained weights exist on a test machine).

Following diffusers' own tests ("dummy components"), every component is a seeded, randomly initialised module of the
SD1.5 architecture with small widths. All sizes use the real CLIP tokenizer shipped in ``neurender/data`` (its 49408 x
hidden token embedding is only 6 MB at hidden 32), so prompts tokenize exactly as with SD1.5.

Sizes:

* ``tiny``  fast tests: 4 UNet levels (widths 32/32/64/64, 1 layer each), a 4-level VAE so latents are image/8 as in SD,
  2-layer text encoder of width 32. A 64 px image gives 8x8 latents.
* ``mini``  the SD1.5 topology (CrossAttn x3 + Down, 2 layers per block, same block types, conv proj_in/out) with small
  widths: it has SD's original (LDM) key layout, so it round-trips through single-file checkpoints.
* ``mid``   SD1.5 topology at widths 128/256/512/512 for benchmarks: 137M UNet + 58M per ControlNet parameters,
  stored in float16 on disk (~0.42 GB with one ControlNet; loading in float32 upcasts), built in ~20 s.

ControlNets are random too, and their zero-initialised output convolutions (Zhang et al. 2023, arXiv 2302.05543,
"zero convolution") are given ordinary random weights, so that a control image does change the output of a demo model.
Their condition encoder (8 small convolutions) gets variance-preserving He initialisation (He et al. 2015, arXiv
1502.01852) with zero biases: with PyTorch's default init the image's signal shrinks ~1000x through it and the control
image would have no visible effect.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurender.errors import InputError
from neurender.models.cachedir import cache_root
from neurender.models.sd15_config import (
    SD15_SCHEDULER,
    SD15_UNET,
    controlnet_config_from_unet,
    tokenizer_data_dir,
)

log = logging.getLogger(__name__)

RANDOM_MODEL_MARKER = "neurender_random_model.json"
"""File written into a random model folder; ``load_pipeline`` reports such models as ``random_weights=True``."""

RANDOM_MODEL_VERSION = 2
"""Bumped whenever the same seed would build different weights; cached demo models of other versions are rebuilt."""


def _marker(**fields: Any) -> str:
    return json.dumps({"version": RANDOM_MODEL_VERSION, **fields}) + "\n"


def _is_current(folder: Path) -> bool:
    try:
        return json.loads((folder / RANDOM_MODEL_MARKER).read_text(encoding="utf-8")).get("version") == (
            RANDOM_MODEL_VERSION
        )
    except (OSError, ValueError, AttributeError):
        return False


@dataclass
class RandomModelPaths:
    model: Path
    controlnets: dict[str, Path] = field(default_factory=dict)  # kind -> folder


@dataclass(frozen=True)
class _Size:
    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    hint_channels: tuple[int, ...]
    save_half: bool = False  # store weights as float16 (disk size); load_pipeline casts to the requested dtype


def _unet(widths: tuple[int, ...], layers: int, heads: int, cross: int, groups: int) -> dict[str, Any]:
    cfg = dict(SD15_UNET)
    cfg.update(
        block_out_channels=list(widths),
        layers_per_block=layers,
        attention_head_dim=heads,
        cross_attention_dim=cross,
        norm_num_groups=groups,
        sample_size=8 if widths[0] <= 32 else 64,
    )
    return cfg


def _vae(widths: tuple[int, ...], layers: int, groups: int) -> dict[str, Any]:
    return {
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "block_out_channels": list(widths),
        "layers_per_block": layers,
        "norm_num_groups": groups,
        "act_fn": "silu",
        "sample_size": 64,
        "scaling_factor": 0.18215,
    }


def _text(hidden: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "vocab_size": 49408,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "max_position_embeddings": 77,
        "hidden_act": "quick_gelu",
        "projection_dim": hidden,
        "layer_norm_eps": 1e-05,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


SIZES: dict[str, _Size] = {
    "tiny": _Size(
        unet=_unet((32, 32, 64, 64), layers=1, heads=2, cross=32, groups=8),
        vae=_vae((8, 16, 16, 16), layers=1, groups=8),
        text=_text(32, layers=2, heads=4),
        hint_channels=(8, 8, 16, 16),
    ),
    "mini": _Size(
        unet=_unet((32, 64, 64, 64), layers=2, heads=4, cross=32, groups=32),
        vae=_vae((32, 32, 64, 64), layers=2, groups=32),
        text=_text(32, layers=2, heads=4),
        hint_channels=(16, 16, 32, 32),
    ),
    "mid": _Size(
        unet=_unet((128, 256, 512, 512), layers=2, heads=8, cross=256, groups=32),
        vae=_vae((64, 128, 128, 128), layers=2, groups=32),
        text=_text(256, layers=4, heads=4),
        hint_channels=(16, 32, 96, 256),
        save_half=True,
    ),
}


def _make_control_visible(controlnet: Any) -> None:
    """Random instead of zero output convs, He-initialised condition encoder (see the module docstring)."""
    import torch

    for conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
        conv.reset_parameters()
    for module in controlnet.controlnet_cond_embedding.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            torch.nn.init.zeros_(module.bias)


def build_random_model(
    out_dir: str | Path,
    *,
    size: str = "tiny",
    control_kinds: tuple[str, ...] | list[str] = ("depth", "normal", "edges"),
    seed: int = 0,
) -> RandomModelPaths:
    """Build and save a seeded random SD pipeline (diffusers layout) and one random ControlNet per kind.

    Layout: ``out_dir/model`` (a diffusers StableDiffusionPipeline folder) and ``out_dir/controlnet-<kind>``.
    The same seed gives the same weights bit for bit. The global torch RNG is left untouched.
    """
    if size not in SIZES:
        raise InputError(f"random model size {size!r} is not one of {', '.join(SIZES)}")
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    spec = SIZES[size]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = out / "model"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**spec.unet)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(**spec.vae)
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig(**spec.text))
        pipe = StableDiffusionPipeline(
            unet=unet,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=CLIPTokenizer.from_pretrained(tokenizer_data_dir(), local_files_only=True),
            scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        if spec.save_half:
            pipe.to(torch.float16)
        pipe.save_pretrained(model_dir, safe_serialization=True)
        # The shipped vocabulary files too, so the folder also works as a from_single_file config folder.
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "LICENSE"):
            shutil.copyfile(tokenizer_data_dir() / name, model_dir / "tokenizer" / name)
        (model_dir / RANDOM_MODEL_MARKER).write_text(_marker(size=size, seed=seed), encoding="utf-8")

        controlnets: dict[str, Path] = {}
        cn_config = controlnet_config_from_unet(dict(unet.config), spec.hint_channels)
        cn_config.pop("_class_name")
        for i, kind in enumerate(control_kinds):
            torch.manual_seed(seed + 100 + i)
            controlnet = ControlNetModel(**cn_config)
            _make_control_visible(controlnet)
            if spec.save_half:
                controlnet.to(torch.float16)
            folder = out / f"controlnet-{kind}"
            controlnet.save_pretrained(folder, safe_serialization=True)
            (folder / RANDOM_MODEL_MARKER).write_text(_marker(size=size, seed=seed, kind=kind), encoding="utf-8")
            controlnets[kind] = folder
    log.info("built random %s model (seed %d) in %s", size, seed, out)
    return RandomModelPaths(model=model_dir, controlnets=controlnets)


def default_demo_model(control_kinds: tuple[str, ...] = ("depth", "normal", "edges")) -> RandomModelPaths:
    """The tiny random demo model in ``<cache>/random-tiny``, built on first use (atomic rename).

    Used by the CLI when no ``--model`` is given; loading it yields ``random_weights=True``.
    """
    target = cache_root() / "random-tiny"
    wanted = {k: target / f"controlnet-{k}" for k in control_kinds}
    if _is_current(target / "model") and all(_is_current(p) for p in wanted.values()):
        return RandomModelPaths(model=target / "model", controlnets=wanted)
    target.parent.mkdir(parents=True, exist_ok=True)
    kinds = tuple(sorted(set(control_kinds) | {"depth", "normal", "edges"}))
    tmp = Path(tempfile.mkdtemp(prefix=".random-tiny-", dir=target.parent))
    try:
        build_random_model(tmp, size="tiny", control_kinds=kinds, seed=0)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "model" / RANDOM_MODEL_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RandomModelPaths(model=target / "model", controlnets=wanted)


def build_random_lora(
    model_dir: str | Path,
    out_file: str | Path,
    *,
    rank: int = 4,
    seed: int = 0,
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0"),
) -> Path:
    """Write a seeded random LoRA (Hu et al. 2021, arXiv 2106.09685) for the UNet of the diffusers model ``model_dir``.

    Unlike a freshly initialised LoRA (B = 0) both factors are random, so it visibly changes the output.
    Saved in diffusers/PEFT key layout (``unet.<module>.lora_A.weight``) as ``.safetensors``.
    """
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet", local_files_only=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), init_lora_weights=False))
    layers = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(
        out.parent, unet_lora_layers=layers, weight_name=out.name, safe_serialization=True
    )
    return out
