"""The up-front checks render runs on every model path before any weight loads; ``neurender doctor`` runs the same.

Each check either returns a plan (what render will do with the path, with a one-sentence ``describe()``) or raises
the ``ModelLoadError`` render raises, so doctor and render always say the same thing about a file. Only tensor names
and shapes (``checkpoint_files``) and JSON configs are read here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurender.contract import PREDICTION_TYPES
from neurender.errors import ModelLoadError, ModelMissing
from neurender.models.checkpoint_files import CheckpointInfo, brief, read_checkpoint

log = logging.getLogger(__name__)

_NOT_SD1 = "neurender renders with SD1.x-family models (SD 1.4/1.5 and their fine-tunes)"
_WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")
_WEIGHT_EXTS = (".safetensors", ".bin")


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path} is not a readable JSON file: {brief(e)}") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} does not hold a JSON object")
    return data


def folder_kind(folder: Path) -> str:
    """``"pipeline"`` (model_index.json), ``"controlnet"``, ``"other-model"`` (a config.json) or ``"empty"``."""
    if (folder / "model_index.json").is_file():
        return "pipeline"
    if (folder / "config.json").is_file():
        cls = read_json(folder / "config.json").get("_class_name", "")
        return "controlnet" if "ControlNet" in str(cls) else "other-model"
    return "empty"


def weights_variant(folder: Path, components: tuple[str, ...]) -> str | None:
    """``"fp16"`` when the component folders hold only ``*.fp16.safetensors``/``*.fp16.bin`` weights, else None.

    diffusers loads such a folder only when asked for ``variant="fp16"``; a folder with plain weights needs nothing.
    """
    found_plain = found_fp16 = False
    for comp in components:
        d = folder / comp if comp else folder
        if not d.is_dir():
            continue
        for name in _WEIGHT_NAMES:
            for ext in _WEIGHT_EXTS:
                if (d / f"{name}{ext}").is_file() or (d / f"{name}{ext}.index.json").is_file():
                    found_plain = True
                if (d / f"{name}.fp16{ext}").is_file() or (d / f"{name}.fp16{ext}.index.json").is_file():
                    found_fp16 = True
    return "fp16" if found_fp16 and not found_plain else None


# ---------------------------------------------------------------------------------------------------------------
# The Stable Diffusion model
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ModelPlan:
    """What render will load for the ``model`` setting."""

    path: Path
    kind: str  # "diffusers-folder" or "single-file"
    info: CheckpointInfo | None = None
    config_dir: Path | None = None
    variant: str | None = None
    remap_text_encoder: bool = False
    prediction_type: str = "epsilon"
    prediction_source: str = "the model's scheduler config"
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        what = "a diffusers folder" if self.kind == "diffusers-folder" else "an SD1.x single-file checkpoint"
        extra = [*self.notes]
        if self.variant:
            extra.append(f"its {self.variant} weights (variant '{self.variant}')")
        if self.remap_text_encoder:
            extra.append("text-encoder keys without 'text_model.' remapped")
        extra.append(f"{self.prediction_type} prediction ({self.prediction_source})")
        return f"render loads {self.path} as {what}: " + "; ".join(extra)


def _family_refusal(info: CheckpointInfo, what: str) -> None:
    fam = info.family
    width = info.cross_attention_width()
    if fam == "sdxl":
        raise ModelLoadError(
            f"{what} {info.path} is an SDXL {'ControlNet' if info.has_controlnet else 'checkpoint'} (SDXL uses "
            f"cross-attention width 2048, SD1.x 768); {_NOT_SD1}, SDXL is not supported"
        )
    if fam == "sd2":
        raise ModelLoadError(
            f"{what} {info.path} is an SD 2.x {'ControlNet' if info.has_controlnet else 'checkpoint'} (cross-attention "
            f"width {width or 1024}, OpenCLIP text encoder; SD1.x uses 768); {_NOT_SD1}, SD 2.x is not supported"
        )


def check_sd_checkpoint(info: CheckpointInfo, what: str = "model") -> list[str]:
    """Refuse a single-file checkpoint render cannot use (family, inpainting, missing parts); returns notes."""
    if not info.has_sd_unet:
        kind = {"controlnet": "a ControlNet", "lora": "a LoRA"}.get(info.kind, "not a Stable Diffusion checkpoint")
        raise ModelLoadError(
            f"{what} {info.path} is {kind}; expected an SD1.x-family checkpoint (tensors named 'model.diffusion_model.*')"
        )
    _family_refusal(info, what)
    channels = info.unet_in_channels
    if channels == 9:
        raise ModelLoadError(
            f"{what} {info.path} is an inpainting checkpoint (its UNet takes 9 input channels: latents, mask and masked "
            "image); neurender renders with text-to-image SD1.x checkpoints (4 channels) and has no inpainting mode - "
            "use the base (non-inpainting) version of this model"
        )
    if channels == 8:
        raise ModelLoadError(
            f"{what} {info.path} is an InstructPix2Pix-style checkpoint (8 UNet input channels); neurender renders with "
            "text-to-image SD1.x checkpoints (4 channels)"
        )
    if not info.has_vae:
        raise ModelLoadError(
            f"{what} {info.path} has no VAE (no 'first_stage_model.*' tensors: a UNet-only file?); neurender needs a "
            "full checkpoint with UNet, VAE and text encoder, or a diffusers folder"
        )
    layout = info.text_encoder_layout
    if layout is None:
        raise ModelLoadError(
            f"{what} {info.path} has no text encoder (no 'cond_stage_model.transformer.*' tensors); neurender needs a "
            "full checkpoint with UNet, VAE and text encoder, or a diffusers folder"
        )
    if layout == "open_clip":
        raise ModelLoadError(
            f"{what} {info.path} has an OpenCLIP (SD 2.x) text encoder; {_NOT_SD1}, SD 2.x is not supported"
        )
    return ["text-encoder keys without 'text_model.' are remapped"] if layout == "flat" else []


def check_checkpoint_fits_config(info: CheckpointInfo, config_dir: Path) -> None:
    unet_cfg = read_json(config_dir / "unet" / "config.json")
    conv_in = info.shapes.get("model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is not None and (conv_in[0], conv_in[1]) != (unet_cfg["block_out_channels"][0], unet_cfg["in_channels"]):
        raise ModelLoadError(
            f"{info.path} has a UNet input convolution of {conv_in[1]} -> {conv_in[0]} channels but the config folder "
            f"{config_dir} expects {unet_cfg['in_channels']} -> {unet_cfg['block_out_channels'][0]} (not an SD1.x-"
            "family checkpoint?)"
        )
    width = info.cross_attention_width("model.diffusion_model.")
    if width is not None and width != unet_cfg["cross_attention_dim"]:
        raise ModelLoadError(
            f"{info.path} has a UNet with cross-attention width {width} but the config folder {config_dir} expects "
            f"{unet_cfg['cross_attention_dim']} (SD 2.x uses 1024, SDXL 2048; {_NOT_SD1})"
        )


def prediction_from_yaml(checkpoint: Path) -> str | None:
    """``"v_prediction"``/``"epsilon"`` from the LDM yaml next to a checkpoint (``<name>.yaml``, A1111's convention).

    The CompVis/Stability configs say ``model.params.parameterization: "v"`` for v-prediction models.
    """
    yaml_path = next((p for p in (checkpoint.with_suffix(".yaml"), checkpoint.with_suffix(".yml")) if p.is_file()), None)
    if yaml_path is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelLoadError(f"{yaml_path} (the config next to the checkpoint) is not readable YAML: {brief(e)}") from e
    model = (data.get("model") or {}) if isinstance(data, dict) else {}
    params = (model.get("params") or {}) if isinstance(model, dict) else None
    if not isinstance(params, dict):
        raise ModelLoadError(f"{yaml_path} (the config next to the checkpoint) is not a model config: its model.params "
                             "is not a mapping")
    parameterization = params.get("parameterization", "eps")
    if parameterization == "v":
        return "v_prediction"
    if parameterization in ("eps", None):
        return "epsilon"
    raise ModelLoadError(f"{yaml_path} asks for parameterization {parameterization!r}; only 'eps' and 'v' exist")


def _folder_prediction(folder: Path, prediction_type: str = "auto") -> str:
    """The scheduler config's prediction type; one the engine does not convert (``sample``) is refused under ``auto``
    (an explicit prediction type setting overrides the config)."""
    cfg = folder / "scheduler" / "scheduler_config.json"
    kind = read_json(cfg).get("prediction_type", "epsilon") if cfg.is_file() else "epsilon"
    if prediction_type == "auto" and kind not in ("epsilon", "v_prediction"):
        raise ModelLoadError(f"{cfg} says prediction type {kind!r}; only epsilon and v_prediction models are supported "
                             "(or set the prediction type)")
    return str(kind)


def check_sd_model(model: str | Path, config_dir: str | Path | None = None, prediction_type: str = "auto") -> ModelPlan:
    """Every check of the ``model`` path that needs no weights; ``ModelLoadError`` with render's sentence if refused."""
    from neurender.models.sd15_config import default_sd15_config_dir

    if prediction_type not in PREDICTION_TYPES:
        raise ModelLoadError(f"prediction type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelMissing(f"model {path} does not exist; expected a diffusers folder or a .safetensors/.ckpt file")
    if path.is_dir():
        kind = folder_kind(path)
        if kind == "controlnet":
            raise ModelLoadError(
                f"model {path} is a ControlNet folder; expected a Stable Diffusion model (a folder with "
                "model_index.json or a .safetensors/.ckpt checkpoint)"
            )
        if kind != "pipeline":
            raise ModelLoadError(f"model folder {path} has no model_index.json; expected a diffusers-format SD model")
        index = read_json(path / "model_index.json")
        cls = str(index.get("_class_name", ""))
        if "XL" in cls or "text_encoder_2" in index:
            raise ModelLoadError(f"model folder {path} is an SDXL model ({cls}); {_NOT_SD1}, SDXL is not supported")
        plan = ModelPlan(path=path, kind="diffusers-folder")
        plan.variant = weights_variant(path, ("unet", "vae", "text_encoder"))
        plan.prediction_type = _folder_prediction(path, prediction_type)
    else:
        info = read_checkpoint(path)
        notes = check_sd_checkpoint(info)
        cfg = Path(config_dir) if config_dir is not None else default_sd15_config_dir()
        if folder_kind(cfg) != "pipeline":
            raise ModelLoadError(f"config folder {cfg} has no model_index.json; expected a diffusers-layout config folder")
        check_checkpoint_fits_config(info, cfg)
        plan = ModelPlan(path=path, kind="single-file", info=info, config_dir=cfg, remap_text_encoder=bool(notes))
        from_yaml = prediction_from_yaml(path)
        if from_yaml is not None:
            plan.prediction_type, plan.prediction_source = from_yaml, f"from {path.with_suffix('.yaml').name}"
        else:
            plan.prediction_type = _folder_prediction(cfg, prediction_type)
    if prediction_type != "auto":
        plan.prediction_type, plan.prediction_source = prediction_type, "the prediction type setting"
    return plan


# ---------------------------------------------------------------------------------------------------------------
# ControlNets
# ---------------------------------------------------------------------------------------------------------------


def check_controlnet_path(kind: str, path: Path) -> CheckpointInfo | None:
    """Up-front checks that need no model: exists, is an SD1.x ControlNet. Returns the file's info (None: a folder)."""
    what = f"ControlNet '{kind}'"
    if not path.exists():
        raise ModelMissing(f"{what} {path} does not exist; expected a ControlNet folder or .safetensors/.ckpt file")
    if path.is_dir():
        fkind = folder_kind(path)
        if fkind == "pipeline":
            raise ModelLoadError(f"{what} {path} is a Stable Diffusion model folder, not a ControlNet")
        if fkind != "controlnet":
            raise ModelLoadError(
                f"{what} folder {path} has no ControlNet config.json; expected a diffusers ControlNetModel folder"
            )
        cfg = read_json(path / "config.json")
        width = cfg.get("cross_attention_dim")
        if width == 2048 or cfg.get("addition_embed_type") == "text_time":
            raise ModelLoadError(
                f"{what} folder {path} is an SDXL ControlNet (SDXL uses cross-attention width 2048, SD1.x 768); "
                f"{_NOT_SD1}, SDXL is not supported"
            )
        return None
    info = read_checkpoint(path)
    if not info.has_controlnet:
        raise ModelLoadError(
            f"{what} {path} is {info.looks_like}, not a ControlNet (no 'control_model.*' / hint-encoder tensors)"
        )
    _family_refusal(info, what)
    return info
