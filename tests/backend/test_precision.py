"""Reduced precision (``--dtype bfloat16`` / ``float16``) on CPU for every consistency mode and every engine feature.

Our users render in float16 on NVIDIA GPUs; this machine has none, so the reduced-precision code paths (dtype
casts between latents, control images, warps, correspondences, anchors and checkpoints) run here on CPU, where
PyTorch has bfloat16 and float16 kernels for everything the engine uses, and are compared with float32.

The comparison must be able to fail. The tiny random model is nearly blind to its inputs (uniform attention over
random keys), so at first its consistency modes differ from each other by less than bfloat16 rounding does. The
tests therefore sharpen its self-attention (queries and keys x ``SHARPEN``, a few lines below) and draw independent
noise per frame, so frames differ and what each frame attends to matters: then any two modes (or a feature on and
off) are further apart in float32 than a reduced-precision run is from its own float32 run, and the tolerances sit
in that gap. ``test_tolerance_is_below_the_distance_between_modes`` checks the gap itself and
``test_the_comparison_fails_on_a_real_mismatch`` shows a bfloat16 run with a real bug (CUDA-style noise drawn from
another generator stream, a ControlNet lost in the cast) failing it.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from neurender.contract import ControlNetUnit, RenderSettings
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.errors import JobCancelled
from neurender.models.cache import PipelineCache
from neurender.models.loading import LoadedPipeline, load_pipeline
from neurender.runner import CancelToken, JobSpec, run_render
from support.synthetic_passes import write_synthetic_pass_folder

N, H, W = 4, 48, 64
SHARPEN = 3.0
LOW = ("bfloat16", "float16")
TOL = {"bfloat16": 0.03, "float16": 0.01}
"""Relative L2 error of the final latents against float32 (measured: bfloat16 0.013-0.019, float16 0.002-0.006 on
this model; the closest two different modes are 0.034 apart)."""
MODES = {
    "off": dict(consistency="off"),
    "first": dict(consistency="first"),
    "first+prev": dict(consistency="first+prev"),
    "window": dict(consistency="window", window_size=2, window_stride=1),
    "keyframes": dict(consistency="keyframes"),
}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def pipes(tiny_model_dir):
    """The tiny model with sharpened self-attention, in float32 and as bfloat16/float16 copies of the same weights."""
    base = load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe
    with torch.no_grad():
        for model in (base.unet, base.controlnet):
            for name, module in model.named_modules():
                if name.endswith("attn1"):
                    module.to_q.weight.mul_(SHARPEN)
                    module.to_k.weight.mul_(SHARPEN)
    out = {"float32": base}
    for dtype in LOW:
        low = copy.deepcopy(base)
        low.to(getattr(torch, dtype))
        out[dtype] = low
    return out


def _controls():
    rng = np.random.RandomState(0)
    return [Image.fromarray((rng.rand(H, W, 3) * 255).astype(np.uint8)) for _ in range(N)]


CONTROLS = _controls()


def _sample(pipe, *, hooks=(), **opts) -> torch.Tensor:
    def provide(positions):
        return [pipe.control_image_processor.preprocess([CONTROLS[p] for p in positions], height=H, width=W)]

    options = SamplerOptions(**{"steps": 4, "seed": 3, "batch_size": 2, "control_scales": [1.0],
                                "fixed_noise": False, **opts})
    sampler = LockstepSampler(pipe, options, N, H, W, controls=provide, prompt="a red car", negative_prompt="blurry",
                              hooks=list(hooks))
    return sampler.run()


_RESULTS: dict = {}


def _mode_result(pipes, mode: str, dtype: str) -> torch.Tensor:
    if (mode, dtype) not in _RESULTS:
        _RESULTS[mode, dtype] = _sample(pipes[dtype], **MODES[mode]).float()
    return _RESULTS[mode, dtype]


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_consistency_mode_in_reduced_precision_matches_float32(pipes, mode, dtype):
    seen = set()
    handle = pipes[dtype].unet.register_forward_pre_hook(lambda module, args: seen.add(args[0].dtype))
    try:
        low = _sample(pipes[dtype], **MODES[mode])
    finally:
        handle.remove()
    assert seen == {getattr(torch, dtype)}  # the model really ran in that precision ...
    assert low.dtype == torch.float32  # ... and the denoising state stayed float32 (engine/sampler.py LATENT_DTYPE)
    assert torch.isfinite(low).all()
    err = rel(low, _mode_result(pipes, mode, "float32"))
    assert err < TOL[dtype], f"{mode} in {dtype}: relative error {err:.4f} against float32"
    # and it is the float32 run of its own mode that it matches best
    others = {m: rel(low, _mode_result(pipes, m, "float32")) for m in MODES if m != mode}
    assert err < min(others.values()), others


def test_tolerance_is_below_the_distance_between_modes(pipes):
    """Sanity of the test itself: a low-precision run that silently took another mode's path would fail."""
    gaps = [rel(_mode_result(pipes, a, "float32"), _mode_result(pipes, b, "float32"))
            for a in MODES for b in MODES if a < b]
    assert min(gaps) > TOL["bfloat16"], gaps


def test_the_comparison_fails_on_a_real_mismatch(pipes, monkeypatch):
    reference = _mode_result(pipes, "first+prev", "float32")
    # 1. noise drawn from another generator stream (what a CUDA generator would give instead of the CPU one)
    import neurender.engine.sampler as sampler_module

    real = sampler_module.make_generator
    monkeypatch.setattr(sampler_module, "make_generator", lambda seed: real(seed + 1))
    wrong_noise = _sample(pipes["bfloat16"], consistency="first+prev")
    monkeypatch.setattr(sampler_module, "make_generator", real)
    assert rel(wrong_noise, reference) > 5 * TOL["bfloat16"]
    # 2. a ControlNet that stops contributing (e.g. its residuals lost in a cast)
    no_control = _sample(pipes["bfloat16"], consistency="first+prev", control_scales=[0.0])
    assert rel(no_control, reference) > TOL["bfloat16"]


# ---------------------------------------------------------------------------------------------------------------
# The job runner: deflicker (in-iteration and post), keyframes with exact correspondences, anchors, resume
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    path = tmp_path_factory.mktemp("precision-passes")
    write_synthetic_pass_folder(path, frames=N, width=W, height=H, motion=(8.0, 0.0))
    return path


@pytest.fixture(scope="module")
def cache(pipes):
    def loader(model, controlnets, loras, device="cpu", dtype="float32", config_dir=None):
        return LoadedPipeline(pipe=pipes[dtype], control_kinds=[k for k, _ in controlnets], description=dtype)

    return PipelineCache(loader=loader)


def _settings(**kw) -> RenderSettings:
    base = dict(prompt="a wooden toy", steps=4, seed=5, model="sharpened-tiny", fixed_noise=False,
                controlnets=[ControlNetUnit(kind="depth", model="sharpened-tiny-depth")],
                consistency="first+prev", batch_size=2, overwrite=True)
    base.update(kw)
    return RenderSettings(**base)


def _render(passes, out, cache, monkeypatch, *, anchors=None, cancel=None, progress=None, **kw):
    """Run the job runner; returns (final latents, decoded frames after the post pass if any)."""
    seen = {}
    run = LockstepSampler.run

    def keep_latents(self):
        latents = run(self)
        seen["latents"] = latents.float()
        return latents

    import neurender.deflicker.render_glue as glue

    post = glue.post_deflicker

    def keep_post(images, *a, **k):
        seen["post"] = post(images, *a, **k)
        return seen["post"]

    monkeypatch.setattr(LockstepSampler, "run", keep_latents)
    monkeypatch.setattr(glue, "post_deflicker", keep_post)
    try:
        run_render(JobSpec(passes, out, _settings(**kw), anchors=anchors), pipelines=cache, cancel=cancel,
                   progress=progress)
    finally:
        monkeypatch.setattr(LockstepSampler, "run", run)
        monkeypatch.setattr(glue, "post_deflicker", post)
    return seen.get("latents"), seen.get("post")


FEATURES = {
    "deflicker-pixel": dict(deflicker_steps=[0, 1, 2, 3], deflicker_window=3),
    "deflicker-latent": dict(deflicker_steps=[0, 1, 2], deflicker_space="latent"),
    "keyframes-exact": dict(consistency="keyframes", keyframe_block=2),
}


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("feature", list(FEATURES))
def test_runner_features_in_reduced_precision_match_float32(passes, cache, monkeypatch, tmp_path, feature, dtype):
    ref, _ = _render(passes, tmp_path / "ref", cache, monkeypatch, **FEATURES[feature])
    without, _ = _render(passes, tmp_path / "without", cache, monkeypatch)
    low, _ = _render(passes, tmp_path / "low", cache, monkeypatch, dtype=dtype, **FEATURES[feature])
    err = rel(low, ref)
    assert err < TOL[dtype], f"{feature} in {dtype}: {err:.4f}"
    if (feature, dtype) == ("deflicker-pixel", "bfloat16"):
        return  # its effect (0.015) is as large as bfloat16's rounding of the whole run: checked by the hook test below
    # the feature's own effect is larger than the tolerance, so a low-precision run that lost it would fail
    assert rel(without, ref) > TOL[dtype] and rel(low, without) > err


@pytest.mark.parametrize("dtype", LOW)
def test_post_deflicker_in_reduced_precision_matches_float32(passes, cache, monkeypatch, tmp_path, dtype):
    _, ref = _render(passes, tmp_path / "ref", cache, monkeypatch, post_deflicker=True, deflicker_window=2)
    _, low = _render(passes, tmp_path / "low", cache, monkeypatch, post_deflicker=True, deflicker_window=2,
                     dtype=dtype)
    assert low.dtype == np.float32 and np.isfinite(low).all()
    err = float(np.linalg.norm(low - ref) / np.linalg.norm(ref - ref.mean()))
    assert err < 2 * TOL[dtype]  # measured 0.020 (bfloat16), 0.0025 (float16) of the images' contrast


@pytest.mark.parametrize("dtype", LOW)
def test_anchors_in_reduced_precision_match_float32(passes, cache, monkeypatch, tmp_path, dtype):
    from neurender.farm.anchors import compute_anchors

    results = {}
    for dt in ("float32", dtype):
        folder = tmp_path / f"anchors-{dt}"
        compute_anchors(passes, folder, _settings(dtype=dt), count=2, pipelines=cache)
        results[dt], _ = _render(passes, tmp_path / f"out-{dt}", cache, monkeypatch, anchors=folder, dtype=dt,
                                 frames="2-3")
    err = rel(results[dtype], results["float32"])
    assert err < TOL[dtype]


@pytest.mark.parametrize("dtype", LOW)
def test_resume_from_checkpoint_in_reduced_precision_is_exact(passes, cache, monkeypatch, tmp_path, dtype):
    whole, _ = _render(passes, tmp_path / "whole", cache, monkeypatch, dtype=dtype)
    token = CancelToken()

    def cancel_after_two(p):
        if p.phase == "denoise" and p.step == 2:
            token.cancel()

    out = tmp_path / "resumed"
    with pytest.raises(JobCancelled):
        _render(passes, out, cache, monkeypatch, dtype=dtype, cancel=token, progress=cancel_after_two)
    state = torch.load(out / ".neurender" / "state.pt", weights_only=True)
    assert state["latents"].dtype == torch.float32 and state["latents"].device.type == "cpu"
    resumed, _ = _render(passes, out, cache, monkeypatch, dtype=dtype, overwrite=False)
    assert torch.equal(resumed, whole)
    ref, _ = _render(passes, tmp_path / "ref", cache, monkeypatch)
    assert rel(resumed, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", LOW)
def test_pixel_deflicker_hook_change_in_reduced_precision_matches_float32(pipes, passes, dtype):
    """The pixel hook's own change of x0 (decode, blend along the motion, encode the difference), on the same x0.

    End to end its effect on this tiny model (~0.015) is below bfloat16's rounding of the whole run, so the hook's
    reduced-precision path is checked here in isolation, where a lost or mis-cast correction shows."""
    from neurender.deflicker.hook import DeflickerHook
    from neurender.deflicker.motion import MotionSource
    from neurender.deflicker.sequence import Deflicker, DeflickerOptions
    from neurender.passes.folder import PassFolder

    folder = PassFolder.open(passes)
    source = MotionSource.from_folder(folder, height=H, width=W)
    x0 = _mode_result(pipes, "first+prev", "float32") / pipes["float32"].vae.config.scaling_factor * 0.18215
    changes = {}
    for dt in ("float32", dtype):
        deflicker = Deflicker(source, DeflickerOptions(window=3))
        hook = DeflickerHook(deflicker, steps=[0], space="pixel")

        class _Ctx:  # what the hook reads of a StepContext
            step = 0
            sampler = LockstepSampler(pipes[dt], SamplerOptions(batch_size=2), N, H, W)

            @staticmethod
            def predicted_x0():
                return x0

            @staticmethod
            def noise_from_x0(x):
                return x

        new = hook(_Ctx())
        assert new.dtype == torch.float32
        changes[dt] = new - x0
    err = rel(changes[dtype], changes["float32"])
    # measured 0.064 (bfloat16) and 0.008 (float16); with the denoising state in bfloat16 instead of float32 the
    # bfloat16 change came out 0.31 off (it is ~0.5% of x0, below what a bfloat16 latent resolves)
    assert err < 4 * TOL[dtype], f"{dtype}: the hook's change of x0 is {err:.3f} off its float32 change"
