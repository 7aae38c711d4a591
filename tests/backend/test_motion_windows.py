"""The motion module in the lockstep sampler (engine/motion_windows.py): one context equals diffusers'
AnimateDiffControlNetPipeline; longer shots over blended context windows. Tiny random models built in code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AnimateDiffControlNetPipeline
from PIL import Image

from neurender.engine.motion_windows import MotionWindows, blend_windows, context_windows, pyramid_weights
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.engine.schedulers import make_scheduler
from neurender.errors import InputError
from neurender.models.loading import load_pipeline
from neurender.models.motion import load_motion_adapter, motion_unet, random_motion_adapter

from support.animatediff_export import export_original

H, W = 64, 96
PROMPT, NEGATIVE = "a red car", "blurry"


def _control(seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])])


@pytest.fixture(scope="module")
def adapter(loaded):
    return random_motion_adapter(dict(loaded.pipe.unet.config), seed=11, positions=24)


def _ours(pipe, motion, frames, scheduler="dpmpp_2m", steps=3, guidance=5.0, batch_size=2, length=16, overlap=4,
          consistency="off", fixed_noise=False, hooks=()):
    options = SamplerOptions(steps=steps, seed=7, scheduler=scheduler, guidance_scale=guidance, consistency=consistency,
                             fixed_noise=fixed_noise, control_scales=[1.0], batch_size=batch_size)

    def provide(positions):
        return [pipe.control_image_processor.preprocess([_control(p) for p in positions], height=H, width=W)]

    s = LockstepSampler(pipe, options, frames, H, W, controls=provide, prompt=PROMPT, negative_prompt=NEGATIVE,
                        strategy=MotionWindows(motion, length, overlap, consistency) if motion is not None else None, hooks=hooks)
    return s.decode(s.run())


def _theirs(pipe, adapter, frames, scheduler="dpmpp_2m", steps=3, guidance=5.0):
    video = AnimateDiffControlNetPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,  # 2D: it builds its own
        motion_adapter=adapter, controlnet=pipe.controlnet, scheduler=make_scheduler(scheduler, pipe.scheduler.config),
        feature_extractor=None,
    )
    out = video(PROMPT, negative_prompt=NEGATIVE, num_frames=frames, height=H, width=W, num_inference_steps=steps,
                guidance_scale=guidance, conditioning_frames=[_control(p) for p in range(frames)],
                generator=torch.Generator("cpu").manual_seed(7), output_type="np")
    return np.asarray(out.frames[0])


@pytest.mark.parametrize("scheduler", ["dpmpp_2m", "euler_a"])
def test_one_context_equals_animatediff_controlnet_pipeline(loaded, adapter, scheduler):
    pipe = loaded.pipe
    ref = _theirs(pipe, adapter, 6, scheduler)
    motion = motion_unet(pipe.unet, adapter)
    ours = _ours(pipe, motion, 6, scheduler, batch_size=2)  # a context is one model call whatever the batch size
    assert ours.shape == ref.shape == (6, H, W, 3)
    assert np.abs(ours - ref).mean() < 2e-3
    # and it is the motion module that makes them equal: the plain per-frame sampler differs
    plain = _ours(pipe, None, 6, scheduler)
    assert np.abs(plain - ref).mean() > 1e-2


def test_original_single_file_gives_the_same_frames(loaded, adapter, tmp_path):
    pipe = loaded.pipe
    folder = tmp_path / "mm"
    adapter.save_pretrained(folder)
    path = export_original(adapter, tmp_path / "mm_sd_v15_random.safetensors")
    config = dict(pipe.unet.config)
    from_folder = _ours(pipe, motion_unet(pipe.unet, load_motion_adapter(folder, config)), 5)
    from_file = _ours(pipe, motion_unet(pipe.unet, load_motion_adapter(path, config)), 5)
    assert np.abs(from_file - from_folder).max() < 1e-6
    assert np.abs(from_file - _theirs(pipe, adapter, 5)).mean() < 2e-3


def test_context_windows_and_pyramid_weights():
    assert context_windows(12, 16, 4) == [list(range(12))]
    assert context_windows(20, 8, 2) == [list(range(0, 8)), list(range(6, 14)), list(range(12, 20))]
    assert context_windows(10, 8, 4) == [list(range(0, 8)), list(range(2, 10))]  # last aligned to the end
    assert pyramid_weights(6).tolist() == [1, 2, 3, 3, 2, 1]
    with pytest.raises(ValueError):
        context_windows(10, 4, 4)


def test_window_blending_weights():
    windows = context_windows(10, 6, 2)  # [0..5], [4..9]
    like = torch.zeros(10, 1, 2, 2)
    const = blend_windows(10, windows, lambda p: torch.full((len(p), 1, 2, 2), 0.37), like)
    assert torch.allclose(const, torch.full_like(const, 0.37))
    # each window predicts its own index: outside the overlap a frame keeps its window's value, inside the
    # overlap it is the pyramid-weighted mean (frame 4: weight 2 in window 0 (position 4), 1 in window 1 (position 0))
    marks = iter([0.0, 1.0])
    got = blend_windows(10, windows, lambda p: torch.full((len(p), 1, 2, 2), next(marks)), like)[:, 0, 0, 0]
    assert got[:4].tolist() == [0.0] * 4 and got[6:].tolist() == [1.0] * 4
    assert got[4].item() == pytest.approx(1 / 3) and got[5].item() == pytest.approx(2 / 3)


class _ConstantVideo(torch.nn.Module):
    """A motion UNet stand-in that predicts a constant and records the frames of every call."""

    def __init__(self, value, positions=32):
        super().__init__()
        self.value, self.calls = value, []
        self.config = {"motion_max_seq_length": positions}

    def forward(self, sample, timestep, **kwargs):
        self.calls.append(sample.shape[2])
        return (torch.full_like(sample, self.value),)


def test_two_windows_blend_a_constant_to_the_constant(loaded):
    pipe = loaded.pipe
    mock = _ConstantVideo(0.25)
    seen = []

    def record(ctx):
        seen.append(ctx.noise_pred.clone())

    _ours(pipe, mock, 11, steps=2, length=6, overlap=2, hooks=[record])
    assert mock.calls == [6, 6, 6] * 2  # three windows per step, each one call with all of its frames
    for pred in seen:
        assert torch.allclose(pred, torch.full_like(pred, 0.25), atol=1e-6)  # CFG of a constant is the constant


def test_shot_longer_than_the_context_renders_in_windows(loaded, adapter):
    pipe = loaded.pipe
    motion = motion_unet(pipe.unet, adapter)
    calls = []
    hook = motion.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[2]))
    try:
        long = _ours(pipe, motion, 10, steps=2, length=6, overlap=2)
    finally:
        hook.remove()
    assert calls == [6, 6] * 2  # two windows per step, never more than the context length in one call
    assert long.shape == (10, H, W, 3) and np.isfinite(long).all() and long.std() > 0.01
    assert np.abs(long - _ours(pipe, None, 10, steps=2)).mean() > 1e-2  # the temporal layers acted


def test_context_longer_than_the_module_positions_is_refused(loaded, adapter):
    with pytest.raises(InputError, match="exceeds the motion module's 24 frame positions"):
        MotionWindows(motion_unet(loaded.pipe.unet, adapter), 32, 4)


def test_motion_render_resumes_exactly_from_a_checkpoint(loaded, adapter, tmp_path):
    """The video-layout scheduler state (DPM++ history, Euler-a generator) survives a checkpoint."""
    pipe = loaded.pipe
    motion = motion_unet(pipe.unet, adapter)

    def sampler():
        options = SamplerOptions(steps=3, seed=7, scheduler="euler_a", guidance_scale=5.0, consistency="first+prev",
                                 fixed_noise=False, control_scales=[1.0])
        provide = lambda positions: [  # noqa: E731
            pipe.control_image_processor.preprocess([_control(p) for p in positions], height=H, width=W)
        ]
        return LockstepSampler(pipe, options, 7, H, W, controls=provide, prompt=PROMPT,
                               strategy=MotionWindows(motion, 4, 2, "first+prev"))

    full = sampler().run()

    class Stop(Exception):
        pass

    def stop_after_one(done, total):
        if done == 1:
            raise Stop

    s = sampler()
    s.checkpoint_path, s.fingerprint, s.on_step = tmp_path / "state.pt", "abc", stop_after_one
    with pytest.raises(Stop):
        s.run()
    r = sampler()
    r.checkpoint_path, r.fingerprint = tmp_path / "state.pt", "abc"
    assert torch.equal(r.run(), full)
