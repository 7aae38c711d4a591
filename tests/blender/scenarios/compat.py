"""Scenario: every function of compat.py under the running Blender (4.5 or 5.0), with what it touched."""

import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402

compat = mod.compat
bpy.ops.wm.read_homefile(use_empty=True)
scene = bpy.context.scene
out = {"version": list(compat.blender_major_minor()), "is_5x": compat.is_5x()}

ims = scene.render.image_settings
formats = [ims.file_format]
compat.set_multilayer_exr(ims, half=True)
formats.append([ims.file_format, ims.color_depth, ims.exr_codec, compat.is_multilayer_exr(ims)])
compat.set_file_format(ims, "PNG")  # back to the artist's format (5.0: needs media type IMAGE first)
formats.append([ims.file_format, compat.is_multilayer_exr(ims)])
compat.set_movie_output(scene.render)
formats.append([ims.file_format, scene.render.ffmpeg.format, scene.render.ffmpeg.codec])
compat.set_file_format(ims, "OPEN_EXR")
formats.append(ims.file_format)
out["formats"] = formats

if compat.is_5x():
    scene.compositing_node_group = bpy.data.node_groups.new("Comp", "CompositorNodeTree")
else:
    scene.use_nodes = True
tree = compat.compositor_tree(scene)
out["compositor"] = tree.bl_idname if tree is not None else None

se = scene.sequence_editor_create()
try:
    compat.strips(se).new_effect(name="c", type="COLOR", channel=3, frame_start=1, frame_end=5)
except TypeError:  # 5.0: length instead of frame_end
    compat.strips(se).new_effect(name="c", type="COLOR", channel=3, frame_start=1, length=4)
out["strips"] = [[s.name, s.channel] for s in compat.all_strips(se)]

bpy.ops.mesh.primitive_cube_add()
cube = bpy.context.active_object
for frame, x in ((1, 0.0), (5, 4.0)):
    cube.location.x = x
    cube.keyframe_insert("location", frame=frame)
compat.set_linear_interpolation(cube)
curves = compat.fcurves(cube.animation_data.action, cube)
out["fcurves"] = sorted({kp.interpolation for fc in curves for kp in fc.keyframe_points})
out["n_fcurves"] = len(curves)
scene.frame_set(3)
out["x_at_3"] = cube.matrix_world.translation.x
out["index_prefix"] = compat.object_index_channel_prefix()
common.finish(out)
