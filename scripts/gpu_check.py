"""The prepared GPU check (issue 15): one run on a CUDA machine prints what the project needs to know about it.

    scripts/gpu_check.sh            # a CUDA machine: SD1.5-size random model, 16 frames 512x512, 20 steps, float16
    scripts/gpu_check.sh --dry-run  # any machine, on the CPU: the tiny model, 3 frames 64x48, 2 steps (CI runs it)

In one process, measured the same way one after the other (models built once, on the device, with random
weights: no pretrained weights exist here), it prints side by side:
  * diffusers' StableDiffusionControlNetPipeline called once per frame (the baseline) in s/frame,
  * the job runner (`neurender render`) with consistency off / first+prev / window / keyframes / first+prev with the
    in-iteration deflicker at 4 steps / the AnimateDiff motion module / first+prev with the memory options
    (--vae-slicing --cpu-offload), each in s/frame, its ratio to the baseline and its peak VRAM
    (torch.cuda.max_memory_allocated: weights + activations; on the CPU "-");
  * the float16 vs float32 difference of a first+prev render of 2 frames (same weights);
  * the batch size `--batch-size 0` would choose here (engine/vram.py) and the card's memory;
and then runs the test suite's GPU tests (`pytest -m gpu`). Timings exclude model building and control images
(from the first denoising step to the last frame written, as scripts/bench_core.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "backend"))  # the synthetic pass-folder writer lives with the tests

PROMPT = "a stone statue in a garden"
GiB = 2**30


def build_sd15(device: str, dtype):
    """SD1.5's exact architecture (860M UNet, 361M ControlNet, VAE, CLIP ViT-L text encoder), random weights, made
    directly on ``device`` (seconds on a GPU, no disk)."""
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, PNDMScheduler, StableDiffusionControlNetPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from neurender.models.random_models import _make_control_visible
    from neurender.models.sd15_config import (SD15_SCHEDULER, tokenizer_data_dir, write_sd15_config,
                                              write_sd15_controlnet_config)

    work = Path(tempfile.mkdtemp(prefix="gpu-check-cfg-"))
    cfg, cn_cfg = write_sd15_config(work / "sd15"), write_sd15_controlnet_config(work / "cn")
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder", local_files_only=True))
        controlnet = ControlNetModel.from_config(ControlNetModel.load_config(cn_cfg))
        _make_control_visible(controlnet)
    pipe = StableDiffusionControlNetPipeline(
        vae=vae, text_encoder=text, unet=unet, controlnet=controlnet, scheduler=PNDMScheduler.from_config(SD15_SCHEDULER),
        tokenizer=CLIPTokenizer.from_pretrained(tokenizer_data_dir(), local_files_only=True, model_max_length=77),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg / "unet"


def build_tiny(work: Path, device: str, dtype: str):
    from neurender.models.loading import load_pipeline
    from neurender.models.random_models import build_random_model

    paths = build_random_model(work / "tiny", size="tiny", control_kinds=("depth",))
    return load_pipeline(paths.model, [("depth", paths.controlnets["depth"])], device=device, dtype=dtype).pipe, \
        paths.model / "unet"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class Meter:
    """Peak VRAM of a block (CUDA), or nothing on the CPU."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __enter__(self):
        if self.cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        self.peak = None
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / GiB


def plain_row(pipe, controls, args) -> float:
    """diffusers' pipeline, one call per frame, DPM++ 2M as the neurender rows."""
    import torch

    from neurender.engine.schedulers import make_scheduler

    original = pipe.scheduler
    pipe.scheduler = make_scheduler("dpmpp_2m", original.config)
    try:
        pipe(PROMPT, image=controls[0], height=args.height, width=args.width, num_inference_steps=1, output_type="np")
        _sync(args.device)
        t0 = time.perf_counter()
        for c in controls:
            pipe(PROMPT, image=c, height=args.height, width=args.width, num_inference_steps=args.steps,
                 generator=torch.Generator("cpu").manual_seed(0), output_type="np")
        _sync(args.device)
        return (time.perf_counter() - t0) / len(controls)
    finally:
        pipe.scheduler = original


def render_row(pipes: dict, passes: Path, out: Path, args, frames: int, **extra) -> tuple[float, object]:
    """The job runner on the pass folder; returns (s/frame, final latents)."""
    from neurender.contract import ControlNetUnit, RenderSettings
    from neurender.engine.sampler import LockstepSampler
    from neurender.models.cache import PipelineCache
    from neurender.models.loading import LoadedPipeline
    from neurender.runner import JobSpec, run_render

    def loader(model, controlnets, loras, device="cpu", dtype="float16", config_dir=None, **kw):
        return LoadedPipeline(pipe=pipes[dtype], control_kinds=["depth"], description=f"gpu-check {dtype}")

    fields = dict(prompt=PROMPT, steps=args.steps, model="gpu-check", width=args.width, height=args.height,
                  controlnets=[ControlNetUnit(kind="depth", model="gpu-check-depth")], consistency="first+prev",
                  batch_size=4, scheduler="dpmpp_2m", device=args.device, dtype=args.dtype, overwrite=True,
                  frames=f"1-{frames}")
    fields.update(extra)
    marks, seen = {}, {}
    run = LockstepSampler.run

    def keep(self):
        seen["latents"] = run(self)
        return seen["latents"]

    def progress(p):
        if p.phase == "denoise" and "start" not in marks:
            _sync(args.device)
            marks["start"] = time.perf_counter()
        if p.phase == "done":
            _sync(args.device)
            marks["end"] = time.perf_counter()

    LockstepSampler.run = keep
    try:
        run_render(JobSpec(passes, out, RenderSettings(**fields)), pipelines=PipelineCache(loader=loader),
                   progress=progress)
    finally:
        LockstepSampler.run = run
    return (marks["end"] - marks["start"]) / frames, seen["latents"]


def gpu_tests(args) -> int:
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    cmd += [str(REPO / "tests" / "backend" / "test_gpu.py")] if args.dry_run else [str(REPO / "tests" / "backend")]
    print(f"\n$ {' '.join(cmd[2:])}", flush=True)
    return subprocess.run(cmd, cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1")).returncode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the CPU, the tiny model, a few frames (CI)")
    ap.add_argument("--frames", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--size", help="WIDTHxHEIGHT")
    ap.add_argument("--no-tests", action="store_true", help="skip `pytest -m gpu` at the end")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    import numpy as np
    import torch
    from PIL import Image

    from neurender.engine.vram import MemoryPlan, choose_batch_size, free_memory_bytes
    from neurender.models.motion import random_motion_adapter
    from support.synthetic_passes import write_synthetic_pass_folder

    if not args.dry_run and not torch.cuda.is_available():
        print(f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda}); "
              "run with --dry-run for the CPU rehearsal")
        return 2
    args.device = "cpu" if args.dry_run else "cuda"
    args.dtype = "float32" if args.dry_run else "float16"  # float16 kernels on the CPU are slow (and not the point)
    args.frames = args.frames or (3 if args.dry_run else 16)
    args.steps = args.steps or (2 if args.dry_run else 20)
    args.width, args.height = (int(v) for v in (args.size or ("64x48" if args.dry_run else "512x512")).split("x"))
    if args.dry_run:
        torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="neurender-gpu-check-"))
    if args.device == "cuda":
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        print(f"GPU: {name}, {total / GiB:.1f} GiB ({free / GiB:.1f} free), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        print(f"DRY RUN on the CPU (torch {torch.__version__}): the tiny random model; the numbers say nothing "
              "about a GPU")
    print(f"{args.frames} frames {args.width}x{args.height}, {args.steps} steps, {args.dtype}, DPM++ 2M, CFG 7.5, "
          "one depth ControlNet, random weights", flush=True)

    t = time.perf_counter()
    if args.dry_run:
        pipe32, unet_dir = build_tiny(work, "cpu", "float32")
    else:
        pipe32, unet_dir = build_sd15("cuda", torch.float32)
    pipe16 = copy.deepcopy(pipe32).to(torch.float16)
    pipes = {"float16": pipe16, "float32": pipe32}
    main_pipe = pipes[args.dtype]
    print(f"model built in {time.perf_counter() - t:.1f} s", flush=True)
    passes = work / "passes"
    write_synthetic_pass_folder(passes, frames=args.frames, width=args.width, height=args.height)

    # float16 vs float32 on 2 frames (same weights), then the float32 copy is dropped
    _, lat16 = render_row(pipes, passes, work / "p16", args, 2, dtype="float16")
    _, lat32 = render_row(pipes, passes, work / "p32", args, 2, dtype="float32")
    rel = float((lat16.float() - lat32.float()).norm() / lat32.float().norm())
    f16 = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in sorted((work / "p16").glob("*.png"))])
    f32 = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in sorted((work / "p32").glob("*.png"))])
    fp_line = (f"float16 vs float32, first+prev, 2 frames: latents relative L2 {rel:.4f}; frames mean |diff| "
               f"{np.abs(f16 - f32).mean():.4f}, max {np.abs(f16 - f32).max():.3f} (of 1)")
    if args.device == "cuda":  # the rows run in float16: the float32 copy goes
        del pipes["float32"], pipe32
        torch.cuda.empty_cache()

    rng = np.random.RandomState(0)
    controls = [Image.fromarray((rng.rand(args.height, args.width, 3) * 255).astype("uint8"))
                for _ in range(args.frames)]
    deflicker_steps = sorted({round(args.steps * k / 5) for k in (1, 2, 3, 4)} - {args.steps})
    adapter = work / "motion-adapter"
    from diffusers import UNet2DConditionModel

    random_motion_adapter(dict(UNet2DConditionModel.load_config(unet_dir)), seed=0).to(main_pipe.unet.dtype) \
        .save_pretrained(adapter)
    rows = [
        ("neurender off", dict(consistency="off")),
        ("neurender first+prev", dict(consistency="first+prev")),
        ("neurender window (8, stride 4)", dict(consistency="window", window_size=8, window_stride=4)),
        ("neurender keyframes (block 8)", dict(consistency="keyframes", keyframe_block=8)),
        (f"first+prev + deflicker at {len(deflicker_steps)} steps", dict(deflicker_steps=deflicker_steps)),
        (f"motion module (context {min(args.frames, 16)})",
         dict(consistency="off", motion_module=str(adapter), context_length=max(2, min(args.frames, 16)),
              context_overlap=0)),
        ("first+prev --vae-slicing --cpu-offload", dict(vae_slicing=True, cpu_offload=True)),
    ]
    render_row(pipes, passes, work / "warmup", args, 2, steps=1)  # kernels, cuDNN autotuning
    table = []
    with Meter(args.device) as m:
        base = plain_row(main_pipe, controls, args)
    table.append(("diffusers per-frame ControlNet pipeline", base, m.peak))
    for i, (label, extra) in enumerate(rows):
        try:
            with Meter(args.device) as m:
                spf, _ = render_row(pipes, passes, work / f"row{i}", args, args.frames, **extra)
            table.append((label, spf, m.peak))
        except Exception as exc:  # noqa: BLE001 - one failing row must not hide the others
            table.append((label, None, None))
            print(f"  {label}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"  {label}: done", flush=True)

    print(f"\n{'row':<46} {'s/frame':>8} {'x plain':>8} {'peak VRAM GiB':>14}")
    for label, spf, peak in table:
        s = f"{spf:8.3f} {spf / base:8.2f}" if spf is not None else f"{'FAILED':>8} {'':>8}"
        print(f"{label:<46} {s} {(f'{peak:14.2f}' if peak is not None else f'{chr(45):>14}')}")
    print(fp_line)
    free = free_memory_bytes(args.device)
    plan = MemoryPlan(width=args.width, height=args.height, frames=args.frames, dtype=args.dtype,
                      fused_attention=True)
    print(f"--batch-size 0 here: {choose_batch_size(free, plan)} frames per call ({free / GiB:.1f} GiB free); "
          f"an 8 GB card: {choose_batch_size(8 * GiB, plan)}")
    print(json.dumps({"rows": [{"row": r, "s_per_frame": s, "peak_vram_gib": p} for r, s, p in table],
                      "fp16_vs_fp32_latents_rel_l2": rel, "device": args.device}))
    elapsed = time.perf_counter() - started
    print(f"check took {elapsed:.0f} s{'' if elapsed < 480 else ' (over the 8-minute target)'}", flush=True)
    failed = any(s is None for _, s, _ in table)
    if not args.no_tests:
        failed = gpu_tests(args) not in (0, 5) or failed  # 5: no GPU test selected/ran
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
