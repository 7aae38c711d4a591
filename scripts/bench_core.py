"""Core benchmark: neurender's lockstep renderer vs diffusers' plain per-frame ControlNet pipeline.

Prints, side by side and measured in the same run (the machine is noisy), for each model size:
  * seconds per frame of diffusers' StableDiffusionControlNetPipeline called once per frame (the baseline),
  * seconds per frame of `neurender render` (the job runner) for every consistency mode, and the ratio to baseline,
  * peak RSS of `neurender render` for a short and a long shot (memory must not grow with the number of frames).
Each measurement runs in its own subprocess so peak RSS is that measurement's own.

Targets (issue #2): `first+prev` at most 1.15x the plain pipeline per frame; peak RSS of 16 vs 64 frames within 10%.

    .venv/bin/python scripts/bench_core.py                 # tiny + mid models (a few minutes on 2 cores)
    .venv/bin/python scripts/bench_core.py --sizes tiny    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "backend"))  # the synthetic pass-folder writer lives with the tests

RES = {"tiny": (96, 64), "mid": (256, 192)}


def child(spec: dict) -> dict:
    """One measurement in this (fresh) process."""
    import numpy as np
    import torch

    torch.set_num_threads(int(spec.get("threads", 2)))
    from neurender.contract import ControlNetUnit, RenderSettings
    from neurender.models.loading import load_pipeline
    from neurender.runner import JobSpec, run_render

    model_dir = Path(spec["model"])
    cn = model_dir.parent / "controlnet-depth"
    steps, frames = spec["steps"], spec["frames"]
    width, height = spec["width"], spec["height"]
    if spec["kind"] == "plain":
        from PIL import Image

        from neurender.engine.schedulers import make_scheduler

        loaded = load_pipeline(model_dir, [("depth", cn)])
        pipe = loaded.pipe
        # the same DPM++ 2M as the neurender rows: the checkpoint's PNDM runs steps + 1 UNet calls for `steps`
        pipe.scheduler = make_scheduler("dpmpp_2m", pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        rng = np.random.RandomState(0)
        controls = [Image.fromarray((rng.rand(height, width, 3) * 255).astype("uint8")) for _ in range(frames)]
        pipe("warmup", image=controls[0], height=height, width=width, num_inference_steps=1, output_type="np")
        t0 = time.perf_counter()
        for c in controls:
            pipe("a stone statue in a garden", image=c, height=height, width=width, num_inference_steps=steps,
                 generator=torch.Generator("cpu").manual_seed(0), output_type="np")
        seconds = time.perf_counter() - t0
    else:
        settings = RenderSettings(
            prompt="a stone statue in a garden", steps=steps, model=str(model_dir), width=width, height=height,
            controlnets=[ControlNetUnit(kind="depth", model=str(cn))], consistency=spec["mode"],
            batch_size=spec.get("batch", 4), scheduler="dpmpp_2m",
        )
        marks = {}

        def progress(p):
            if p.phase == "denoise" and "start" not in marks:
                marks["start"] = time.perf_counter()
            if p.phase == "done":
                marks["end"] = time.perf_counter()

        out = Path(tempfile.mkdtemp(prefix="bench-out-", dir=spec.get("tmp")))
        result = run_render(JobSpec(pass_dir=Path(spec["passes"]), out_dir=out, settings=settings), progress=progress)
        seconds = marks["end"] - marks["start"]
        warp = _warp_error(Path(spec["passes"]), out, result.frames_written, height, width)
        return {"seconds_per_frame": seconds / frames, "warp_error": warp,
                "peak_rss_mb": peak_rss_mb()}
    return {"seconds_per_frame": seconds / frames, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's own peak RSS. Not ru_maxrss: Linux carries the parent's high-water mark across fork+exec, so
    every child would report at least the benchmark driver's size. VmHWM belongs to the exec'd image alone."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warp_error(pass_dir: Path, out: Path, frames: list, height: int, width: int) -> float:
    """Mean warp error (Lai et al. 2018) of the written frames along the passes' exact motion (lower: steadier)."""
    import numpy as np
    from PIL import Image

    from neurender.metrics.motion import exact_motion
    from neurender.metrics.temporal import warp_errors

    images = [np.asarray(Image.open(out / f"frame_{f:04d}.png").convert("RGB"), dtype=np.float64) / 255 for f in frames]
    return float(np.nanmean(warp_errors(images, exact_motion(pass_dir, frames, height, width))))


def run_child(spec: dict) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed: {spec}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--sizes", default="tiny,mid")
    ap.add_argument("--frames", type=int, default=8, help="frames for the timing runs")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--mem-frames", default="16,64", help="short,long shot for the memory check")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repetitions per variant (median)")
    ap.add_argument("--modes", default="off,first,first+prev,window,keyframes")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    from neurender.models.random_models import build_random_model
    from support.synthetic_passes import write_synthetic_pass_folder

    work = Path(tempfile.mkdtemp(prefix="neurender-bench-"))
    short, long = (int(x) for x in args.mem_frames.split(","))
    failures = []
    print(f"neurender core benchmark: {args.frames} frames x {args.steps} steps (DPM++ 2M, CFG 7.5), 2 threads")
    try:  # models, pass folders and frames live under `work` (hundreds of MB for the mid model)
        for size in args.sizes.split(","):
            width, height = RES[size]
            models = build_random_model(work / size, size=size, control_kinds=("depth",))
            passes = {}
            for n in sorted({args.frames, short, long}):
                passes[n] = work / f"passes-{width}x{height}-{n}"
                write_synthetic_pass_folder(passes[n], frames=n, width=width, height=height)
            base = {"model": str(models.model), "steps": args.steps, "width": width, "height": height, "tmp": str(work)}
            modes = args.modes.split(",")
            runs: dict[str, list[dict]] = {m: [] for m in ["plain", *modes]}
            for _ in range(args.repeats):  # interleaved, so a noisy minute hits every variant alike
                for mode in runs:
                    if mode == "plain":
                        runs[mode].append(run_child({**base, "kind": "plain", "frames": args.frames}))
                    else:
                        runs[mode].append(run_child({**base, "kind": "neurender", "mode": mode, "frames": args.frames,
                                                     "passes": str(passes[args.frames])}))

            def median(mode: str, key: str) -> float:
                return statistics.median(r[key] for r in runs[mode])

            plain_s = median("plain", "seconds_per_frame")
            print(f"\n[{size} model, {width}x{height}]  (median of {args.repeats} interleaved runs each)")
            print(f"  {'diffusers pipeline, per frame':<40} {plain_s:8.3f} s/frame   1.00x   "
                  f"peak RSS {median('plain', 'peak_rss_mb'):7.0f} MB")
            for mode in modes:
                ratio = median(mode, "seconds_per_frame") / plain_s
                flag = ""
                if mode == "first+prev":
                    ok = ratio <= 1.15
                    flag = "  target <= 1.15x: " + ("met" if ok else "MISSED")
                    if not ok:
                        failures.append(f"{size}: first+prev {ratio:.2f}x")
                warp = runs[mode][0].get("warp_error")
                warp_text = f"   warp error {warp:.5f}" if warp is not None else ""
                print(f"  {'neurender render --consistency ' + mode:<40} {median(mode, 'seconds_per_frame'):8.3f} s/frame "
                      f"{ratio:6.2f}x   peak RSS {median(mode, 'peak_rss_mb'):7.0f} MB{warp_text}{flag}")
            mem = {}
            for n in (short, long):
                mem[n] = run_child({**base, "kind": "neurender", "mode": "first+prev", "frames": n, "passes": str(passes[n])})
            growth = mem[long]["peak_rss_mb"] / mem[short]["peak_rss_mb"] - 1
            ok = abs(growth) <= 0.10
            if not ok:
                failures.append(f"{size}: memory growth {growth:+.1%}")
            print(f"  peak RSS first+prev: {short} frames {mem[short]['peak_rss_mb']:.0f} MB, {long} frames "
                  f"{mem[long]['peak_rss_mb']:.0f} MB -> {growth:+.1%}  target within 10%: {'met' if ok else 'MISSED'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nmissed targets: " + ("; ".join(failures) if failures else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
