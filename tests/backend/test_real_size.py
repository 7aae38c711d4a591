"""A smoke run at the real SD 1.5 size (860M-parameter UNet, 361M ControlNet, full VAE and CLIP text encoder).

No pretrained weights can be downloaded here, so the weights are random; everything else is what an artist's
checkpoint goes through: an original-layout (LDM) single-file .safetensors with SD 1.5's exact key names and shapes,
loaded with neurender's own offline SD 1.5 configuration (no ``config_dir``), a ControlNet single file, and one frame
rendered by the real runner. Costs ~1-2 minutes and ~11 GB of RAM on 2 CPU cores: slow tier (``NEURENDER_FAST=1``
leaves it out).
"""

from __future__ import annotations

import gc

import pytest
import torch

from neurender.contract import ControlNetUnit, RenderSettings
from neurender.runner import JobSpec, run_render
from support.synthetic_passes import write_synthetic_pass_folder

pytestmark = pytest.mark.slow


def test_sd15_sized_single_file_checkpoint_renders_offline(tmp_path):
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from neurender.models.sd15_config import write_sd15_config, write_sd15_controlnet_config
    from support.ldm_export import controlnet_checkpoint_state, save_checkpoint, sd_checkpoint_state

    cfg_dir = write_sd15_config(tmp_path / "cfg")
    cn_dir = write_sd15_controlnet_config(tmp_path / "cncfg")
    torch.manual_seed(0)
    with torch.no_grad():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg_dir / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg_dir / "text_encoder", local_files_only=True))
        assert sum(p.numel() for p in unet.parameters()) == 859_520_964  # SD 1.5's UNet, not a look-alike
        ckpt = save_checkpoint({k: v.half() for k, v in sd_checkpoint_state(unet, vae, text).items()},
                               tmp_path / "sd15-random.safetensors")
        del unet, vae, text
        gc.collect()
        controlnet = ControlNetModel.from_config(ControlNetModel.load_config(cn_dir))
        cn_file = save_checkpoint({k: v.half() for k, v in controlnet_checkpoint_state(controlnet).items()},
                                  tmp_path / "control_sd15_depth-random.safetensors")
        del controlnet
        gc.collect()
    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=1, width=256, height=192)
    settings = RenderSettings(prompt="a castle", steps=2, model=str(ckpt), consistency="first+prev",
                              controlnets=[ControlNetUnit(kind="depth", model=str(cn_file))])
    result = run_render(JobSpec(passes, tmp_path / "out", settings))
    assert result.frames_written == [1] and not result.random_model
    assert (tmp_path / "out" / "frame_0001.png").stat().st_size > 0
