#!/usr/bin/env python3
"""Build the neurender demo scene in code and write its pass folder through the add-on's own pass export.

    .venv-blender/bin/python scripts/demo/make_demo_scene.py [--frames 16] [--out scripts/demo]

A small animated shot: a cube sliding and turning, a bouncing sphere, a cone on a floor with a few pillars,
and a slow camera dolly/pan. Cycles CPU, few samples, 128x96. Writes ``<out>/demo.blend`` and ``<out>/passes/``
(multilayer EXR per frame + manifest.json) -- the committed demo pass folder.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import addon_env  # noqa: E402


def _material(name, color):
    import bpy

    mat = bpy.data.materials.new(name)
    sys.modules[addon_env.MODULE + ".compat"].use_nodes(mat)
    mat.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*color, 1.0)
    return mat


def build_scene(frames: int = 16, width: int = 128, height: int = 96, samples: int = 8):
    """Create the demo scene in a fresh file; returns the scene. The add-on must be enabled (linear keys)."""
    import bpy

    compat = sys.modules[addon_env.MODULE + ".compat"]
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.name = "neurender_demo"
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.render.fps = 12
    scene.frame_start, scene.frame_end = 1, frames

    bpy.ops.mesh.primitive_plane_add(size=14, location=(0, 0, 0))
    floor = bpy.context.active_object
    floor.data.materials.append(_material("floor", (0.5, 0.45, 0.4)))
    floor.pass_index = 1

    bpy.ops.mesh.primitive_cube_add(size=1.2, location=(-2.5, 0.5, 0.6))
    cube = bpy.context.active_object
    cube.data.materials.append(_material("cube", (0.8, 0.2, 0.1)))
    cube.pass_index = 2
    cube.keyframe_insert("location", frame=1)
    cube.keyframe_insert("rotation_euler", frame=1)
    cube.location = (1.0, 0.2, 0.6)
    cube.rotation_euler = (0, 0, math.radians(90))
    cube.keyframe_insert("location", frame=frames)
    cube.keyframe_insert("rotation_euler", frame=frames)
    compat.set_linear_interpolation(cube)

    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.6, location=(1.5, 1.5, 0.6), segments=32, ring_count=16)
    sphere = bpy.context.active_object
    bpy.ops.object.shade_smooth()
    sphere.data.materials.append(_material("sphere", (0.2, 0.4, 0.9)))
    sphere.pass_index = 3
    for f in range(1, frames + 1, 2):  # a bounce: |sin| height
        sphere.location.z = 0.6 + 1.2 * abs(math.sin(math.pi * (f - 1) / max(1, frames - 1) * 2))
        sphere.keyframe_insert("location", index=2, frame=f)

    bpy.ops.mesh.primitive_cone_add(radius1=0.6, depth=1.5, location=(-0.8, 2.5, 0.75))
    bpy.context.active_object.data.materials.append(_material("cone", (0.2, 0.7, 0.3)))
    bpy.context.active_object.pass_index = 4
    for i, x in enumerate((-4, -2, 2, 4)):
        bpy.ops.mesh.primitive_cylinder_add(radius=0.25, depth=3, location=(x, 4.5, 1.5))
        bpy.context.active_object.pass_index = 5 + i

    bpy.ops.object.camera_add(location=(-1.5, -8.0, 3.2), rotation=(math.radians(73), 0, math.radians(-8)))
    cam = bpy.context.active_object
    cam.data.lens = 32
    cam.data.clip_start = 0.1
    cam.data.clip_end = 60
    cam.keyframe_insert("location", frame=1)
    cam.keyframe_insert("rotation_euler", frame=1)
    cam.location = (1.0, -7.0, 2.8)
    cam.rotation_euler = (math.radians(75), 0, math.radians(6))
    cam.keyframe_insert("location", frame=frames)
    cam.keyframe_insert("rotation_euler", frame=frames)
    compat.set_linear_interpolation(cam)
    scene.camera = cam

    bpy.ops.object.light_add(type="SUN", location=(2, -2, 6), rotation=(math.radians(40), 0, math.radians(30)))
    bpy.context.active_object.data.energy = 3.0
    world = bpy.data.worlds.new("demo_world")
    compat.use_nodes(world)
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.55, 0.65, 0.8, 1.0)
    scene.world = world

    shot = scene.neurender
    shot.prompt = "a toy workshop, clay figures, soft studio light"
    shot.negative_prompt = "blurry, text"
    shot.steps = 4
    shot.seed = 7
    shot.scheduler = "ddim"
    unit = shot.controlnets.add()
    unit.kind = "depth"
    unit.weight = 1.0
    return scene


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--out", default=HERE, help="folder for demo.blend and passes/ (default: scripts/demo)")
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args(argv)
    out = os.path.abspath(args.out)
    tmp = addon_env.isolate()
    import bpy

    addon_env.install(addon_env.build_zip(os.path.join(tmp, "dist")))
    mod = sys.modules[addon_env.MODULE]
    try:
        scene = build_scene(args.frames, samples=args.samples)
        staging = os.path.join(tmp, "shot")
        scene.neurender.output_dir = staging
        manifest = mod.pass_export.export_passes(scene, scene.frame_start, scene.frame_end, half=True)
        passes = os.path.join(out, "passes")
        if os.path.isdir(passes):
            shutil.rmtree(passes)
        shutil.copytree(mod.pass_export.pass_dir(scene), passes)
        scene.neurender.output_dir = "//neurender/"
        bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "demo.blend"), compress=True)
        size = sum(os.path.getsize(os.path.join(passes, n)) for n in os.listdir(passes))
        print(f"demo scene: {out}/demo.blend; passes: {passes} ({len(manifest.frames)} frames, "
              f"{size / 1e6:.2f} MB, depth range {manifest.depth_range[0]:.2f}..{manifest.depth_range[1]:.2f})")
    finally:
        addon_env.disable()
    return 0


if __name__ == "__main__":
    sys.exit(main())
