"""The few-step tier: LCM / TCD schedulers against diffusers' pipeline, and LCM-LoRA / Hyper-SD-style LoRA files in
the kohya layout artists download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from neurender.contract import ContractError, LoraSpec, RenderSettings
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.engine.schedulers import make_scheduler
from neurender.models.loading import load_pipeline
from neurender.models.random_models import build_random_lora

from support.kohya_lora import peft_to_kohya

H, W = 64, 96


def _control(seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(H, W, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])])


def _ours(pipe, scheduler, guidance, steps=4, eta=None, frames=1):
    options = SamplerOptions(steps=steps, seed=7, scheduler=scheduler, guidance_scale=guidance, consistency="off",
                             control_scales=[1.0], eta=eta)

    def provide(positions):
        return [pipe.control_image_processor.preprocess([_control(1) for _ in positions], height=H, width=W)]

    s = LockstepSampler(pipe, options, frames, H, W, controls=provide, prompt="a red car", negative_prompt="blurry")
    return s.decode(s.run())


@pytest.mark.parametrize("scheduler", ["lcm", "tcd"])
@pytest.mark.parametrize("guidance", [1.0, 1.5])
def test_few_step_schedulers_equal_diffusers_pipeline_for_one_frame(loaded, scheduler, guidance):
    pipe = loaded.pipe
    saved = pipe.scheduler
    pipe.scheduler = make_scheduler(scheduler, saved.config)
    extra = {"eta": 0.3} if scheduler == "tcd" else {}  # TCD's gamma: the pipeline's eta, our default for tcd
    try:
        ref = pipe("a red car", image=_control(1), height=H, width=W, num_inference_steps=4, guidance_scale=guidance,
                   negative_prompt="blurry", generator=torch.Generator("cpu").manual_seed(7), output_type="np",
                   **extra).images
    finally:
        pipe.scheduler = saved
    ours = _ours(pipe, scheduler, guidance)
    assert ours.shape == ref.shape == (1, H, W, 3)
    assert np.abs(ours - ref).max() < 1e-5
    # the schedulers are really the few-step ones (not a fallback to the default): another scheduler differs
    assert np.abs(_ours(pipe, "ddim", guidance) - ours).max() > 0


def test_tcd_gamma_is_used(loaded):
    deterministic = _ours(loaded.pipe, "tcd", 1.0, eta=0.0)
    assert np.abs(_ours(loaded.pipe, "tcd", 1.0, eta=0.0) - deterministic).max() == 0.0
    assert np.abs(_ours(loaded.pipe, "tcd", 1.0) - deterministic).max() > 0  # default gamma 0.3: stochastic steps


def test_few_step_schedulers_refuse_more_than_their_schedule():
    RenderSettings(scheduler="lcm", steps=4).check()
    with pytest.raises(ContractError, match="at most 50 steps"):
        RenderSettings(scheduler="tcd", steps=60).check()


def _generate(pipe):
    return pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(0)).images


def test_kohya_lora_changes_output_and_weight_zero_equals_none(tiny_model_dir, tmp_path):
    peft = build_random_lora(tiny_model_dir.model, tmp_path / "peft.safetensors", rank=4, seed=3)
    kohya = peft_to_kohya(peft, tmp_path / "lcm_lora_kohya.safetensors")
    keys = set(load_file(str(kohya)))
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert not any(k.startswith("unet.") for k in keys)
    base = _generate(load_pipeline(tiny_model_dir.model).pipe)
    with_kohya = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(kohya), 1.0)]).pipe)
    with_peft = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(peft), 1.0)]).pipe)
    zero = _generate(load_pipeline(tiny_model_dir.model, loras=[LoraSpec(str(kohya), 0.0)]).pipe)
    assert np.abs(with_kohya - base).max() > 1e-2
    assert np.array_equal(zero, base)
    # the same update as the PEFT file it was re-keyed from: every layer was found under its kohya name
    assert np.abs(with_kohya - with_peft).max() < 1e-5


@pytest.mark.parametrize("scheduler", ["lcm", "tcd"])
def test_few_step_checkpoint_resume_is_exact(loaded, scheduler, tmp_path):
    pipe = loaded.pipe

    def sampler():
        options = SamplerOptions(steps=4, seed=7, scheduler=scheduler, guidance_scale=1.5, consistency="first+prev",
                                 control_scales=[1.0], fixed_noise=False)
        provide = lambda positions: [  # noqa: E731
            pipe.control_image_processor.preprocess([_control(p) for p in positions], height=H, width=W)
        ]
        return LockstepSampler(pipe, options, 3, H, W, controls=provide, prompt="a red car")

    full = sampler().run()

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    s = sampler()
    s.checkpoint_path, s.fingerprint, s.on_step = tmp_path / "state.pt", "abc", stop_after_two
    with pytest.raises(Stop):
        s.run()
    r = sampler()
    r.checkpoint_path, r.fingerprint = tmp_path / "state.pt", "abc"
    assert torch.equal(r.run(), full)  # the stochastic re-noising draws continue from the saved generator state
