"""The synthesis engine against diffusers' own pipeline, and the invariants of its consistency features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neurender.engine.attention import CrossFrameState, cross_frame_attention
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.engine.strategy import triangular_weights, window_groups
from neurender.engine.schedulers import make_scheduler
from neurender.models.loading import load_pipeline

H, W = 64, 96  # non-square, multiple of 8
SCHEDULERS = ["ddim", "euler_a", "dpmpp_2m"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from neurender.models.random_models import build_random_model

    return build_random_model(tmp_path_factory.mktemp("tiny-engine"), size="tiny", control_kinds=("depth", "edges"))


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_pipeline(tiny.model, [("depth", tiny.controlnets["depth"])])


@pytest.fixture(scope="module")
def loaded_multi(tiny):
    return load_pipeline(tiny.model, [("depth", tiny.controlnets["depth"]), ("edges", tiny.controlnets["edges"])])


def _control(seed: int) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(H, W, 3) * 255).astype(np.uint8))


def _provider(pipe, images_per_unit):
    """images_per_unit: list (per unit) of list (per frame) of PIL images."""

    def provide(positions):
        return [
            pipe.control_image_processor.preprocess([frames[p] for p in positions], height=H, width=W)
            for frames in images_per_unit
        ]

    return provide


def _sampler(pipe, frames, controls, **opts) -> LockstepSampler:
    opts.setdefault("control_scales", [1.0] * len(controls))
    options = SamplerOptions(**{"steps": 4, "seed": 7, **opts})
    return LockstepSampler(pipe, options, frames, H, W, controls=_provider(pipe, controls), prompt="a red car",
                           negative_prompt="blurry")


def _run(pipe, frames, controls, **opts) -> np.ndarray:
    s = _sampler(pipe, frames, controls, **opts)
    return s.decode(s.run())


def _latents(pipe, frames, controls, **opts) -> torch.Tensor:
    return _sampler(pipe, frames, controls, **opts).run()


# Random tiny models are only weakly sensitive to their inputs (GroupNorm washes most of it out), so "has an
# effect" is checked on latents against an exact zero: the computations are deterministic, so an input that has
# no path to an output changes it by exactly 0.
EFFECT = 1e-7


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize("mode", ["off", "first", "first+prev", "window"])
def test_one_frame_equals_diffusers_controlnet_pipeline(loaded, scheduler, mode):
    pipe = loaded.pipe
    saved = pipe.scheduler
    pipe.scheduler = make_scheduler(scheduler, saved.config)
    try:
        ref = pipe("a red car", image=_control(1), height=H, width=W, num_inference_steps=4, guidance_scale=7.5,
                   negative_prompt="blurry", generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    finally:
        pipe.scheduler = saved
    ours = _run(pipe, 1, [[_control(1)]], scheduler=scheduler, consistency=mode)
    assert ours.shape == ref.shape == (1, H, W, 3)
    assert np.abs(ours - ref).mean() < 1e-3
    if mode == "off":
        assert np.abs(ours - ref).max() == 0.0  # the same code path, bit for bit


def test_multi_controlnet_with_weights_and_guidance_window_equals_pipeline(loaded_multi):
    pipe = loaded_multi.pipe
    saved = pipe.scheduler
    pipe.scheduler = make_scheduler("dpmpp_2m", saved.config)
    try:
        ref = pipe("a red car", image=[_control(1), _control(2)], height=H, width=W, num_inference_steps=4,
                   negative_prompt="blurry", controlnet_conditioning_scale=[0.7, 1.3], control_guidance_start=[0.0, 0.25],
                   control_guidance_end=[0.5, 1.0], generator=torch.Generator("cpu").manual_seed(7), output_type="np").images
    finally:
        pipe.scheduler = saved
    ours = _run(pipe, 1, [[_control(1)], [_control(2)]], consistency="off", control_scales=[0.7, 1.3],
                control_start=[0.0, 0.25], control_end=[0.5, 1.0])
    assert np.abs(ours - ref).max() < 1e-6
    # and each control image really matters: another image for either unit gives another result
    kw = dict(consistency="off", control_scales=[0.7, 1.3], control_start=[0.0, 0.25], control_end=[0.5, 1.0])
    same = _latents(pipe, 1, [[_control(1)], [_control(2)]], **kw)
    assert float((_latents(pipe, 1, [[_control(3)], [_control(2)]], **kw) - same).abs().mean()) > EFFECT
    assert float((_latents(pipe, 1, [[_control(1)], [_control(4)]], **kw) - same).abs().mean()) > EFFECT
    # a unit with weight 0 has no effect at all
    kw0 = dict(kw, control_scales=[0.7, 0.0])
    zero = _latents(pipe, 1, [[_control(1)], [_control(2)]], **kw0)
    assert torch.equal(_latents(pipe, 1, [[_control(1)], [_control(4)]], **kw0), zero)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_fixed_noise_gives_identical_frames_for_identical_controls(loaded, scheduler):
    frames = _run(loaded.pipe, 5, [[_control(1)] * 5], scheduler=scheduler, consistency="first+prev", batch_size=2)
    assert np.abs(frames - frames[:1]).max() < 1e-4
    free = _run(loaded.pipe, 5, [[_control(1)] * 5], scheduler=scheduler, consistency="off", fixed_noise=False)
    assert np.abs(free - free[:1]).mean() > 1e-3  # independent noise: frames differ visibly


@pytest.mark.parametrize("mode", ["first", "first+prev"])
def test_chunk_size_does_not_change_cross_frame_result(loaded, mode):
    controls = [[_control(i) for i in range(5)]]
    one = _run(loaded.pipe, 5, controls, consistency=mode, batch_size=1)
    two = _run(loaded.pipe, 5, controls, consistency=mode, batch_size=2)
    five = _run(loaded.pipe, 5, controls, consistency=mode, batch_size=5)
    assert np.abs(one - five).max() < 1e-4
    assert np.abs(two - five).max() < 1e-4


def test_first_frame_anchors_later_frames_only_with_cross_frame_attention(loaded):
    base = [_control(i) for i in range(4)]
    changed = [_control(99)] + base[1:]
    for mode, should_change in (("off", False), ("first", True), ("first+prev", True)):
        a = _latents(loaded.pipe, 4, [base], consistency=mode, batch_size=2)
        b = _latents(loaded.pipe, 4, [changed], consistency=mode, batch_size=2)
        diff = float((a[3] - b[3]).abs().mean())  # frame 3 is in the second chunk: anchors come from the cache
        assert (diff > EFFECT) == should_change, (mode, diff)
        if not should_change:
            assert diff == 0.0


def test_prev_mode_reaches_across_chunks_but_first_mode_does_not(loaded):
    base = [_control(i) for i in range(4)]
    changed = base[:2] + [_control(77)] + base[3:]  # change frame 2 only
    for mode, should_change in (("first", False), ("first+prev", True)):
        a = _latents(loaded.pipe, 4, [base], consistency=mode, batch_size=3)
        b = _latents(loaded.pipe, 4, [changed], consistency=mode, batch_size=3)
        diff = float((a[3] - b[3]).abs().mean())  # frame 3 (next chunk) sees frame 2 only through "prev"
        assert (diff > EFFECT) == should_change, (mode, diff)
        if not should_change:
            assert diff == 0.0


def test_window_groups_cover_every_frame_and_weights_are_triangular():
    groups = window_groups(11, 4, 3)
    assert groups[0] == [0, 1, 2, 3] and groups[-1] == [7, 8, 9, 10]
    assert sorted({f for g in groups for f in g}) == list(range(11))
    assert window_groups(3, 8, 4) == [[0, 1, 2]]
    w = triangular_weights(5)
    assert torch.allclose(w, torch.tensor([0.2, 0.6, 1.0, 0.6, 0.2]))
    assert float(triangular_weights(2).min()) > 0


def test_window_mode_runs_overlapping_windows(loaded):
    frames = _run(loaded.pipe, 6, [[_control(i) for i in range(6)]], consistency="window", window_size=4, window_stride=2)
    assert frames.shape == (6, H, W, 3) and np.isfinite(frames).all()
    # one step, windows [0..3] and [2..5]: frame 5's control reaches frame 3 through the joint attention of the
    # second window (and the blend of the overlap), but not frame 0, which only the first window covers
    base = [_control(i) for i in range(6)]
    changed = base[:5] + [_control(55)]
    kw = dict(consistency="window", window_size=4, window_stride=2, steps=1)
    a, b = _latents(loaded.pipe, 6, [base], **kw), _latents(loaded.pipe, 6, [changed], **kw)
    assert float((a[3] - b[3]).abs().mean()) > EFFECT
    assert torch.equal(a[0], b[0])
    off = dict(kw, consistency="off", batch_size=4)  # chunks [0..3], [4, 5]: no path from frame 5 to frame 3
    assert torch.equal(_latents(loaded.pipe, 6, [base], **off)[3], _latents(loaded.pipe, 6, [changed], **off)[3])


def test_reference_image_is_an_extra_anchor(loaded):
    pipe = loaded.pipe
    ctrl = [[_control(i) for i in range(2)]]

    def run(ref, mode="first"):
        s = _sampler(pipe, 2, ctrl, consistency=mode)
        s.reference_image = ref
        return s.run()

    assert float((run(_control(11)) - run(_control(12))).abs().mean()) > EFFECT
    assert torch.equal(run(_control(11), "off"), run(_control(12), "off"))  # no anchors without cross-frame attention


def test_processors_are_restored_after_a_run(loaded):
    unet = loaded.pipe.unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    with cross_frame_attention([unet], CrossFrameState(mode="first")):
        assert any(type(v).__name__ == "CrossFrameAttnProcessor" for v in unet.attn_processors.values())
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_noop_step_hook_leaves_output_unchanged(loaded, scheduler):
    controls = [[_control(i) for i in range(3)]]
    plain = _run(loaded.pipe, 3, controls, scheduler=scheduler, consistency="first+prev")
    s = _sampler(loaded.pipe, 3, controls, scheduler=scheduler, consistency="first+prev")
    calls = []

    def roundtrip(ctx):  # x0 -> eps round trip: what the in-iteration deflicker does with an identity deflicker
        calls.append(ctx.step)
        return ctx.noise_from_x0(ctx.predicted_x0())

    s.hooks = [roundtrip]
    hooked = s.decode(s.run())
    assert calls == [0, 1, 2, 3]
    assert np.abs(hooked - plain).max() < 1e-4


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_checkpoint_resume_is_exact(loaded, scheduler, tmp_path):
    controls = [[_control(i) for i in range(3)]]
    full = _sampler(loaded.pipe, 3, controls, scheduler=scheduler, consistency="first+prev", steps=5).run()

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done == 2:
            raise Stop

    ckpt = tmp_path / "state.pt"
    s = _sampler(loaded.pipe, 3, controls, scheduler=scheduler, consistency="first+prev", steps=5)
    s.checkpoint_path, s.fingerprint, s.on_step = ckpt, "abc", stop_after_two
    with pytest.raises(Stop):
        s.run()
    assert ckpt.exists()
    resumed_steps = []
    r = _sampler(loaded.pipe, 3, controls, scheduler=scheduler, consistency="first+prev", steps=5)
    r.checkpoint_path, r.fingerprint, r.on_step = ckpt, "abc", lambda d, t: resumed_steps.append(d)
    resumed = r.run()
    assert resumed_steps == [3, 4, 5]  # only the steps not done before the stop
    assert torch.equal(resumed, full)
    # a checkpoint of other settings is ignored
    o = _sampler(loaded.pipe, 3, controls, scheduler=scheduler, consistency="first+prev", steps=5)
    o.checkpoint_path, o.fingerprint = ckpt, "other"
    assert torch.equal(o.run(), full)
