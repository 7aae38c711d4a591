"""AnimateDiff motion modules (Guo et al. 2023, arXiv 2307.04725), loaded offline and checked against the UNet.

A motion module adds temporal transformer layers (self-attention across frames at every spatial position, with
sinusoidal frame-position encodings) after the spatial layers of every UNet block. Two forms are accepted:

* a diffusers ``MotionAdapter`` folder (``config.json`` with ``"_class_name": "MotionAdapter"`` + weights);
* an original AnimateDiff single file (``mm_sd_v15_v2.ckpt``, ``v3_sd15_mm.ckpt``, AnimateLCM, AnimateDiff-Lightning,
  as .ckpt or .safetensors). Its configuration is read from the tensor shapes, with no hub: block widths (the temporal
  GroupNorm's channels), motion layers per block, transformer layers per motion layer, the mid-block module, and the
  number of frame positions (``pos_encoder.pe`` is (1, positions, width)); the file is then loaded through diffusers'
  own conversion (``MotionAdapter.from_single_file`` with that config). Heads and norm groups leave no trace in the
  shapes: every published SD1.5 module uses 8 and 32 (diffusers' defaults), and so does this reader.

The motion UNet (``UNetMotionModel``) is assembled around the loaded 2D UNet's own modules (shared, not copied: no
second UNet in memory, and LoRA layers injected into the 2D UNet act in the motion UNet too), with the adapter's
temporal modules added - the model ``UNetMotionModel.from_unet2d(unet, adapter)`` builds, without the copy.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from pathlib import Path
from typing import Any

from neurender.errors import ModelLoadError
from neurender.models.checkpoint_files import CheckpointInfo, brief, read_checkpoint

log = logging.getLogger(__name__)

DEFAULT_HEADS = 8
DEFAULT_NORM_GROUPS = 32
DEFAULT_POSITIONS = 32
SDXL_WIDTHS = (320, 640, 1280)

_MODULE_NORM = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.motion_modules\.(\d+)\.norm\.weight$")
_MID_NORM = re.compile(r"^mid_block\.motion_modules\.(\d+)\.norm\.weight$")
_LAYER_NORM = re.compile(r"^(.*\.motion_modules\.0)\.transformer_blocks\.(\d+)\.norm1\.weight$")


def _canonical(key: str) -> str:
    """An original-layout tensor name in diffusers' MotionAdapter layout (as diffusers' conversion renames it)."""
    for prefix in ("module.", "model.", "motion_module."):
        key = key.removeprefix(prefix)
    return (
        key.replace(".temporal_transformer", "")
        .replace(".norms.0", ".norm1")
        .replace(".norms.1", ".norm2")
        .replace(".ff_norm", ".norm3")
        .replace(".attention_blocks.0", ".attn1")
        .replace(".attention_blocks.1", ".attn2")
    )


def is_motion_module(info: CheckpointInfo) -> bool:
    return any(".motion_modules." in k for k in info.shapes)


def config_from_shapes(info: CheckpointInfo) -> dict[str, Any]:
    """The ``MotionAdapter`` config of a motion-module file, read from its tensor shapes alone."""
    shapes = {_canonical(k): v for k, v in info.shapes.items()}
    down: dict[int, dict[int, int]] = {}
    up: dict[int, dict[int, int]] = {}
    mid: dict[int, int] = {}
    layers: dict[str, int] = {}
    positions = None
    conv_in = None
    for key, shape in shapes.items():
        m = _MODULE_NORM.match(key)
        if m:
            (down if m.group(1) == "down_blocks" else up).setdefault(int(m.group(2)), {})[int(m.group(3))] = shape[0]
        m = _MID_NORM.match(key)
        if m:
            mid[int(m.group(1))] = shape[0]
        m = _LAYER_NORM.match(key)
        if m:
            layers[m.group(1)] = max(layers.get(m.group(1), 0), int(m.group(2)) + 1)
        if key.endswith(".pe") and len(shape) == 3 and positions is None:
            positions = shape[1]
        if key == "conv_in.weight" and len(shape) == 4:
            conv_in = shape[1]
    if not down or sorted(down) != list(range(len(down))):
        raise ModelLoadError(f"motion module {info.path} has no readable down-block motion layers")
    n = len(down)
    widths = tuple(down[i][0] for i in range(n))
    per_block = tuple(len(down[i]) for i in range(n))
    transformer_layers = tuple(layers.get(f"down_blocks.{i}.motion_modules.0", 1) for i in range(n))
    config: dict[str, Any] = {
        "block_out_channels": widths,
        "motion_layers_per_block": per_block[0] if len(set(per_block)) == 1 else per_block,
        "motion_transformer_layers_per_block": (
            transformer_layers[0] if len(set(transformer_layers)) == 1 else transformer_layers
        ),
        "motion_mid_block_layers_per_block": max(len(mid), 1),
        "motion_transformer_layers_per_mid_block": layers.get("mid_block.motion_modules.0", 1),
        "motion_num_attention_heads": DEFAULT_HEADS,
        "motion_norm_num_groups": DEFAULT_NORM_GROUPS,
        "motion_max_seq_length": positions or DEFAULT_POSITIONS,
        "use_motion_mid_block": bool(mid),
        "conv_in_channels": conv_in,
    }
    expected_up = [per_block[n - 1 - i] + 1 for i in range(n)]
    found_up = [len(up.get(i, {})) for i in range(n)]
    if up and found_up != expected_up:
        raise ModelLoadError(
            f"motion module {info.path} has {found_up} up-block motion layers where its down blocks imply "
            f"{expected_up} (a damaged or unknown motion-module file)"
        )
    return config


def _folder_config(path: Path) -> dict[str, Any]:
    cfg_file = path / "config.json"
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(
            f"motion module folder {path} has no config.json; expected a diffusers MotionAdapter folder or an "
            "AnimateDiff .ckpt/.safetensors file"
        ) from None
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"motion module folder {path} has an unreadable config.json: {brief(e)}") from e
    if not isinstance(cfg, dict) or cfg.get("_class_name") != "MotionAdapter":
        what = cfg.get("_class_name", "unknown") if isinstance(cfg, dict) else "unknown"
        raise ModelLoadError(f"folder {path} holds a {what} model, not an AnimateDiff MotionAdapter")
    return cfg


def _widths(cfg: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(w) for w in cfg.get("block_out_channels", ()))


def _fmt(values) -> str:
    return "/".join(str(v) for v in values)


def check_motion_module(path: str | Path) -> dict[str, Any]:
    """Up-front checks that need no model (exists, is a motion module, is not SDXL); returns its adapter config."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(
            f"motion module {p} does not exist; expected a MotionAdapter folder or an AnimateDiff .ckpt/.safetensors"
        )
    if p.is_dir():
        cfg = _folder_config(p)
    else:
        info = read_checkpoint(p)
        if is_motion_module(info) and info.has_lora:
            raise ModelLoadError(
                f"{p} is an AnimateDiff motion LoRA (camera-motion LoRA such as v2_lora_ZoomIn), not a motion module; "
                "give the motion module itself (mm_sd_v15_v2, v3_sd15_mm, ...)"
            )
        if not is_motion_module(info):
            raise ModelLoadError(
                f"{p} is not an AnimateDiff motion module (no 'motion_modules' tensors; it looks like "
                f"{info.looks_like})"
            )
        cfg = config_from_shapes(info)
    widths = _widths(cfg)
    if widths == SDXL_WIDTHS:
        raise ModelLoadError(
            f"motion module {p} is an SDXL motion module (3 blocks of {_fmt(widths)} channels) and neurender renders "
            "SD1.5-family models: use an SD1.5 one such as mm_sd_v15_v2, v3_sd15_mm, AnimateLCM or AnimateDiff-Lightning"
        )
    return cfg


def check_fits(cfg: dict[str, Any], unet_cfg: dict[str, Any], path: str | Path) -> None:
    """Refuse a motion module whose blocks, widths or layers differ from the UNet's, in one sentence."""
    widths, unet_widths = _widths(cfg), tuple(unet_cfg["block_out_channels"])
    if widths != unet_widths:
        raise ModelLoadError(
            f"motion module {path} does not fit the model's UNet: block widths {_fmt(widths)} vs {_fmt(unet_widths)} "
            "(a motion module for another base model?)"
        )
    n = len(unet_widths)
    mine = cfg.get("motion_layers_per_block", 2)
    mine = [mine] * n if isinstance(mine, int) else list(mine)
    theirs = unet_cfg["layers_per_block"]
    theirs = [theirs] * n if isinstance(theirs, int) else list(theirs)
    if mine != theirs:
        raise ModelLoadError(
            f"motion module {path} does not fit the model's UNet: {_fmt(mine)} motion layers per block vs the UNet's "
            f"{_fmt(theirs)} layers per block"
        )
    conv_in = cfg.get("conv_in_channels")
    if conv_in:
        raise ModelLoadError(
            f"motion module {path} is a PIA image-animation module ({conv_in} input channels), not a plain AnimateDiff "
            "motion module"
        )


def load_motion_adapter(path: str | Path, unet_cfg: dict[str, Any], torch_dtype: Any = None) -> Any:
    """The ``MotionAdapter`` at ``path`` (folder or single file), checked to fit ``unet_cfg``; offline."""
    from diffusers import MotionAdapter

    p = Path(path).expanduser()
    cfg = check_motion_module(p)
    check_fits(cfg, unet_cfg, p)
    kwargs = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    try:
        if p.is_dir():
            adapter = MotionAdapter.from_pretrained(str(p), **kwargs)
        else:
            with tempfile.TemporaryDirectory(prefix="neurender-mm-config-") as tmp:
                MotionAdapter.from_config(cfg).save_config(tmp)
                adapter = MotionAdapter.from_single_file(str(p), config=tmp, **kwargs)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for a bad file
        raise ModelLoadError(f"motion module {p} could not be loaded: {brief(e)}") from e
    log.info("loaded motion module %s (%s)", p, "folder" if p.is_dir() else "single file")
    return adapter


def motion_unet(unet: Any, adapter: Any) -> Any:
    """A ``UNetMotionModel`` made of ``unet``'s own modules plus ``adapter``'s temporal modules (nothing copied).

    The skeleton is built on the meta device (no second UNet's weights, not even for a moment) and every submodule
    is then replaced by the 2D UNet's, the temporal layers take the adapter's tensors (``assign``: shared storage).
    The temporal layers are those ``from_unet2d`` builds (their GroupNorms take the UNet's ``norm_num_groups``, as in
    diffusers' pipeline). A tensor left on the meta device is an error, not silence.
    """
    from accelerate import init_empty_weights
    from diffusers import UNetMotionModel

    with init_empty_weights(include_buffers=True):
        model = UNetMotionModel.from_unet2d(unet, adapter, load_weights=False)
    for name in ("conv_in", "time_proj", "time_embedding", "conv_norm_out", "conv_act", "conv_out"):
        setattr(model, name, getattr(unet, name))
    for mine, theirs, motion in zip(model.down_blocks, unet.down_blocks, adapter.down_blocks):
        _share(mine, theirs, ("resnets", "attentions", "downsamplers"))
        mine.motion_modules.load_state_dict(motion.motion_modules.state_dict(), assign=True)
    for mine, theirs, motion in zip(model.up_blocks, unet.up_blocks, adapter.up_blocks):
        _share(mine, theirs, ("resnets", "attentions", "upsamplers"))
        mine.motion_modules.load_state_dict(motion.motion_modules.state_dict(), assign=True)
    _share(model.mid_block, unet.mid_block, ("resnets", "attentions"))
    if hasattr(model.mid_block, "motion_modules"):
        model.mid_block.motion_modules.load_state_dict(adapter.mid_block.motion_modules.state_dict(), assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelLoadError(f"the motion UNet could not take over {len(left)} tensors of the UNet (first: {left[0]})")
    model.to(device=unet.device, dtype=unet.dtype)
    model.eval()
    return model


def _share(mine: Any, theirs: Any, names: tuple[str, ...]) -> None:
    for name in names:
        if getattr(theirs, name, None) is not None:
            setattr(mine, name, getattr(theirs, name))


def random_motion_adapter(unet_cfg: dict[str, Any], seed: int = 0, positions: int = DEFAULT_POSITIONS, **kwargs) -> Any:
    """A seeded random-weight ``MotionAdapter`` that fits ``unet_cfg`` (tests and benchmarks; no weights exist here).

    Every projection gets N(0, (1.5 / sqrt(fan_in))^2) weights (gain 1.5 at any width): diffusers' default init leaves
    the temporal layers nearly inert, and a random module must visibly mix frames. The global torch RNG is left untouched."""
    import torch
    from diffusers import MotionAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = MotionAdapter(
            block_out_channels=tuple(unet_cfg["block_out_channels"]),
            motion_layers_per_block=unet_cfg["layers_per_block"],
            motion_max_seq_length=positions,
            **kwargs,
        )
        for name, p in adapter.named_parameters():
            if name.endswith("weight") and p.ndim == 2:
                torch.nn.init.normal_(p, std=1.5 / p.shape[1] ** 0.5)
    return adapter.eval()
