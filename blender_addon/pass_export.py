"""Writing a pass folder: view-layer passes as one multilayer EXR per frame (render output) + ``manifest.json``.

The manifest (``contract.PassManifest``) carries per-frame camera matrices and pinhole intrinsics and ONE
depth range for the whole shot, taken from the evaluated bounding boxes of all renderable geometry in camera
space over every frame and clamped to the clip range; the backend normalises depth with it, so the depth
control never "breathes" from frame to frame.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile

import bpy

from . import camera_math, compat
from . import neurender_contract as contract

log = logging.getLogger(__name__)

PASS_PREFIX = "passes_"
RENDER_PATTERN = PASS_PREFIX + "####"


# -- folders ---------------------------------------------------------------------------------------------------

def output_root(scene) -> str:
    """Folder for this shot's files: the shot's output path, or the extension's user folder for unsaved files."""
    raw = scene.neurender.output_dir
    if raw and (not raw.startswith("//") or bpy.data.filepath):
        root = bpy.path.abspath(raw)
    else:
        base = bpy.utils.extension_path_user(__package__, path="renders", create=True)
        root = os.path.join(base, bpy.path.clean_name(scene.name))
    return os.path.abspath(root)


def pass_dir(scene) -> str:
    return os.path.join(output_root(scene), "passes")


def frames_dir(scene) -> str:
    return os.path.join(output_root(scene), "frames")


# -- scene setup -----------------------------------------------------------------------------------------------

def view_layer(scene):
    layer = getattr(bpy.context, "view_layer", None)
    if layer is not None and scene.view_layers.get(layer.name) is layer and layer.use:
        return layer
    for layer in scene.view_layers:
        if layer.use:
            return layer
    return scene.view_layers[0]


def enable_passes(scene) -> None:
    for layer in scene.view_layers:
        layer.use_pass_z = True
        layer.use_pass_normal = True
        layer.use_pass_vector = True
        if scene.render.engine == "CYCLES":
            layer.use_pass_object_index = True
    scene.render.use_motion_blur = False  # the vector pass is only written without motion blur


def configure_scene(scene, half: bool = False) -> None:
    """Point the render output at the pass folder (multilayer EXR) and enable the passes; keeps the artist's output."""
    s = scene.neurender
    r = scene.render
    target = os.path.join(pass_dir(scene), RENDER_PATTERN)
    if r.filepath != target and not s.saved_file_format:
        s.saved_filepath = r.filepath
        s.saved_file_format = r.image_settings.file_format
        s.saved_color_depth = r.image_settings.color_depth
        s.saved_use_sequencer = r.use_sequencer
    os.makedirs(pass_dir(scene), exist_ok=True)
    enable_passes(scene)
    compat.set_multilayer_exr(r.image_settings, half=half)
    r.filepath = target
    r.use_file_extension = True
    r.use_sequencer = False  # with strips in the VSE Blender would render those instead of the passes


def restore_scene(scene) -> None:
    """Give the render output back to the artist (their path and file format)."""
    s = scene.neurender
    r = scene.render
    if s.saved_file_format:
        compat.set_file_format(r.image_settings, s.saved_file_format)
        try:
            r.image_settings.color_depth = s.saved_color_depth
        except TypeError:
            pass
        r.filepath = s.saved_filepath
        r.use_sequencer = s.saved_use_sequencer
    s.saved_file_format = ""
    s.saved_filepath = ""
    s.saved_color_depth = ""


def is_configured(scene) -> bool:
    r = scene.render
    return (compat.is_multilayer_exr(r.image_settings) and not r.use_sequencer
            and os.path.normpath(bpy.path.abspath(r.filepath)) == os.path.normpath(os.path.join(pass_dir(scene),
                                                                                               RENDER_PATTERN)))


# -- manifest --------------------------------------------------------------------------------------------------

def render_size(scene) -> tuple[int, int]:
    r = scene.render
    return int(r.resolution_x * r.resolution_percentage / 100), int(r.resolution_y * r.resolution_percentage / 100)


def _matrix(m) -> list[list[float]]:
    return [[float(m[r][c]) for c in range(4)] for r in range(4)]


def frame_camera(scene) -> "contract.FrameCamera":
    """Camera of the current frame (call after ``scene.frame_set``)."""
    cam = scene.camera
    if cam is None:
        raise contract.ContractError(f"scene {scene.name!r} has no active camera")
    data = cam.data
    r = scene.render
    w, h = render_size(scene)
    fx, fy, cx, cy = camera_math.intrinsics(
        lens_mm=data.lens, sensor_width_mm=data.sensor_width, sensor_height_mm=data.sensor_height,
        sensor_fit=data.sensor_fit, width=w, height=h, pixel_aspect_x=r.pixel_aspect_x,
        pixel_aspect_y=r.pixel_aspect_y, shift_x=data.shift_x, shift_y=data.shift_y,
    )
    w2c = camera_math.rigid_inverse(_matrix(cam.matrix_world))
    return contract.FrameCamera(world_to_camera=w2c, fx=fx, fy=fy, cx=cx, cy=cy)


def _geometry_depths(scene, camera: "contract.FrameCamera") -> list[float]:
    """Nearest and farthest planar depth of every renderable evaluated object's bounding box inside the view."""
    data = scene.camera.data
    w, h = render_size(scene)
    intr = (camera.fx, camera.fy, camera.cx, camera.cy)
    w2c = camera.world_to_camera
    depsgraph = bpy.context.evaluated_depsgraph_get()
    depths = []
    for inst in depsgraph.object_instances:
        obj = inst.object
        if obj.type not in {"MESH", "CURVE", "SURFACE", "META", "FONT", "VOLUME", "CURVES", "POINTCLOUD"}:
            continue
        if obj.hide_render:
            continue
        corners = [tuple(c) for c in obj.bound_box]
        lo = [min(c[i] for c in corners) for i in range(3)]
        hi = [max(c[i] for c in corners) for i in range(3)]
        m = _matrix(inst.matrix_world)
        local_to_camera = [[sum(w2c[r][k] * m[k][c] for k in range(4)) for c in range(4)] for r in range(4)]
        found = camera_math.visible_box_depths(local_to_camera, lo, hi, intr, w, h, data.clip_start, data.clip_end)
        if found is not None:
            depths.extend(found)
    return depths


def frames_on_disk(folder: str, first: int, last: int) -> list[int]:
    pattern = re.compile(re.escape(PASS_PREFIX) + r"(-?\d+)\.exr$")
    found = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        m = pattern.match(name)
        if m and first <= int(m.group(1)) <= last:
            found.append(int(m.group(1)))
    return sorted(found)


def build_manifest(scene, folder: str, frame_start: int, frame_end: int) -> "contract.PassManifest":
    """Manifest for the EXRs of ``frame_start..frame_end`` present in ``folder`` (steps the scene's frames)."""
    frames = frames_on_disk(folder, frame_start, frame_end)
    on_disk = set(frames)
    if not frames:
        raise contract.ContractError(f"no pass files {PASS_PREFIX}NNNN.exr for frames {frame_start}-{frame_end} "
                                     f"in {folder}")
    cam = scene.camera
    if cam is None:
        raise contract.ContractError(f"scene {scene.name!r} has no active camera")
    layer = view_layer(scene).name
    current = scene.frame_current
    entries, depths = [], []
    try:
        for f in range(frame_start, frame_end + 1):
            scene.frame_set(f)
            camera = frame_camera(scene)
            depths.extend(_geometry_depths(scene, camera))
            if f in on_disk:
                entries.append(contract.FrameEntry(frame=f, file=contract.PASS_FILE_PATTERN.format(frame=f),
                                                   camera=camera))
    finally:
        scene.frame_set(current)
    data = cam.data
    passes = {"depth": f"{layer}.Depth", "normal": f"{layer}.Normal", "vector": f"{layer}.Vector",
              "combined": f"{layer}.Combined"}
    if scene.render.engine == "CYCLES":
        passes["object_index"] = compat.object_index_channel_prefix().replace("ViewLayer", layer, 1)
    w, h = render_size(scene)
    manifest = contract.PassManifest(
        frame_start=frames[0], frame_end=frames[-1],
        fps=scene.render.fps / scene.render.fps_base, width=w, height=h,
        clip_start=float(data.clip_start), clip_end=float(data.clip_end), passes=passes, frames=entries,
        depth_range=camera_math.depth_range(depths, data.clip_start, data.clip_end),
        scene=scene.name, camera_type=data.type, generator=f"neurender-blender {bpy.app.version_string}",
    )
    manifest.check()
    return manifest


def write_manifest(manifest: "contract.PassManifest", folder: str) -> str:
    """Write ``manifest.json`` atomically (temp file + rename)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, contract.MANIFEST_NAME)
    fd, tmp = tempfile.mkstemp(prefix=".manifest", dir=folder)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(manifest.to_json())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def read_manifest(folder: str) -> "contract.PassManifest":
    with open(os.path.join(folder, contract.MANIFEST_NAME), encoding="utf-8") as f:
        return contract.PassManifest.from_dict(json.load(f))


def export_passes(scene, frame_start: int, frame_end: int, half: bool = False) -> "contract.PassManifest":
    """Render ``frame_start..frame_end`` into the pass folder (blocking) and write its manifest.

    The scene's render output and frame range are restored afterwards unless the render hook owns them.
    ``half`` stores 16-bit floats (smaller files; depth keeps ~3 significant digits).
    """
    hooked = scene.neurender.render_hook
    old_range = scene.frame_start, scene.frame_end
    configure_scene(scene, half=half)
    folder = pass_dir(scene)
    for f in frames_on_disk(folder, frame_start, frame_end):  # never mix old and new passes
        os.remove(os.path.join(folder, contract.PASS_FILE_PATTERN.format(frame=f)))
    try:
        scene.frame_start, scene.frame_end = frame_start, frame_end
        with bpy.context.temp_override(scene=scene):
            bpy.ops.render.render(animation=True, scene=scene.name)
    finally:
        scene.frame_start, scene.frame_end = old_range
        if not hooked:
            restore_scene(scene)
    manifest = build_manifest(scene, folder, frame_start, frame_end)
    write_manifest(manifest, folder)
    log.info("pass folder %s: frames %d-%d, depth range %.3f..%.3f", folder, manifest.frame_start,
             manifest.frame_end, *manifest.depth_range)
    return manifest
