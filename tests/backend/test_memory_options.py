"""Memory options (engine/memory.py, engine/vram.py): the same frames with less memory, tested on the CPU.

Attention slicing, VAE slicing and model CPU offload must leave the result unchanged (float rounding only); VAE
tiling changes it a little (tiles see less context) and is bounded. Each test also shows that its option really
took effect (more attention calls, one frame per VAE call, tiled decode used, models moved between devices), so a
silently ignored option fails. The offload runs with the stand-in accelerator of ``support/device_trap.py``: the
models really move between the CPU and a second device, and no tensor is left behind on the wrong one.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from neurender.cli import build_parser, settings_from_args
from neurender.contract import ContractError, ControlNetUnit, RenderSettings
from neurender.engine import memory
from neurender.engine.sampler import LockstepSampler, SamplerOptions
from neurender.engine.vram import GiB, MemoryPlan, choose_batch_size, estimate_peak_bytes, fits
from neurender.models.cache import PipelineCache
from neurender.models.loading import LoadedPipeline, load_pipeline
from neurender.runner import JobSpec, run_render
from support.device_trap import ACCELERATOR, AcceleratorTensor, device_trap, to_accelerator
from support.synthetic_passes import write_synthetic_pass_folder

N, H, W = 4, 48, 64


@pytest.fixture(scope="module")
def base_pipe(tiny_model_dir):
    return load_pipeline(tiny_model_dir.model, [("depth", tiny_model_dir.controlnets["depth"])]).pipe


@pytest.fixture(scope="module")
def passes(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory-passes")
    write_synthetic_pass_folder(path, frames=N, width=W, height=H, motion=(8.0, 0.0))
    return path


def _cache(pipe) -> PipelineCache:
    def loader(model, controlnets, loras, device="cpu", dtype="float32", config_dir=None, **kw):
        return LoadedPipeline(pipe=pipe, control_kinds=[k for k, _ in controlnets], description=dtype)

    return PipelineCache(loader=loader)


def _render(pipe, passes, out, monkeypatch, **kw):
    """The job runner's final latents and decoded frames (0..1 floats, before 8-bit quantisation)."""
    seen = {}
    run, decode = LockstepSampler.run, LockstepSampler.decode

    def keep_latents(self):
        seen["latents"] = run(self)
        return seen["latents"]

    def keep_frames(self, latents):
        images = decode(self, latents)
        seen.setdefault("frames", []).append(images)
        return images

    monkeypatch.setattr(LockstepSampler, "run", keep_latents)
    monkeypatch.setattr(LockstepSampler, "decode", keep_frames)
    settings = dict(prompt="a wooden toy", steps=3, seed=5, model="tiny", batch_size=2, overwrite=True,
                    controlnets=[ControlNetUnit(kind="depth", model="tiny-depth")], consistency="first+prev",
                    fixed_noise=False)
    settings.update(kw)
    try:
        run_render(JobSpec(passes, out, RenderSettings(**settings)), pipelines=_cache(pipe))
    finally:
        monkeypatch.setattr(LockstepSampler, "run", run)
        monkeypatch.setattr(LockstepSampler, "decode", decode)
    return seen["latents"], np.concatenate(seen["frames"])


def _same(a, b) -> bool:
    """Equal up to float rounding (the latents reach ~10: 1e-5 of that)."""
    return float((a - b).abs().max()) <= 1e-5 * float(b.abs().max()) + 1e-6


def _count(monkeypatch, target, name):
    calls = []
    real = getattr(target, name)

    def spy(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(target, name, spy)
    return calls


# ---------------------------------------------------------------------------------------------------------------
# Attention slicing
# ---------------------------------------------------------------------------------------------------------------


def test_sliced_sdpa_equals_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 70, 16, generator=g) for _ in range(3))
    mask = torch.randn(2, 4, 70, 70, generator=g)
    whole = memory.sdpa(q, k, v, mask)
    with memory.attention_slicing([], 16):
        sliced = memory.sdpa(q, k, v, mask)
        broadcast = memory.sdpa(q, k, v, mask[:, :, :1])
    assert torch.allclose(sliced, whole, atol=1e-6)
    assert torch.allclose(broadcast, memory.sdpa(q, k, v, mask[:, :, :1]), atol=1e-6)
    assert memory._SLICE.get() == 0  # switched off again after the block


@pytest.mark.parametrize("mode", [dict(consistency="off"), dict(consistency="first+prev", reference_image="ref"),
                                  dict(consistency="window", window_size=3, window_stride=1),
                                  dict(consistency="keyframes", keyframe_block=2)],
                         ids=["off", "first+prev+reference", "window", "keyframes"])
def test_attention_slicing_gives_the_same_latents(base_pipe, passes, tmp_path, monkeypatch, mode):
    if "reference_image" in mode:
        from PIL import Image

        ref = tmp_path / "ref.png"
        Image.fromarray((np.random.RandomState(2).rand(H, W, 3) * 255).astype(np.uint8)).save(ref)
        mode = {**mode, "reference_image": str(ref)}
    whole, _ = _render(base_pipe, passes, tmp_path / "whole", monkeypatch, **mode)
    calls = _count(monkeypatch, memory.F, "scaled_dot_product_attention")
    sliced, _ = _render(base_pipe, passes, tmp_path / "sliced", monkeypatch, attention_slice=16, **mode)
    sliced_calls = len(calls)
    calls.clear()
    _render(base_pipe, passes, tmp_path / "again", monkeypatch, **mode)
    assert sliced_calls > 2 * len(calls)  # slicing really split the attention (48 tokens -> 3 slices per frame)
    assert _same(sliced, whole)


# ---------------------------------------------------------------------------------------------------------------
# VAE slicing and tiling, also inside the pixel deflicker hooks
# ---------------------------------------------------------------------------------------------------------------


def test_vae_slicing_gives_the_same_frames(base_pipe, passes, tmp_path, monkeypatch):
    options = dict(deflicker_steps=[0, 1], deflicker_window=2, post_deflicker=True)  # decode+encode in the hook
    whole_latents, whole = _render(base_pipe, passes, tmp_path / "whole", monkeypatch, **options)
    decodes = _count(monkeypatch, type(base_pipe.vae), "decode")
    encodes = _count(monkeypatch, type(base_pipe.vae), "encode")
    latents, frames = _render(base_pipe, passes, tmp_path / "sliced", monkeypatch, vae_slicing=True, **options)
    assert decodes and encodes
    assert {a[1].shape[0] for a in decodes} == {1} and {a[1].shape[0] for a in encodes} == {1}
    assert _same(latents, whole_latents)
    assert np.abs(frames - whole).max() < 1e-5


@pytest.fixture
def tile(base_pipe):
    """Sets the VAE's tile size (pixels) for a test; restores diffusers' default (the config's sample_size) after."""
    vae = base_pipe.vae
    saved = vae.tile_sample_min_size, vae.tile_latent_min_size

    def set_tile(pixels: int) -> None:
        vae.tile_sample_min_size, vae.tile_latent_min_size = pixels, pixels // 8

    yield set_tile
    vae.tile_sample_min_size, vae.tile_latent_min_size = saved


def test_vae_tiling_decodes_and_encodes_in_tiles_and_stays_close(base_pipe, tile, monkeypatch):
    """A 384x384 frame from 256 px tiles (4 tiles, 64 px overlap, blended linearly).

    The tiles normalise (GroupNorm) over their own area, so on this random VAE the error falls with the tile size:
    measured, relative to the distance between two unrelated frames: 0.47 with 64 px tiles, 0.24 with 128 px, 0.068
    with 256 px (encode: 0.61 / 0.28 / 0.095 of the latents' magnitude). SD's VAE tiles are 512 px."""
    tile(256)
    g = torch.Generator().manual_seed(0)
    latents, unrelated = torch.randn(2, 1, 4, 48, 48, generator=g) * 0.5
    plain = LockstepSampler(base_pipe, SamplerOptions(batch_size=2), 1, 384, 384)
    tiled = LockstepSampler(base_pipe, SamplerOptions(batch_size=2, vae_tiling=True), 1, 384, 384)
    decodes = _count(monkeypatch, type(base_pipe.vae), "tiled_decode")
    encodes = _count(monkeypatch, type(base_pipe.vae), "_tiled_encode")
    a, b, c = plain.decode_tensor(latents), tiled.decode_tensor(latents), plain.decode_tensor(unrelated)
    assert len(decodes) == 1 and not base_pipe.vae.use_tiling  # tiled inside the call only
    err = float((a - b).abs().mean() / (a - c).abs().mean())
    assert 0 < err < 0.15, err
    images = a.clamp(-1, 1)
    ea, eb = plain.encode(images), tiled.encode(images)
    assert len(encodes) == 1
    assert 0 < float((ea - eb).abs().mean() / ea.abs().mean()) < 0.2


def test_vae_tiling_applies_inside_the_pixel_deflicker_hook(base_pipe, passes, tmp_path, tile, monkeypatch):
    tile(32)  # smaller than the 48x64 frames
    encodes = _count(monkeypatch, type(base_pipe.vae), "_tiled_encode")  # only the hook encodes
    _render(base_pipe, passes, tmp_path / "tiled", monkeypatch, deflicker_steps=[0], vae_tiling=True)
    assert len(encodes) == 4  # the decoded x0 and its deflickered version, each in 2 chunks of 2 frames
    encodes.clear()
    _render(base_pipe, passes, tmp_path / "plain", monkeypatch, deflicker_steps=[0])
    assert not encodes


# ---------------------------------------------------------------------------------------------------------------
# Model CPU offload
# ---------------------------------------------------------------------------------------------------------------


def _sample(pipe, **opts):
    control = torch.rand(N, 3, H, W, generator=torch.Generator().manual_seed(1))
    options = SamplerOptions(steps=2, batch_size=2, control_scales=[1.0], consistency="first+prev", **opts)
    sampler = LockstepSampler(pipe, options, N, H, W, controls=lambda p: [control[p]], prompt="a red car")
    latents = sampler.run()
    return latents, sampler.decode_tensor(latents)


def test_model_cpu_offload_moves_each_model_to_the_device_only_while_it_runs(base_pipe):
    pipe = copy.deepcopy(base_pipe)
    ref_latents, ref_images = _sample(pipe)
    on_device = []  # which models hold accelerator weights whenever a model runs

    def where(module, args):
        on_device.append({name for name in ("text_encoder", "unet", "controlnet", "vae")
                          if isinstance(next(getattr(pipe, name).parameters()), AcceleratorTensor)})

    with device_trap() as trap:
        to_accelerator(pipe)
        with memory.model_offload(pipe, ACCELERATOR) as offload:
            assert memory.execution_device(pipe) == ACCELERATOR
            assert not any(isinstance(p, AcceleratorTensor) for p in pipe.unet.parameters())  # all wait on the CPU
            # observers after the offload's own hooks, so they see the models as they run
            handles = [getattr(pipe, n).register_forward_pre_hook(where) for n in ("text_encoder", "unet", "controlnet")]
            handles.append(pipe.vae.decoder.register_forward_pre_hook(where))
            latents, images = _sample(pipe)
            latents, images = latents.cpu(), images.cpu()
            for h in handles:
                h.remove()
        assert isinstance(next(pipe.unet.parameters()), AcceleratorTensor)  # all back on the device after the block
        assert isinstance(next(pipe.vae.parameters()), AcceleratorTensor)
    assert trap.faults == [], [str(f) for f in trap.faults]
    # the text encoder alone, then the UNet with its ControlNet, then the VAE alone
    assert on_device[0] == {"text_encoder"}
    assert {"unet", "controlnet"} in on_device and on_device[-1] == {"vae"}
    assert all(len(s) <= 2 for s in on_device) and offload.moves == 3
    assert pipe._neurender_offload is None and all(not m._forward_pre_hooks for m in (pipe.unet, pipe.vae))
    assert (latents - ref_latents).abs().max() < 1e-4 and (images - ref_images).abs().max() < 1e-3


def test_cpu_offload_on_the_cpu_is_a_no_op_with_equal_output(base_pipe, passes, tmp_path, monkeypatch):
    pipe = copy.deepcopy(base_pipe)
    ref_latents, ref = _render(pipe, passes, tmp_path / "ref", monkeypatch, deflicker_steps=[1])
    latents, frames = _render(pipe, passes, tmp_path / "offload", monkeypatch, deflicker_steps=[1], cpu_offload=True)
    assert torch.equal(latents, ref_latents) and np.array_equal(frames, ref)
    assert not pipe.unet._forward_pre_hooks and getattr(pipe, "_neurender_offload", None) is None


# ---------------------------------------------------------------------------------------------------------------
# Batch size from the memory there is
# ---------------------------------------------------------------------------------------------------------------


def test_batch_size_is_the_largest_that_fits():
    plan = MemoryPlan(width=512, height=512, frames=16, consistency="first+prev", dtype="float16")
    for gib in (4, 6, 8, 12, 24, 80):
        free = gib * GiB
        b = choose_batch_size(free, plan)
        assert 1 <= b <= 16
        if b < 16:
            assert fits(free, b, plan) or b == 1
            assert not fits(free, b + 1, plan)
    sizes = [choose_batch_size(g * GiB, plan) for g in (4, 6, 8, 12, 24, 80)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] == 16  # more memory, larger batches, up to the shot
    assert choose_batch_size(8 * GiB, plan) >= 2  # an 8 GB card renders SD1.5 512x512 in fp16 with batches
    assert choose_batch_size(1 * GiB, plan) == 1  # never 0


def test_batch_size_depends_on_resolution_mode_precision_and_options():
    base = MemoryPlan(width=512, height=512, frames=32, dtype="float16")
    free = 12 * GiB
    b = choose_batch_size(free, base)
    assert choose_batch_size(free, MemoryPlan(width=768, height=768, frames=32, dtype="float16")) < b
    assert choose_batch_size(free, MemoryPlan(width=512, height=512, frames=3, dtype="float16")) <= 3
    math = MemoryPlan(width=512, height=512, frames=32, dtype="float32", fused_attention=False)
    assert choose_batch_size(free, math) < b  # float32 and a full attention matrix
    sliced = MemoryPlan(width=512, height=512, frames=32, dtype="float32", fused_attention=False, attention_slice=1024)
    assert choose_batch_size(free, sliced) > choose_batch_size(free, math)
    offload = MemoryPlan(width=512, height=512, frames=32, dtype="float16", cpu_offload=True)
    assert estimate_peak_bytes(1, base) - estimate_peak_bytes(1, offload) > 0.3 * GiB  # VAE + text encoder wait
    no_cfg = dict(width=512, height=512, frames=32, dtype="float16", cfg=False, controlnets=0)
    assert estimate_peak_bytes(8, MemoryPlan(**no_cfg, vae_slicing=True)) < estimate_peak_bytes(8, MemoryPlan(**no_cfg))
    big = {**no_cfg, "width": 1024, "height": 1024}
    assert estimate_peak_bytes(1, MemoryPlan(**big, vae_tiling=True)) < estimate_peak_bytes(1, MemoryPlan(**big))
    window = MemoryPlan(consistency="window", window_size=6, frames=16)
    assert choose_batch_size(free, window) == 6  # windows are evaluated whole


def test_runner_chooses_the_batch_from_the_budget(base_pipe, passes, tmp_path, monkeypatch):
    from neurender.engine import vram

    seen = []
    real = vram.choose_batch_size
    monkeypatch.setattr(vram, "choose_batch_size", lambda free, plan: seen.append((free, plan)) or real(free, plan))
    ref, _ = _render(base_pipe, passes, tmp_path / "ref", monkeypatch, batch_size=4)
    auto, _ = _render(base_pipe, passes, tmp_path / "auto", monkeypatch, batch_size=0, vram_budget=64.0)
    assert seen and seen[0][0] == 64 * GiB and seen[0][1].width == W and seen[0][1].frames == N
    assert _same(auto, ref)  # 64 GiB: the whole shot in one call, as batch_size=4
    seen.clear()
    _render(base_pipe, passes, tmp_path / "ram", monkeypatch, batch_size=0)  # no budget: the CPU's available RAM
    assert seen and 0 < seen[0][0] == pytest.approx(vram.available_ram_bytes(), rel=0.5)


def test_memory_settings_and_flags():
    args = build_parser().parse_args(["render", "P", "--out", "O", "--attention-slice", "1024", "--vae-slicing",
                                      "--vae-tiling", "--cpu-offload", "--vram-budget", "7.5", "--batch-size", "0"])
    s = settings_from_args(args)
    assert (s.attention_slice, s.vae_slicing, s.vae_tiling, s.cpu_offload, s.vram_budget, s.batch_size) == (
        1024, True, True, True, 7.5, 0)
    assert RenderSettings.from_dict(s.to_dict()) == s
    for bad in (dict(vram_budget=-1.0), dict(attention_slice=-2), dict(batch_size=-1), dict(vram_budget=float("nan"))):
        with pytest.raises(ContractError):
            RenderSettings(**bad).check()


# ---------------------------------------------------------------------------------------------------------------
# Fused SDPA kernels (flash / memory-efficient attention) through our processors
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["first+prev", "window", "keyframes"])
def test_cross_frame_attention_runs_on_the_fused_kernel_alone(base_pipe, passes, tmp_path, monkeypatch, mode):
    """With SDPA restricted to its flash kernel (CPU flash attention here), every attention call of the cross-frame /
    keyframe processors must find a kernel (e.g. no q/k/v head sizes it refuses) and give the same latents. CPU flash
    accepts masks, CUDA's does not: tests/backend/test_gpu.py repeats this on CUDA with the flash and memory-efficient
    kernels only, so on a GPU the processors never fall back to the full attention matrix."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    extra = dict(window_size=3, window_stride=1) if mode == "window" else {}
    calls = _count(monkeypatch, memory.F, "scaled_dot_product_attention")
    ref, _ = _render(base_pipe, passes, tmp_path / "any", monkeypatch, consistency=mode, **extra)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        fused, _ = _render(base_pipe, passes, tmp_path / "flash", monkeypatch, consistency=mode, **extra)
    assert calls and _same(fused, ref)
