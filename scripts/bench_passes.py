#!/usr/bin/env python3
"""Pass-render seconds per frame at 512x512: neurender's pass-only configuration vs the artist's render settings.

    .venv-blender/bin/python scripts/bench_passes.py [--frames 8] [--size 512] [--samples 32]

Renders the demo shot (``scripts/demo/demo.blend``) through the add-on's own pass export (``export_passes``: a
temporary scene linking the artist's objects, depth/normal/vector/object-index into a multilayer EXR per frame) with

* ``fast``: the pass-only Cycles configuration the add-on uses (1 sample, 0 bounces, no denoising, persistent data),
* ``fast, uncompressed EXR``: the same writing EXRs without ZIP compression (about 3x the disk),
* ``fast, no persistent data``: the same without keeping the scene loaded between frames,
* ``fast, half-float EXR``: the same writing 16-bit floats,
* ``artist settings``: the artist's own Cycles settings (``--samples`` samples, denoising, 12 bounces, motion blur on
  in the artist's scene; the pass scene always turns motion blur off, the vector pass needs it off) - what the pass
  render cost before the pass-only configuration (only ``--artist-frames`` frames: it is slow).

Workbench has only Combined and Depth, and EEVEE has no object index (and needs ~46 s of shader compilation on a
CPU-only machine), so neither can render the pass folder; they are not rows. Prints one table (seconds per frame:
mean over all frames including the first, and the median of frames 2..N from render_write timestamps) and a
``BENCH_PASSES`` JSON line. Numbers, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "demo"))

import addon_env  # noqa: E402


def run_config(mod, scene, name: str, folder: str, frames: int, fast: bool, half: bool = False,
               persistent: bool = True, codec: str = "") -> dict:
    import bpy

    stamps: list[float] = []

    def on_write(s, *_args) -> None:
        if mod.pass_export.is_pass_scene(s):
            stamps.append(time.perf_counter())

    make = mod.pass_export.make_pass_scene

    def make_scene(*args, **kwargs):
        tmp = make(*args, **kwargs)
        if not persistent:
            tmp.render.use_persistent_data = False
        if codec:
            tmp.render.image_settings.exr_codec = codec
        return tmp

    mod.pass_export.make_pass_scene = make_scene
    bpy.app.handlers.render_write.append(on_write)
    try:
        t0 = time.perf_counter()
        mod.pass_export.export_passes(scene, scene.frame_start, scene.frame_start + frames - 1, half=half,
                                      folder=folder, fast=fast)
        total = time.perf_counter() - t0
    finally:
        bpy.app.handlers.render_write.remove(on_write)
        mod.pass_export.make_pass_scene = make
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".exr"))
    return {"config": name, "mean_s_per_frame": total / frames,
            "median_s_per_frame_after_first": statistics.median(steps) if steps else float("nan"),
            "first_frame_s": (stamps[0] - t0) if stamps else float("nan"), "total_s": total,
            "exr_mb_per_frame": size / frames / 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="render resolution (square)")
    ap.add_argument("--samples", type=int, default=32, help="the artist's Cycles samples")
    ap.add_argument("--artist-frames", type=int, default=2, help="frames rendered at the artist's settings "
                    "(~25 s each at 512x512 on 2 cores)")
    args = ap.parse_args(argv)

    tmp = addon_env.isolate()
    import logging

    logging.basicConfig(level=logging.WARNING)
    import bpy

    mod = addon_env.install(addon_env.build_zip(os.path.join(tmp, "dist")))
    rows = []
    try:
        bpy.ops.wm.open_mainfile(filepath=os.path.join(HERE, "demo", "demo.blend"))
        scene = bpy.context.scene
        r = scene.render
        r.resolution_x = r.resolution_y = args.size
        r.resolution_percentage = 100
        scene.frame_end = max(scene.frame_end, scene.frame_start + args.frames - 1)
        # the artist's production settings
        scene.cycles.samples = args.samples
        scene.cycles.use_denoising = True
        scene.cycles.max_bounces = 12
        r.use_motion_blur = True
        out = tempfile.mkdtemp(prefix="bench-passes-")
        artist_frames = min(args.frames, args.artist_frames)
        configs = [("fast (add-on default, ZIP EXR)", args.frames, True, False, True, ""),
                   ("fast, uncompressed EXR", args.frames, True, False, True, "NONE"),
                   ("fast, no persistent data", args.frames, True, False, False, ""),
                   ("fast, half-float EXR", args.frames, True, True, True, ""),
                   (f"artist settings ({args.samples} spp, denoise, 12 bounces)", artist_frames, False, False, True,
                    "")]
        for i, (name, frames, fast, half, persistent, codec) in enumerate(configs):
            rows.append(run_config(mod, scene, name, os.path.join(out, f"c{i}"), frames, fast, half, persistent,
                                   codec))
    finally:
        addon_env.disable()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\npass render, {args.size}x{args.size}, {args.frames} frames, demo shot, Cycles CPU "
          f"({os.cpu_count()} cores, load average {load:.1f})")
    print(f"{'configuration':48s} {'s/frame':>8s} {'median 2..N':>12s} {'first':>7s} {'MB/frame':>9s}")
    for row in rows:
        print(f"{row['config']:48s} {row['mean_s_per_frame']:8.2f} {row['median_s_per_frame_after_first']:12.2f} "
              f"{row['first_frame_s']:7.2f} {row['exr_mb_per_frame']:9.2f}")
    fast, artist = rows[0], rows[-1]
    print(f"fast is {artist['mean_s_per_frame'] / fast['mean_s_per_frame']:.1f}x faster than the artist's settings; "
          f"target <= 0.30 s/frame: {'met' if fast['mean_s_per_frame'] <= 0.3 else 'MISSED'}")
    print("BENCH_PASSES " + json.dumps({"size": args.size, "frames": args.frames, "rows": rows}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
