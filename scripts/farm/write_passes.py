"""Write a shot's pass folder headless, for farm managers: the Blender half of a neurender farm job.

    blender -b shot.blend --python scripts/farm/write_passes.py -- --out /farm/shot010/passes [--frames 1-240] [--half]

Needs the neurender Blender extension installed for the farm user (any extensions repository); uses its
``pass_export.export_passes`` (multilayer EXR per frame + manifest.json with ONE shot-wide depth range), so the whole
frame range must be written by one task. The finished folder is moved into place atomically, so a re-run or a
killed task never leaves a half-written pass folder at ``--out``; an existing complete folder is kept (idempotent)
unless ``--overwrite``. Exit codes: 0 done, 2 bad input (no extension, bad range), 1 anything else.
"""

import argparse
import importlib
import os
import shutil
import sys
import tempfile

import addon_utils
import bpy


def _extension():
    for name in list(bpy.context.preferences.addons.keys()):
        if name == "neurender" or name.endswith(".neurender"):
            return importlib.import_module(name)
    for mod in addon_utils.modules():
        if mod.__name__ == "neurender" or mod.__name__.endswith(".neurender"):
            addon_utils.enable(mod.__name__, default_set=True)
            return importlib.import_module(mod.__name__)
    return None


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="write_passes.py")
    ap.add_argument("--out", required=True, help="pass folder to create")
    ap.add_argument("--frames", help="A-B (default: the scene's frame range)")
    ap.add_argument("--scene", help="scene name (default: the active scene)")
    ap.add_argument("--half", action="store_true", help="16-bit float EXR")
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    if os.path.isfile(os.path.join(out, "manifest.json")) and not args.overwrite:
        print(f"pass folder {out} already exists; nothing to do (--overwrite to write it again)")
        return 0
    ext = _extension()
    if ext is None:
        print("ERROR: the neurender extension is not installed for this Blender user", file=sys.stderr)
        return 2
    scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
    if scene is None:
        print(f"ERROR: scene {args.scene!r} does not exist in {bpy.data.filepath}", file=sys.stderr)
        return 2
    start, end = scene.frame_start, scene.frame_end
    if args.frames:
        try:
            a, _, b = args.frames.partition("-")
            start, end = int(a), int(b or a)
        except ValueError:
            print(f"ERROR: --frames {args.frames!r} must look like 1-240", file=sys.stderr)
            return 2
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".passes-", dir=parent)
    try:
        scene.neurender.output_dir = staging
        ext.pass_export.export_passes(scene, start, end, half=args.half)
        done = ext.pass_export.pass_dir(scene)
        if os.path.isdir(out):
            shutil.rmtree(out)
        os.replace(done, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"pass folder {out}: frames {start}-{end}")
    return 0


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    sys.exit(main(argv))
