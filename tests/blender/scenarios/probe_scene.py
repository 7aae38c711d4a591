"""A demanding artist's own scene, built in code, and a generic before/after snapshot of everything that is theirs.

The scene: several objects with modifiers (subdivision, array, bevel) and keyframed animation, a second view layer
(the active one in the file, with a collection excluded), motion blur, Cycles at production samples with denoising,
an own output path and format (OpenEXR DWAA, half float), a colour strip and an image strip in the VSE, a
non-default frame range (11-14, step 1) and frame rate (23.976), a non-square resolution at 50 %, a camera with depth
of field, a compositor node tree. ``snapshot()`` walks the RNA of the scene, its render/cycles/image settings,
every view layer, every object (transforms, modifiers, animation), the camera, the world, the compositor, every
VSE strip, and hashes the artist's own files; ``diff()`` lists what differs.

Import only inside a bpy process, after the add-on is installed (``common.start``).
"""

from __future__ import annotations

import hashlib
import math
import os

import bpy

import rna_snapshot

FRAME_START, FRAME_END = 11, 14
SKIP = {"rna_type", "neurender", "neurender_jobs", "neurender_jobs_index",  # neurender's own settings and job records
        "frame_current_final", "frame_float", "frame_subframe", "is_evaluated",
        "original", "depsgraph", "users", "session_uid", "is_dirty", "tag", "is_runtime_data", "bl_rna",
        "is_editmode", "mode", "select", "select_left_handle", "select_right_handle", "select_control_point",
        "is_missing", "is_embedded_data", "preview", "name_full", "use_extra_user", "is_library_indirect",
        "library_weak_reference", "id_type", "is_override_data"}


def _compat():
    from importlib import import_module

    return import_module("bl_ext.user_default.neurender.compat")


def build(folder: str) -> bpy.types.Scene:
    """The artist's scene, saved as ``folder/shot.blend``; returns the scene."""
    compat = _compat()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.name = "sh010"
    r = scene.render
    r.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 256  # production
    scene.cycles.use_adaptive_sampling = True
    scene.cycles.use_denoising = True
    scene.cycles.max_bounces = 12
    r.resolution_x, r.resolution_y, r.resolution_percentage = 192, 80, 50  # 96x40, not square
    r.pixel_aspect_x = 1.0
    r.fps, r.fps_base = 24, 1.001
    r.use_motion_blur = True
    r.motion_blur_shutter = 0.35
    r.film_transparent = True
    r.filepath = os.path.join(folder, "beauty", "sh010_")
    ims = r.image_settings
    compat.set_file_format(ims, "OPEN_EXR")
    ims.exr_codec = "DWAA"
    ims.color_depth = "16"
    r.use_file_extension = True
    r.use_overwrite = False
    r.use_placeholder = True
    r.use_stamp = True
    r.use_sequencer = False  # the strips are the editor's notes; the beauty render is the 3D scene
    r.use_compositing = True
    scene.frame_start, scene.frame_end, scene.frame_step = FRAME_START, FRAME_END, 1
    scene.frame_current = 12

    props = bpy.data.collections.new("props")
    scene.collection.children.link(props)
    fx = bpy.data.collections.new("fx_only")
    scene.collection.children.link(fx)

    bpy.ops.mesh.primitive_cube_add(size=1.0, location=(-1.0, 0.0, 0.0))
    cube = bpy.context.active_object
    cube.name = "Hero"
    cube.pass_index = 1
    sub = cube.modifiers.new("Subdiv", "SUBSURF")
    sub.levels, sub.render_levels = 1, 2
    cube.modifiers.new("Bevel", "BEVEL").width = 0.05
    for i, f in enumerate(range(FRAME_START, FRAME_END + 1)):
        cube.location.x = -1.0 + 0.4 * i
        cube.rotation_euler.z = math.radians(10 * i)
        cube.keyframe_insert("location", frame=f)
        cube.keyframe_insert("rotation_euler", frame=f)
    for c in list(cube.users_collection):
        c.objects.unlink(cube)
    props.objects.link(cube)

    bpy.ops.mesh.primitive_cylinder_add(radius=0.2, depth=1.0, location=(1.0, 1.0, 0.0))
    pillar = bpy.context.active_object
    pillar.name = "Pillars"
    arr = pillar.modifiers.new("Array", "ARRAY")
    arr.count = 3
    arr.relative_offset_displace = (2.5, 0, 0)
    for c in list(pillar.users_collection):
        c.objects.unlink(pillar)
    props.objects.link(pillar)

    bpy.ops.mesh.primitive_ico_sphere_add(radius=0.3, location=(0, 2, 1))
    spark = bpy.context.active_object
    spark.name = "Spark"
    for c in list(spark.users_collection):
        c.objects.unlink(spark)
    fx.objects.link(spark)

    bpy.ops.mesh.primitive_plane_add(size=10.0, location=(0, 0, -0.5))
    bpy.context.active_object.name = "Ground"

    bpy.ops.object.camera_add(location=(0.5, -7.0, 2.5), rotation=(math.radians(75), 0.0, math.radians(4)))
    cam = bpy.context.active_object
    cam.name = "ShotCam"
    cam.data.lens = 35
    cam.data.dof.use_dof = True
    cam.data.dof.focus_distance = 6.5
    cam.data.dof.aperture_fstop = 1.4
    cam.data.clip_start, cam.data.clip_end = 0.1, 60.0
    scene.camera = cam
    bpy.ops.object.light_add(type="AREA", location=(2, -2, 4))
    scene.world = bpy.data.worlds.new("ArtistWorld")

    main_layer = scene.view_layers[0]
    main_layer.name = "beauty"
    main_layer.use_pass_mist = True
    main_layer.use_pass_z = False
    second = scene.view_layers.new("fx")
    second.use_pass_emit = True
    for lc in second.layer_collection.children:
        if lc.name == "props":
            lc.holdout = True
    for lc in main_layer.layer_collection.children:
        if lc.name == "fx_only":
            lc.exclude = True

    # compositor: a glare on the beauty
    tree = compat.compositor_tree(scene)
    if tree is not None and hasattr(tree, "nodes"):
        try:
            glare = tree.nodes.new("CompositorNodeGlare")
            glare.name = "artist_glare"
        except RuntimeError:
            pass

    # the editor's VSE notes: a colour strip and an image strip
    os.makedirs(os.path.join(folder, "plates"), exist_ok=True)
    plate = os.path.join(folder, "plates", "slate.png")
    img = bpy.data.images.new("slate", 16, 8)
    img.filepath_raw, img.file_format = plate, "PNG"
    img.save()
    bpy.data.images.remove(img)
    se = scene.sequence_editor_create()
    strips = compat.strips(se)
    try:
        color = strips.new_effect(name="grade_note", type="COLOR", channel=2, frame_start=FRAME_START,
                                  frame_end=FRAME_END + 1)
    except TypeError:  # 5.0: length instead of frame_end
        color = strips.new_effect(name="grade_note", type="COLOR", channel=2, frame_start=FRAME_START,
                                  length=FRAME_END - FRAME_START + 1)
    color.color = (0.8, 0.2, 0.1)
    color.blend_alpha = 0.4
    slate = strips.new_image(name="slate", filepath=plate, channel=1, frame_start=FRAME_START)
    slate.blend_type = "ALPHA_OVER"
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(folder, "shot.blend"))
    return bpy.data.scenes["sh010"]


def _snap(obj, max_depth: int = 3) -> dict:
    return rna_snapshot.snap(obj, SKIP, max_depth, digits=6)


def _fcurves(obj) -> list:
    ad = obj.animation_data
    if ad is None or ad.action is None:
        return []
    fcs = _compat().fcurves(ad.action, obj)
    return sorted((fc.data_path, fc.array_index, [tuple(round(c, 5) for c in k.co) for k in fc.keyframe_points])
                  for fc in fcs)


def files(folder: str, skip_under=()) -> dict:
    """sha1 of every file under ``folder`` (the artist's own files), except below the folders in ``skip_under``."""
    out = {}
    for root, _dirs, names in os.walk(folder):
        if any(os.path.abspath(root).startswith(os.path.abspath(s)) for s in skip_under):
            continue
        for n in names:
            p = os.path.join(root, n)
            if n.endswith(".blend1") or n == "shot.blend":
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder)] = hashlib.sha1(f.read()).hexdigest()[:12]
    return out


def snapshot(scene, artist_files: str = "", skip_under=()) -> dict:
    compat = _compat()
    se = scene.sequence_editor
    tree = compat.compositor_tree(scene)
    out = {
        "scene": {k: v for k, v in _snap(scene, max_depth=0).items()
                  if k not in ("sequence_editor", "view_layers", "collection", "timeline_markers")},
        "frame_current": scene.frame_current,
        "render": _snap(scene.render),
        "cycles": _snap(scene.cycles),
        "view_layers": [_snap(v, max_depth=2) for v in scene.view_layers],
        "active_view_layer": bpy.context.view_layer.name if bpy.context.view_layer else None,
        "display": _snap(scene.display_settings), "view": _snap(scene.view_settings),
        "world": _snap(scene.world, max_depth=1) if scene.world else None,
        "camera": scene.camera.name if scene.camera else None,
        "camera_data": _snap(scene.camera.data, max_depth=2) if scene.camera else None,
        "objects": {o.name: {"matrix": [round(x, 5) for row in o.matrix_world for x in row],
                             "loc": [round(x, 5) for x in o.location],
                             "modifiers": [_snap(m, max_depth=1) for m in o.modifiers],
                             "hide_render": o.hide_render, "pass_index": o.pass_index,
                             "collections": sorted(c.name for c in o.users_collection),
                             "fcurves": _fcurves(o)}
                    for o in scene.objects},
        "collections": sorted(c.name for c in scene.collection.children),
        "compositor": sorted(n.name for n in tree.nodes) if tree is not None and hasattr(tree, "nodes") else None,
        "strips": {s.name: _snap(s, max_depth=1) for s in (compat.all_strips(se) if se else [])
                   if not s.get("neurender")},
        "scenes": sorted(s.name for s in bpy.data.scenes),
    }
    if artist_files:
        out["files"] = files(artist_files, skip_under)
    return out


diff = rna_snapshot.diff
