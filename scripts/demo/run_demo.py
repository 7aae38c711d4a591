#!/usr/bin/env python3
"""End-to-end demo: Blender renders the demo shot's passes, the local backend renders it neurally, and the result
comes back as a VSE strip.

    .venv-blender/bin/python scripts/demo/run_demo.py [--frames 16] [--out out/demo] [--backend-env .venv]

What it does, all headless: builds the extension zip and installs it with Blender's own extension install into an
isolated user folder; opens scripts/demo/demo.blend (or builds the scene); points the add-on at the backend's
Python environment ("start a local backend"); turns on "Neural render on animation render" and runs an ordinary
animation render -- the hook writes the pass folder, submits the job and waits; then checks the VSE strip and saves
``<out>/demo_result.blend``. Without ``--model`` a tiny random-weight model is built with the backend's Python
(no pretrained weights are downloaded; the frames then show the structure of the controls, not a real style).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import addon_env  # noqa: E402

BUILD_MODEL = (
    "import sys; from neurender.models.random_models import build_random_model; "
    "build_random_model(sys.argv[1], size='tiny', control_kinds=('depth',), seed=0)"
)


def tiny_model(env: str, folder: str) -> tuple[str, str]:
    model, cn = os.path.join(folder, "model"), os.path.join(folder, "controlnet-depth")
    if not (os.path.isdir(model) and os.path.isdir(cn)):
        python = os.path.join(env, "bin", "python")
        subprocess.run([python, "-c", BUILD_MODEL, folder], check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    return model, cn


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=0, help="render only the first N frames (0: all)")
    ap.add_argument("--out", default=os.path.join(REPO, "out", "demo"))
    ap.add_argument("--backend-env", default=os.path.join(REPO, ".venv"))
    ap.add_argument("--model", default="", help="SD 1.5 model (folder or .safetensors); default: tiny random model")
    ap.add_argument("--controlnet", default="", help="depth ControlNet for --model")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args(argv)
    if bool(args.model) != bool(args.controlnet):  # one without the other: the empty one became the current folder
        ap.error("--model and --controlnet go together (an SD 1.5 model and its depth ControlNet)")
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    t0 = time.monotonic()

    tmp = addon_env.isolate()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import bpy

    mod = addon_env.install(addon_env.build_zip(os.path.join(tmp, "dist")))
    result: dict = {}
    try:
        blend = os.path.join(HERE, "demo.blend")
        if os.path.isfile(blend):
            bpy.ops.wm.open_mainfile(filepath=blend)
        else:
            import make_demo_scene

            make_demo_scene.build_scene()
        scene = bpy.context.scene
        scene.cycles.samples = args.samples
        if args.frames:
            scene.frame_end = scene.frame_start + args.frames - 1
        if args.model:
            model, controlnet = os.path.abspath(args.model), os.path.abspath(args.controlnet)
        else:
            model, controlnet = tiny_model(os.path.abspath(args.backend_env), os.path.join(out, "tiny-model"))

        prefs = mod.preferences.get()
        prefs.start_local = True
        prefs.backend_env = os.path.abspath(args.backend_env)
        prefs.backend_root = out
        prefs.sd_model = model
        prefs.controlnet_depth = controlnet
        shot = scene.neurender
        shot.output_dir = os.path.join(out, "shot")
        shot.steps = args.steps
        shot.model = ""
        if not shot.controlnets:
            shot.controlnets.add().kind = "depth"
        for unit in shot.controlnets:
            unit.model = ""

        bpy.ops.neurender.connect()  # starts `neurender serve` and checks its version
        status = bpy.context.window_manager.neurender
        result["backend"] = status.backend_info

        shot.render_hook = True  # the render output is now the pass folder
        bpy.ops.render.render(animation=True)  # the hook submits on completion and waits (background mode)
        strips = mod.vse.our_strips(scene)
        result.update(state=status.job_state, error=status.error, out_dir=status.out_dir,
                      frames=[scene.frame_start, scene.frame_end],
                      strip=None if not strips else {
                          "channel": strips[0].channel, "start": strips[0].frame_final_start,
                          "end": strips[0].frame_final_end - 1, "elements": len(strips[0].elements),
                          "directory": strips[0].directory})
        # what the artist saw (issue 11): the backend's own random-weights flag, the device Auto picked, the live
        # preview image, and the control images the backend derived (Show Control Images)
        preview = bpy.data.images.get(mod.live.PREVIEW_IMAGE)
        shown = {}
        mod.session.show_control_images(scene, scene.frame_start, lambda images, err: shown.update(
            names=[i.name for i in images], err=err))  # blocking in background mode: answered at once
        controls = shown.get("names") or [str(shown.get("err"))]
        result.update(random_weights=status.random_weights, job_device=status.job_device, message=status.message,
                      preview_step=status.preview_step, preview_size=list(preview.size) if preview else None,
                      controls=controls, progress=status.progress)
        shot.render_hook = False
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "demo_result.blend"))
        result["blend"] = os.path.join(out, "demo_result.blend")
    finally:
        addon_env.disable()  # also stops the local backend
    result["seconds"] = round(time.monotonic() - t0, 1)
    print("DEMO_RESULT " + json.dumps(result), flush=True)
    ok = result.get("state") == "done" and result.get("strip") is not None
    print(("demo finished: " if ok else "demo FAILED: ") + (result.get("out_dir") or result.get("error") or ""))
    if not args.model:
        print("\n" + "!" * 78 + "\n!! NO --model GIVEN: these frames come from a tiny RANDOM-WEIGHT model. They are NOISE, not a\n"
              "!! rendering. Run again with --model <SD 1.5 checkpoint> --controlnet <depth ControlNet> for real frames.\n"
              + "!" * 78, flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
