"""Stable Diffusion 1.5 component configurations, generated in code so single-file loading needs no model hub.

The values are those of the ``stable-diffusion-v1-5`` diffusers repository (UNet, VAE, CLIP ViT-L/14 text encoder,
PNDM scheduler) and of the ``lllyasviel/sd-controlnet-*`` ControlNets (Zhang et al. 2023, arXiv 2302.05543).
``write_pipeline_config`` writes what ``from_single_file(config=...)`` reads: ``model_index.json``, one config per
component and the CLIP tokenizer files shipped in ``neurender/data/clip_tokenizer``. No weights are written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from neurender.models.cachedir import cache_root

log = logging.getLogger(__name__)

# Bump when the generated files change, so stale cached folders are not reused.
CONFIG_VERSION = 1

SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 640, 1280, 1280],
    "layers_per_block": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 768,
    "norm_num_groups": 32,
    "use_linear_projection": False,
    "act_fn": "silu",
    "center_input_sample": False,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
}

SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

SD15_TEXT_ENCODER: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
    "layer_norm_eps": 1e-05,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
}

SD15_SCHEDULER: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "clip_sample": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}

# Channels of the ControlNet's condition encoder (input_hint_block) in the SD1.5 ControlNets.
SD15_CONTROLNET_HINT_CHANNELS: tuple[int, ...] = (16, 32, 96, 256)

# Keys of a UNet config that a ControlNet built for that UNet shares (see ControlNetModel.from_unet).
_UNET_KEYS_SHARED_WITH_CONTROLNET = (
    "in_channels",
    "flip_sin_to_cos",
    "freq_shift",
    "down_block_types",
    "only_cross_attention",
    "block_out_channels",
    "layers_per_block",
    "downsample_padding",
    "mid_block_scale_factor",
    "act_fn",
    "norm_num_groups",
    "norm_eps",
    "cross_attention_dim",
    "transformer_layers_per_block",
    "encoder_hid_dim",
    "encoder_hid_dim_type",
    "attention_head_dim",
    "num_attention_heads",
    "use_linear_projection",
    "class_embed_type",
    "addition_embed_type",
    "addition_time_embed_dim",
    "num_class_embeds",
    "upcast_attention",
    "resnet_time_scale_shift",
    "projection_class_embeddings_input_dim",
)


def tokenizer_data_dir() -> Path:
    """The shipped CLIP tokenizer folder (vocab.json, merges.txt, tokenizer_config.json, LICENSE)."""
    return Path(str(resources.files("neurender") / "data" / "clip_tokenizer"))


def controlnet_config_from_unet(
    unet_config: dict[str, Any],
    hint_channels: tuple[int, ...] = SD15_CONTROLNET_HINT_CHANNELS,
    conditioning_channels: int = 3,
) -> dict[str, Any]:
    """A ControlNetModel config whose down/mid residuals fit a UNet with ``unet_config``."""
    cfg = {k: unet_config[k] for k in _UNET_KEYS_SHARED_WITH_CONTROLNET if k in unet_config}
    cfg["_class_name"] = "ControlNetModel"
    cfg["conditioning_embedding_out_channels"] = list(hint_channels)
    cfg["conditioning_channels"] = conditioning_channels
    cfg["controlnet_conditioning_channel_order"] = "rgb"
    return cfg


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_pipeline_config(
    out_dir: str | Path,
    unet: dict[str, Any],
    vae: dict[str, Any],
    text_encoder: dict[str, Any],
    scheduler: dict[str, Any] = SD15_SCHEDULER,
) -> Path:
    """Write a weight-less diffusers StableDiffusionPipeline folder with these component configs."""
    import diffusers  # local import: keep `import neurender.models` cheap

    out = Path(out_dir)
    version = diffusers.__version__
    _write_json(
        out / "model_index.json",
        {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": version,
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    _write_json(
        out / "unet" / "config.json", {"_class_name": "UNet2DConditionModel", "_diffusers_version": version, **unet}
    )
    _write_json(out / "vae" / "config.json", {"_class_name": "AutoencoderKL", "_diffusers_version": version, **vae})
    _write_json(
        out / "scheduler" / "scheduler_config.json",
        {"_class_name": "PNDMScheduler", "_diffusers_version": version, **scheduler},
    )
    _write_json(
        out / "text_encoder" / "config.json",
        {"architectures": ["CLIPTextModel"], "model_type": "clip_text_model", **text_encoder},
    )
    tok = out / "tokenizer"
    tok.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "LICENSE"):
        shutil.copyfile(tokenizer_data_dir() / name, tok / name)
    return out


def write_sd15_config(out_dir: str | Path) -> Path:
    """Write the SD1.5 config folder (model_index.json, component configs, tokenizer) into ``out_dir``."""
    return write_pipeline_config(out_dir, SD15_UNET, SD15_VAE, SD15_TEXT_ENCODER, SD15_SCHEDULER)


def write_sd15_controlnet_config(out_dir: str | Path) -> Path:
    """Write ``config.json`` of an SD1.5 ControlNet into ``out_dir``."""
    out = Path(out_dir)
    _write_json(out / "config.json", controlnet_config_from_unet(SD15_UNET))
    return out


def default_sd15_config_dir() -> Path:
    """The SD1.5 config folder in the cache, written on first use (atomically, so concurrent users are safe)."""
    target = cache_root() / f"sd15-config-v{CONFIG_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".sd15-config-", dir=target.parent))
    try:
        write_sd15_config(tmp)
        write_sd15_controlnet_config(tmp / "controlnet")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote the SD1.5 config folder %s", target)
    return target
