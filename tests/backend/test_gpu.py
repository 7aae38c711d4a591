"""Checks that need a CUDA GPU (``-m gpu``; skipped without one). ``scripts/gpu_check.sh`` runs them.

No GPU has run them yet (none was lent to this project). So that they are not dead code until one does, each check
is a function of the device, and ``test_the_gpu_checks_run_on_the_cpu`` runs the same functions on the CPU with
the tiny model (the memory bound is asserted on CUDA only).

* float16 on CUDA vs float32 on the CPU, every consistency mode plus the in-iteration deflicker, through the job
  runner: the tolerance of tests/backend/test_precision.py for float16 (0.01 relative L2 of the final latents),
  doubled for CUDA's own kernels (TF32 convolutions, fused attention);
* SD1.5 at 512x512, 16 frames, first+prev with the memory options (--vae-slicing --cpu-offload, batch size
  chosen for an 8 GiB budget): peak VRAM (torch.cuda.max_memory_allocated) under 8 GiB;
* the batch size chosen from the card's free memory (--batch-size 0) renders;
* every mode runs with SDPA restricted to CUDA's flash and memory-efficient kernels (no fallback to the full
  attention matrix; the CPU flash kernel version is in test_memory_options.py).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from neurender.contract import ControlNetUnit, RenderSettings
from neurender.engine.sampler import LockstepSampler
from neurender.models.cache import PipelineCache
from neurender.models.loading import LoadedPipeline, load_pipeline
from neurender.runner import JobSpec, run_render
from support.synthetic_passes import write_synthetic_pass_folder

HAS_CUDA = torch.cuda.is_available()
GiB = 2**30
MODES = {
    "off": dict(consistency="off"),
    "first": dict(consistency="first"),
    "first+prev": dict(consistency="first+prev"),
    "window": dict(consistency="window", window_size=2, window_stride=1),
    "keyframes": dict(consistency="keyframes", keyframe_block=2),
    "first+prev+deflicker": dict(consistency="first+prev", deflicker_steps=[0, 2], deflicker_window=2),
}


def _latents(pipe, passes, out, **kw) -> torch.Tensor:
    seen = {}
    run = LockstepSampler.run

    def keep(self):
        seen["latents"] = run(self)
        return seen["latents"]

    def loader(model, controlnets, loras, device="cpu", dtype="float32", config_dir=None, **kw):
        return LoadedPipeline(pipe=pipe, control_kinds=["depth"], description="gpu test")

    settings = dict(prompt="a wooden toy", steps=4, seed=5, model="m", controlnets=[ControlNetUnit(kind="depth",
                    model="d")], batch_size=2, overwrite=True, fixed_noise=False)
    settings.update(kw)
    LockstepSampler.run = keep
    try:
        run_render(JobSpec(passes, out, RenderSettings(**settings)), pipelines=PipelineCache(loader=loader))
    finally:
        LockstepSampler.run = run
    return seen["latents"].float().cpu()


def check_float16_matches_float32(tiny_model_dir, tmp_path, device: str, modes=tuple(MODES)) -> dict[str, float]:
    """Relative L2 error of each mode's final latents, float16 on ``device`` vs float32 on the CPU."""
    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=4, width=64, height=48, motion=(8.0, 0.0))
    base = load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe
    low = copy.deepcopy(base).to(device, torch.float16)
    errors = {}
    for name in modes:
        mode = MODES[name]
        ref = _latents(base, passes, tmp_path / f"{name}-ref", **mode)
        got = _latents(low, passes, tmp_path / f"{name}-low", device=device, dtype="float16", **mode)
        assert torch.isfinite(got).all()
        errors[name] = float((got - ref).norm() / ref.norm())
    return errors


def check_sd15_memory(tmp_path, device: str, size: str = "sd15", frames: int = 16, res=(512, 512)) -> dict:
    """Peak memory of a first+prev render with the memory options and an 8 GiB budget (SD1.5 size on CUDA)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import gpu_check

    if size == "sd15":
        pipe, _ = gpu_check.build_sd15(device, torch.float16)
    else:
        pipe, _ = gpu_check.build_tiny(tmp_path, device, "float16")
    passes = tmp_path / "passes-mem"
    write_synthetic_pass_folder(passes, frames=frames, width=res[0], height=res[1])
    chosen = []
    from neurender.engine import vram

    real = vram.choose_batch_size
    vram.choose_batch_size = lambda free, plan: chosen.append(real(free, plan)) or chosen[-1]
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        latents = _latents(pipe, passes, tmp_path / "mem", steps=2, consistency="first+prev", width=res[0],
                           height=res[1], device=device, dtype="float16", vae_slicing=True, cpu_offload=True,
                           batch_size=0, vram_budget=8.0)
    finally:
        vram.choose_batch_size = real
    peak = torch.cuda.max_memory_allocated() / GiB if device.startswith("cuda") else None
    return {"peak_gib": peak, "batch": chosen[0], "finite": bool(torch.isfinite(latents).all())}


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_float16_on_cuda_matches_float32_in_every_mode(tiny_model_dir, tmp_path):
    errors = check_float16_matches_float32(tiny_model_dir, tmp_path, "cuda")
    assert max(errors.values()) < 0.02, errors


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_sd15_512_16_frames_fit_8_gib_with_the_memory_options(tmp_path):
    result = check_sd15_memory(tmp_path, "cuda")
    assert result["finite"] and result["batch"] >= 1
    assert result["peak_gib"] < 8.0, result


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_batch_size_from_the_free_vram_renders(tiny_model_dir, tmp_path):
    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=3, width=64, height=48)
    pipe = load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])], device="cuda",
                         dtype="float16").pipe
    latents = _latents(pipe, passes, tmp_path / "auto", batch_size=0, device="cuda", dtype="float16")
    assert latents.shape[0] == 3 and torch.isfinite(latents).all()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cross_frame_attention_runs_on_cudas_fused_kernels_alone(tiny_model_dir, tmp_path):
    """float16 on CUDA with SDPA restricted to flash + memory-efficient attention: every mode finds a kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    passes = tmp_path / "passes"
    write_synthetic_pass_folder(passes, frames=4, width=64, height=48, motion=(8.0, 0.0))
    pipe = load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])], device="cuda",
                         dtype="float16").pipe
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        for name, mode in MODES.items():
            latents = _latents(pipe, passes, tmp_path / name, device="cuda", dtype="float16", **mode)
            assert torch.isfinite(latents).all(), name


def test_the_gpu_checks_run_on_the_cpu(tiny_model_dir, tmp_path):
    """The bodies of the GPU checks above, on the CPU with the tiny model, so they are known to run."""
    # two modes (float16 kernels are slow on the CPU; test_precision.py runs every mode there)
    errors = check_float16_matches_float32(tiny_model_dir, tmp_path, "cpu", modes=("keyframes", "first+prev+deflicker"))
    assert len(errors) == 2 and max(errors.values()) < 0.02, errors  # CPU float16: ~0.002-0.006
    result = check_sd15_memory(tmp_path, "cpu", size="tiny", frames=3, res=(64, 48))
    assert result["finite"] and result["batch"] == 3 and result["peak_gib"] is None
    assert np.isfinite(list(errors.values())).all()
