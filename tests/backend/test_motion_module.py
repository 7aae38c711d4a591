"""AnimateDiff motion modules (models/motion.py): diffusers MotionAdapter folders and original single files, the
adapter configuration read from tensor shapes, and the one-sentence refusals. Tiny random adapters built in code."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel
from safetensors.torch import save_file

from neurender.errors import ModelLoadError
from neurender.models.motion import check_motion_module, load_motion_adapter, motion_unet
from neurender.models.random_models import SIZES

from support.animatediff_export import export_original, original_state_dict

TINY_UNET = SIZES["tiny"].unet
MINI_UNET = SIZES["mini"].unet


def tiny_adapter(seed: int = 0, widths=(32, 32, 64, 64), layers=1, **kwargs) -> MotionAdapter:
    """A seeded random adapter; every tensor random (diffusers zero-initialises nothing here, but be explicit)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = MotionAdapter(block_out_channels=widths, motion_layers_per_block=layers, **kwargs)
        for name, p in adapter.named_parameters():
            if name.endswith("weight") and p.ndim == 2:
                torch.nn.init.normal_(p, std=0.2)
    return adapter.eval()


def _same_weights(a, b) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _one_sentence(msg: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg
    assert msg.count(". ") == 0, msg  # one sentence (clauses joined by ';' or parentheses)


def test_motion_adapter_folder_loads_with_identical_weights(tmp_path):
    adapter = tiny_adapter(1)
    adapter.save_pretrained(tmp_path / "mm")
    loaded = load_motion_adapter(tmp_path / "mm", TINY_UNET)
    _same_weights(adapter, loaded)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
@pytest.mark.parametrize(
    "unet_cfg,kwargs",
    [
        (TINY_UNET, {"motion_max_seq_length": 24}),  # mm_sd_v15_v2 style: mid block
        (TINY_UNET, {"use_motion_mid_block": False}),  # mm_sd_v15 (v1) style: no mid block, 32 positions
        (MINI_UNET, {"motion_transformer_layers_per_block": 2, "motion_max_seq_length": 16}),  # SD topology, 2 layers
    ],
    ids=["v2-mid-24pos", "v1-no-mid", "sd-topology-2-transformer-layers"],
)
def test_original_layout_file_loads_with_config_from_shapes(tmp_path, suffix, unet_cfg, kwargs):
    widths = tuple(unet_cfg["block_out_channels"])
    adapter = tiny_adapter(2, widths=widths, layers=unet_cfg["layers_per_block"], **kwargs)
    original = original_state_dict(adapter)
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight" in original
    assert "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.norms.0.weight" in original
    assert not any(".attn1." in k or "pos_embed" in k for k in original)
    path = export_original(adapter, tmp_path / f"mm_sd_v15_test{suffix}")

    cfg = check_motion_module(path)  # from the shapes alone, no model and no hub
    want = adapter.config
    assert tuple(cfg["block_out_channels"]) == widths
    assert cfg["motion_layers_per_block"] == want["motion_layers_per_block"]
    assert cfg["motion_transformer_layers_per_block"] == want["motion_transformer_layers_per_block"]
    assert cfg["use_motion_mid_block"] == want["use_motion_mid_block"]
    assert cfg["motion_max_seq_length"] == want["motion_max_seq_length"]

    loaded = load_motion_adapter(path, unet_cfg)
    for key in ("block_out_channels", "motion_layers_per_block", "motion_transformer_layers_per_block",
                "use_motion_mid_block", "motion_max_seq_length", "motion_mid_block_layers_per_block"):
        assert list(torch.tensor(loaded.config[key]).flatten()) == list(torch.tensor(want[key]).flatten()), key
    _same_weights(adapter, loaded)


def test_motion_unet_shares_the_2d_unet_and_equals_diffusers_from_unet2d():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        unet = UNet2DConditionModel(**TINY_UNET).eval()
    adapter = tiny_adapter(3)
    ours = motion_unet(unet, adapter)
    assert ours.down_blocks[0].resnets is unet.down_blocks[0].resnets  # shared, not copied
    assert ours.conv_in is unet.conv_in
    theirs = UNetMotionModel.from_unet2d(unet, adapter).eval()
    frames = 3
    x = torch.randn(1, 4, frames, 8, 8, generator=torch.Generator().manual_seed(0))
    text = torch.randn(frames, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = ours(x, torch.tensor(500), encoder_hidden_states=text).sample
        b = theirs(x, torch.tensor(500), encoder_hidden_states=text).sample
        plain = unet(x[0].permute(1, 0, 2, 3), torch.tensor(500), encoder_hidden_states=text).sample
    assert torch.allclose(a, b, atol=1e-6)
    # the temporal layers act: frames are not denoised independently
    assert (a[0].permute(1, 0, 2, 3) - plain).abs().max() > 1e-3


def test_adapter_that_does_not_fit_the_unet_is_refused_in_one_sentence(tmp_path):
    other_widths = tiny_adapter(4, widths=(32, 64, 64, 64))
    other_widths.save_pretrained(tmp_path / "widths")
    with pytest.raises(ModelLoadError, match="does not fit the model's UNet: block widths 32/64/64/64 vs 32/32/64/64") as e:
        load_motion_adapter(tmp_path / "widths", TINY_UNET)
    _one_sentence(str(e.value))
    two_layers = export_original(tiny_adapter(4, layers=2), tmp_path / "layers.safetensors")
    with pytest.raises(ModelLoadError, match="2/2/2/2 motion layers per block vs the UNet's 1/1/1/1") as e:
        load_motion_adapter(two_layers, TINY_UNET)
    _one_sentence(str(e.value))


def test_sdxl_motion_module_is_refused_before_loading(tmp_path):
    # mm_sdxl_v10_beta's layout at the shape level: 3 down blocks of 320/640/1280 (only the tensors the reader needs)
    tensors = {}
    for i, w in enumerate((320, 640, 1280)):
        for j in range(2):
            head = f"down_blocks.{i}.motion_modules.{j}.temporal_transformer."
            tensors[head + "norm.weight"] = torch.zeros(w)
            tensors[head + "transformer_blocks.0.norms.0.weight"] = torch.zeros(w)
            tensors[head + "transformer_blocks.0.attention_blocks.0.pos_encoder.pe"] = torch.zeros(1, 32, w)
    path = tmp_path / "mm_sdxl_v10_beta.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(ModelLoadError, match="is an SDXL motion module") as e:
        load_motion_adapter(path, TINY_UNET)
    _one_sentence(str(e.value))


def test_file_that_is_not_a_motion_module_is_refused(tmp_path, tiny_model_dir):
    unet_file = next((tiny_model_dir.model / "unet").glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="is not an AnimateDiff motion module") as e:
        load_motion_adapter(unet_file, TINY_UNET)
    _one_sentence(str(e.value))
    lora = tmp_path / "v2_lora_ZoomIn.safetensors"  # an AnimateDiff motion LoRA is not a motion module either
    save_file({"down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0."
               "processor.to_q_lora.down.weight": torch.zeros(4, 32)}, str(lora))
    with pytest.raises(ModelLoadError, match="motion LoRA") as e:
        load_motion_adapter(lora, TINY_UNET)
    _one_sentence(str(e.value))
    with pytest.raises(ModelLoadError, match="holds a ControlNetModel model, not an AnimateDiff MotionAdapter"):
        load_motion_adapter(tiny_model_dir.controlnets["depth"], TINY_UNET)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        load_motion_adapter(tmp_path / "empty", TINY_UNET)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_motion_adapter(tmp_path / "missing.ckpt", TINY_UNET)
    assert json.loads((tiny_model_dir.controlnets["depth"] / "config.json").read_text())["_class_name"]
