"""Scenes built in code for the Blender tests (import only inside a bpy process)."""

from __future__ import annotations

import math

import bpy

CUBE_START = (-1.5, 0.0, 0.0)
CUBE_STEP = (0.5, 0.0, 0.0)  # world units per frame, linear keys
SPHERE_CENTER = (1.2, 1.5, 0.6)
SPHERE_RADIUS = 0.7


def build(frames: int = 5, width: int = 64, height: int = 48, samples: int = 4):
    """A static camera (rotated, shifted lens), a cube moving +X at CUBE_STEP per frame, a smooth sphere, a floor.

    Pass indices: cube 1, floor 2, sphere 3.
    """
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = width, height
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, frames

    bpy.ops.mesh.primitive_cube_add(size=1.0, location=CUBE_START)
    cube = bpy.context.active_object
    cube.name = "Mover"
    cube.pass_index = 1
    for i in range(frames):
        cube.location = tuple(CUBE_START[k] + CUBE_STEP[k] * i for k in range(3))
        cube.keyframe_insert("location", frame=1 + i)
    from importlib import import_module

    compat = import_module("bl_ext.user_default.neurender.compat")
    compat.set_linear_interpolation(cube)

    bpy.ops.mesh.primitive_plane_add(size=8.0, location=(0, 0, -0.5))
    bpy.context.active_object.pass_index = 2
    bpy.ops.mesh.primitive_uv_sphere_add(segments=48, ring_count=24, radius=SPHERE_RADIUS, location=SPHERE_CENTER)
    sphere = bpy.context.active_object
    sphere.pass_index = 3
    bpy.ops.object.shade_smooth()

    bpy.ops.object.camera_add(location=(1.0, -8.0, 3.0), rotation=(math.radians(72), 0.0, math.radians(8)))
    cam = bpy.context.active_object
    cam.data.lens = 40
    cam.data.shift_x = 0.05
    cam.data.shift_y = -0.03
    cam.data.clip_start = 0.1
    cam.data.clip_end = 100.0
    scene.camera = cam
    bpy.ops.object.light_add(type="SUN", location=(0, 0, 5))
    world = bpy.data.worlds.new("W")
    scene.world = world
    return scene
