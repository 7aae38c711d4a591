"""Farm benchmark: is a shot rendered in chunks on several machines as continuous as one render?

Renders the demo scene (scripts/demo/passes, 16 frames at 128x96, exact Vector pass) with a random-weight model:
  * ``whole``          the shot in one piece (no chunks),
  * ``chunks+anchors`` chunks of ``--chunk-size`` with ``--overlap`` frames blended and shared anchors (the farm),
  * ``chunks``         the same chunks without shared anchors (each chunk attends to its own first frame),
  * ``cut+anchors``    chunks with shared anchors but no overlap (hard cuts),
and prints, per variant, the warp error (Lai et al. 2018, exact motion from the Vector pass, occlusion masked) of the
frame pairs *across* chunk boundaries (pairs touching a blend zone or the cut) and *inside* chunks, and their ratio;
for chunked variants also how much the two chunks disagree on the frames both rendered (mean |P - Q| in grey levels,
before blending) and how far the final frames are from the whole render (mean |chunked - whole|, grey levels).

Target (issue #7): across / inside <= 1.10 for ``chunks+anchors``.

    .venv/bin/python scripts/bench_farm.py                       # tiny model, ~1 min on 2 cores
    .venv/bin/python scripts/bench_farm.py --size mini --steps 10
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "scripts" / "demo" / "passes"


def load_frames(out: Path, frames: list[int]) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(out / f"frame_{f:04d}.png").convert("RGB"), dtype=np.float64) / 255.0 for f in frames]


def warp_errors(pass_dir: Path, out: Path, frames: list[int]) -> np.ndarray:
    """Per pair (t, t+1) warp error (``neurender.metrics``) along the exact motion of the Vector pass."""
    from neurender.metrics.motion import exact_motion
    from neurender.metrics.temporal import warp_errors as metric

    images = load_frames(out, frames)
    h, w = images[0].shape[:2]
    return metric(images, exact_motion(pass_dir, frames, h, w))


def disagreement(out: Path, plan) -> float:
    """Mean |P_f - Q_f| (grey levels) over the frames both neighbouring chunks rendered."""
    diffs = []
    for p, q in zip(plan, plan[1:]):
        for f in range(q.render[0], p.render[1] + 1):
            a = load_frames(out / ".chunks" / p.name, [f])[0]
            b = load_frames(out / ".chunks" / q.name, [f])[0]
            diffs.append(np.abs(a - b).mean() * 255)
    return float(np.mean(diffs)) if diffs else 0.0


def boundary_pairs(frames: list[int], borders: list[int], overlap: int) -> set[int]:
    """Indices k of pairs (frames[k], frames[k+1]) touching a blend zone [b - n, b + n - 1] (or the cut b-1 | b)."""
    touched = set()
    for b in borders:
        lo, hi = b - max(overlap, 1), b + max(overlap, 1) - 1
        for k in range(len(frames) - 1):
            if frames[k + 1] >= lo and frames[k] <= hi:
                touched.add(k)
    return touched


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--passes", type=Path, default=DEMO)
    ap.add_argument("--size", default="tiny", help="random model size (tiny, mini, mid)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--chunk-size", type=int, default=6)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--anchors", type=int, default=3)
    ap.add_argument("--consistency", default="first+prev")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from neurender.contract import ControlNetUnit, RenderSettings
    from neurender.farm.anchors import compute_anchors
    from neurender.farm.chunks import plan_chunks, render_chunk
    from neurender.models.cache import PipelineCache
    from neurender.models.random_models import build_random_model
    from neurender.passes.folder import PassFolder
    from neurender.runner import JobSpec, run_render

    tmp = Path(tempfile.mkdtemp(prefix="bench-farm-"))
    model = build_random_model(tmp / "model", size=args.size, control_kinds=("depth",), seed=0)
    settings = RenderSettings(prompt="a toy house, watercolour", steps=args.steps, model=str(model.model), seed=1,
                              consistency=args.consistency, batch_size=4,
                              controlnets=[ControlNetUnit(kind="depth", model=str(model.controlnets["depth"]))])
    shot = PassFolder.open(args.passes).frames
    plan = plan_chunks(shot, (shot[0], shot[-1]), args.chunk_size, args.overlap)
    borders = [c.core[0] for c in plan[1:]]
    cache = PipelineCache()
    t0 = time.monotonic()
    anchors = compute_anchors(args.passes, tmp / "anchors", settings, count=args.anchors, pipelines=cache)
    timings = {"anchors": time.monotonic() - t0}
    outs = {}

    t0 = time.monotonic()
    run_render(JobSpec(args.passes, tmp / "whole", settings), pipelines=cache)
    timings["whole"] = time.monotonic() - t0
    outs["whole"] = tmp / "whole"
    for name, use_anchors, overlap in (("chunks+anchors", True, args.overlap), ("chunks", False, args.overlap),
                                       ("cut+anchors", True, 0)):
        out = tmp / name
        t0 = time.monotonic()
        for c in plan:
            render_chunk(args.passes, out, dataclasses.replace(settings, frames=c.frames_arg), overlap=overlap,
                         anchors=anchors.folder if use_anchors else None, pipelines=cache)
        timings[name] = time.monotonic() - t0
        outs[name] = out

    across = boundary_pairs(shot, borders, args.overlap)
    rows = {}
    for name, out in outs.items():
        e = warp_errors(args.passes, out, shot)
        pairs = boundary_pairs(shot, borders, 0 if name.startswith("cut") else args.overlap) if name != "whole" else across
        inside = [k for k in range(len(e)) if k not in pairs]
        a, i = float(np.nanmean(e[sorted(pairs)])), float(np.nanmean(e[inside]))
        rows[name] = {"across": a, "inside": i, "ratio": a / i, "seconds": round(timings[name], 2),
                      "disagree": disagreement(out, plan) if name in ("chunks+anchors", "chunks") else float("nan"),
                      "vs_whole": float(np.mean([np.abs(x - y).mean() for x, y in zip(
                          load_frames(out, shot), load_frames(outs["whole"], shot))]) * 255)}
    report = {"size": args.size, "steps": args.steps, "frames": len(shot), "chunks": [c.frames_arg for c in plan],
              "overlap": args.overlap, "anchor_frames": anchors.frames, "anchors_seconds": round(timings["anchors"], 2),
              "variants": rows}
    shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"demo shot {len(shot)} frames, {args.size} random model, {args.steps} steps, consistency {args.consistency}")
    print(f"chunks {report['chunks']}, overlap {args.overlap}, anchors {anchors.frames} ({timings['anchors']:.1f} s)")
    print(f"{'variant':<16} {'across':>10} {'inside':>10} {'ratio':>7} {'P-Q':>7} {'vs whole':>9} {'seconds':>8}")
    for name, r in rows.items():
        print(f"{name:<16} {r['across']:>10.6f} {r['inside']:>10.6f} {r['ratio']:>7.3f} {r['disagree']:>7.3f} "
              f"{r['vs_whole']:>9.3f} {r['seconds']:>8.1f}")
    ok = rows["chunks+anchors"]["ratio"] <= 1.10
    print(f"target across/inside <= 1.10 for chunks+anchors: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
