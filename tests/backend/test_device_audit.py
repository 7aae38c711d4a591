"""Device audit without a GPU: the whole engine runs with its models on a stand-in accelerator.

``support/device_trap.py`` puts the models' weights on a stand-in device (``meta`` wrappers holding the real CPU
values) and records every aten call that mixes that device with a CPU tensor, which is what raises on CUDA: a noise
tensor drawn without ``device=``, a deflicker plan or a correspondence built on the CPU, anchors or a checkpoint
restored with ``map_location="cpu"`` and never moved. The job runner is run that way (in float32 and float16) for
every consistency mode, the in-iteration (pixel and latent) and post deflicker, keyframes with exact correspondences and
img2img inversion, a reference image, anchors, ancestral and few-step schedulers and resume-from-checkpoint; each
run must record no fault, must have run the modules of its feature on the device, and give the frames the CPU run
gives (checked for one of them; the others are the same arithmetic). ``test_the_trap_catches_a_planted_fault``
shows a ``torch.randn`` without ``device=`` planted in the noise code, and a deflicker plan that forgets its
device, failing it with the source line named; ``test_the_trap_catches_a_checkpoint_restored_onto_the_cpu`` a resume
whose scheduler state stays on the CPU.
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
from support.device_trap import ACCELERATOR, AcceleratorTensor, device_trap, to_accelerator
from support.synthetic_passes import write_synthetic_pass_folder

N, H, W = 4, 48, 64


# ---------------------------------------------------------------------------------------------------------------
# The trap itself
# ---------------------------------------------------------------------------------------------------------------


def test_the_trap_records_what_cuda_would_refuse_and_nothing_else():
    with device_trap() as trap:
        x = torch.ones(2, 3, device=ACCELERATOR)
        assert isinstance(x, AcceleratorTensor) and x.device == ACCELERATOR
        y = x * 2 + torch.zeros(2, 3, device=x.device) + torch.tensor(1.0)  # same device, and a 0-dim CPU scalar
        y[[0, 1]] = torch.tensor([[1.0, 2, 3], [4, 5, 6]]).to(x.device)  # list index, moved values
        y[torch.tensor([0])] = 1.0  # CPU index tensor and a scalar, as CUDA allows
        w = torch.tensor([0.5, 0.5, 0.5], device=x.device)  # built from data on the device
        z = (y * w).cpu()
        assert type(z) is torch.Tensor and torch.equal(z, torch.tensor([[0.5, 0.5, 0.5], [2, 2.5, 3]]))
        with pytest.raises(TypeError):
            y.numpy()  # as for a CUDA tensor
        assert trap.faults == []
        _ = y + torch.randn(2, 3)  # a tensor made without device=
        _ = torch.cat([y, torch.from_numpy(np.ones((1, 3), np.float32))])  # numpy data never moved
        _ = torch.randn(2, generator=torch.Generator("cpu"), device=ACCELERATOR)  # CPU generator, device noise
        y[torch.tensor([0])] = torch.ones(1, 3)  # CPU values written by index
    assert len(trap.faults) == 4, [str(f) for f in trap.faults]
    assert "test_device_audit.py" in trap.faults[0].where and "torch.randn(2, 3)" in trap.faults[0].where
    with pytest.raises(RuntimeError, match="different devices"):
        with device_trap(strict=True):
            torch.ones(2, device=ACCELERATOR) + torch.ones(2)


def test_a_model_on_the_stand_in_device_computes_the_cpu_values(tiny_model_dir):
    pipe = load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe
    control = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(0))
    options = SamplerOptions(steps=2, batch_size=2, control_scales=[1.0], consistency="first+prev")

    def run():
        out = LockstepSampler(pipe, options, 2, H, W, controls=lambda p: [control[p]], prompt="a car").run()
        return out.cpu()

    ref = run()
    with device_trap() as trap:
        to_accelerator(pipe)
        assert pipe.unet.device == ACCELERATOR and isinstance(next(pipe.unet.parameters()), AcceleratorTensor)
        out = run()
    assert trap.faults == [], [str(f) for f in trap.faults]
    assert (out - ref).abs().max() < 1e-4  # attention runs in SDPA's math backend there


# ---------------------------------------------------------------------------------------------------------------
# The job runner on the stand-in accelerator
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    path = tmp_path_factory.mktemp("audit-passes")
    write_synthetic_pass_folder(path, frames=N, width=W, height=H, motion=(8.0, 0.0))
    return path


def _cache(base_pipe, on_accelerator: bool) -> PipelineCache:
    def loader(model, controlnets, loras, device="cpu", dtype="float32", config_dir=None, **kw):
        pipe = copy.deepcopy(base_pipe).to(getattr(torch, dtype))
        if on_accelerator:
            to_accelerator(pipe)
        return LoadedPipeline(pipe=pipe, control_kinds=[k for k, _ in controlnets], description=dtype)

    return PipelineCache(loader=loader)


def _settings(**kw) -> RenderSettings:
    base = dict(prompt="a wooden toy", steps=2, seed=5, model="tiny", dtype="float32",
                controlnets=[ControlNetUnit(kind="depth", model="tiny-depth")],
                consistency="first+prev", batch_size=2, overwrite=True)
    base.update(kw)
    return RenderSettings(**base)


def _frames(out):
    if not list(out.glob("*.png")):
        return None
    return np.stack([np.asarray(Image.open(p), dtype=np.float32) for p in sorted(out.glob("*.png"))])


def _audited(base_pipe, passes, out, *, anchors=None, cancel=None, progress=None, **kw):
    """Render on the stand-in accelerator; returns (faults, modules that ran on the device, frames)."""
    spec = JobSpec(passes, out, _settings(device="cuda", **kw), anchors=anchors)
    with device_trap() as trap:
        try:
            run_render(spec, pipelines=_cache(base_pipe, True), cancel=cancel, progress=progress)
        except JobCancelled:
            pass
    return [str(f) for f in trap.faults], trap.modules, _frames(out)


def _on_cpu(base_pipe, passes, out, **kw) -> np.ndarray:
    run_render(JobSpec(passes, out, _settings(device="cpu", **kw)), pipelines=_cache(base_pipe, False))
    return _frames(out)


FEATURES = {
    # name: (settings, modules that must have run on the device)
    "off": (dict(consistency="off"), {"engine/sampler.py", "engine/preview.py"}),
    "first, reference image": (dict(consistency="first", reference_image="look.png"), {"engine/attention.py"}),
    "first+prev, pixel deflicker, post deflicker, float16": (
        dict(deflicker_steps=[0, 1], deflicker_window=2, post_deflicker=True, dtype="float16"),
        {"engine/attention.py", "deflicker/hook.py", "deflicker/sequence.py"}),
    "window, latent deflicker": (
        dict(consistency="window", window_size=2, window_stride=1, deflicker_steps=[0, 1], deflicker_space="latent"),
        {"deflicker/hook.py", "deflicker/sequence.py"}),
    "keyframes, float16": (dict(consistency="keyframes", keyframe_block=2, dtype="float16"),
                           {"engine/keyframes.py", "engine/tokenflow_attention.py"}),
    "keyframes img2img (inversion, plug-and-play)": (
        dict(consistency="keyframes", keyframe_block=2, img2img_strength=0.5, inversion_steps=2),
        {"engine/inversion.py", "engine/pnp.py"}),
    "euler_a, fixed noise (per-frame generators)": (dict(scheduler="euler_a", fixed_noise=True), set()),
    "tcd": (dict(scheduler="tcd", guidance_scale=1.5), set()),
    "memory options (CPU offload, attention and VAE slicing, VAE tiling), pixel deflicker": (
        dict(cpu_offload=True, attention_slice=16, vae_slicing=True, vae_tiling=True, deflicker_steps=[1]),
        {"engine/memory.py", "deflicker/hook.py"}),
    "batch size 0 (from a budget)": (dict(batch_size=0, vram_budget=8.0), {"engine/sampler.py"}),
}
# Not audited: the motion module. Its UNet skeleton is built with accelerate's init_empty_weights on the real meta
# device, which is the stand-in device here, so the trap cannot tell the skeleton from the model (tests of the
# motion module run on the CPU, and scripts/gpu_check.sh renders with it on CUDA).


@pytest.mark.parametrize("feature", list(FEATURES))
def test_the_engine_leaves_no_tensor_on_the_wrong_device(base_pipe, passes, tmp_path, feature):
    settings, must_run = FEATURES[feature]
    if "reference_image" in settings:
        look = tmp_path / settings["reference_image"]
        Image.fromarray((np.random.RandomState(1).rand(H, W, 3) * 255).astype(np.uint8)).save(look)
        settings = {**settings, "reference_image": str(look)}
    faults, modules, frames = _audited(base_pipe, passes, tmp_path / "acc", **settings)
    assert faults == [], "\n".join(faults)
    assert must_run <= modules, f"not run on the device: {must_run - modules}"
    if feature.startswith("first+prev"):  # the stand-in computes what the CPU computes
        ref = _on_cpu(base_pipe, passes, tmp_path / "cpu", **settings)
        assert frames.shape == (N, H, W, 3) and np.abs(frames - ref).max() <= 2  # 8-bit levels; SDPA math vs fused


def test_anchors_on_the_accelerator(base_pipe, passes, tmp_path):
    from neurender.farm.anchors import compute_anchors

    folder = tmp_path / "anchors"
    with device_trap() as trap:
        compute_anchors(passes, folder, _settings(device="cuda"), count=2, pipelines=_cache(base_pipe, True))
    assert [str(f) for f in trap.faults] == []
    faults, modules, _ = _audited(base_pipe, passes, tmp_path / "acc", anchors=folder, frames="2-3")
    assert faults == [], "\n".join(faults)
    assert "farm/anchors.py" in trap.modules


def test_resume_from_checkpoint_on_the_accelerator(base_pipe, passes, tmp_path):
    token = CancelToken()

    def cancel_after_one(p):
        if p.phase == "denoise" and p.step == 1:
            token.cancel()

    out = tmp_path / "acc"
    faults, modules, _ = _audited(base_pipe, passes, out, steps=3, cancel=token, progress=cancel_after_one)
    assert faults == [], "\n".join(faults)
    assert "engine/checkpoint.py" in modules
    state = torch.load(out / ".neurender" / "state.pt", weights_only=True)
    assert state["latents"].device.type == "cpu" and int(state["step"]) == 0  # saved off the device
    faults, modules, resumed = _audited(base_pipe, passes, out, steps=3, overwrite=False)
    assert faults == [], "\n".join(faults)
    assert resumed.shape == (N, H, W, 3)  # (that resuming is exact: test_precision.py, test_runner.py)


def _plant_cpu_noise(monkeypatch):
    import neurender.engine.sampler as sampler_module

    def planted(generator, frames, shape, fixed, device, dtype):
        return torch.randn((frames, *shape), generator=generator, dtype=dtype)  # no device=: the CPU

    monkeypatch.setattr(sampler_module, "initial_latents", planted)
    return dict(consistency="off"), "neurender/engine/sampler.py"


def _plant_cpu_deflicker_plan(monkeypatch):
    from neurender.deflicker import robust

    def planted(self, device, dtype):  # the device is forgotten: the plan's grids and weights stay on the CPU
        return robust.PairGroup(self.offset, self.start, self.grids.to(dtype=dtype), self.weights.to(dtype=dtype))

    monkeypatch.setattr(robust.PairGroup, "to", planted)
    return dict(deflicker_steps=[0], deflicker_space="latent"), "neurender/deflicker/"


def test_the_trap_catches_a_checkpoint_restored_onto_the_cpu(base_pipe, passes, tmp_path, monkeypatch):
    """Resume with the scheduler's saved state (DPM++ 2M's previous model outputs) left on the CPU, as a restore
    without the device would leave it: recorded in the scheduler step of the resumed run."""
    import neurender.engine.sampler as sampler_module

    token = CancelToken()

    def cancel_after_two(p):
        if p.phase == "denoise" and p.step == 2:
            token.cancel()

    out = tmp_path / "acc"
    faults, _, _ = _audited(base_pipe, passes, out, steps=4, cancel=token, progress=cancel_after_two)
    assert faults == []
    real = sampler_module.restore_scheduler
    monkeypatch.setattr(sampler_module, "restore_scheduler", lambda s, state, device: real(s, state, "cpu"))
    faults, _, _ = _audited(base_pipe, passes, out, steps=4, overwrite=False)
    assert faults, "the scheduler state restored onto the CPU went unnoticed"
    assert any("engine/sampler.py" in f and "scheduler.step" in f for f in faults), faults


@pytest.mark.parametrize("plant", [_plant_cpu_noise, _plant_cpu_deflicker_plan], ids=["noise", "deflicker-plan"])
def test_the_trap_catches_a_planted_fault(base_pipe, passes, tmp_path, monkeypatch, plant):
    """A ``torch.randn`` without ``device=`` in the initial noise, or a deflicker plan never moved to the device, is
    found and its source line named (the same run without the plant records nothing: the tests above)."""
    settings, where = plant(monkeypatch)
    faults, _, _ = _audited(base_pipe, passes, tmp_path / "acc", **settings)
    assert faults, "the planted CPU tensor went unnoticed"
    assert any(where in f for f in faults), faults
