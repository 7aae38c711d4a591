"""Writing a pass folder: view-layer passes as one multilayer EXR per frame + ``manifest.json``.

The artist's scene is never changed. The passes are rendered from a temporary scene (``make_pass_scene``) that
links the artist's collections and objects (no copies: the same animation, modifiers and materials) and carries
neurender's own render settings: Cycles, the passes enabled on its own view layer, no motion blur (the vector pass
needs it off), a multilayer EXR output into the pass folder, no compositor, no sequencer. The temporary scene is
removed afterwards, whatever happens.

Depth, normal, vector and object index need no light transport, so by default the temporary scene renders with a
pass-only configuration (``FAST``: 1 sample, no bounces, no denoising, a 0.01 px pixel filter so every pass is
read at the pixel centre). Only when restyle (img2img) needs the beauty (Combined) pass does it render at the
artist's own Cycles settings.

The manifest (``contract.PassManifest``) carries per-frame camera matrices and pinhole intrinsics and ONE
depth range for the whole shot, taken from the evaluated bounding boxes of all renderable geometry in camera
space over every frame and clamped to the clip range; the backend normalises depth with it, so the depth
control never "breathes" from frame to frame. It is evaluated on the temporary scene's own depsgraph, so the
artist's current frame is never stepped.

Every render writes its own versioned folders (``passes/v003``, ``frames/v003``), so a second render never touches
the files of a job that is still running and a single frame never replaces the animation's frames.
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
PASS_SCENE_TAG = "neurender_pass_scene"
"""Custom property on the temporary pass scene: the render hook ignores renders of scenes carrying it."""
VERSION_PATTERN = re.compile(r"^v(\d{3,})$")

FAST = {"samples": 1, "use_adaptive_sampling": False, "use_denoising": False, "max_bounces": 0,
        "diffuse_bounces": 0, "glossy_bounces": 0, "transmission_bounces": 0, "volume_bounces": 0,
        "transparent_max_bounces": 0, "caustics_reflective": False, "caustics_refractive": False,
        "pixel_filter_width": 0.01, "use_light_tree": False}
"""Cycles settings of the pass-only render: the passes need one camera ray per pixel and no light transport."""


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


def version_name(version: int) -> str:
    return f"v{version:03d}"


def pass_dir(scene, version: int = 0) -> str:
    """The pass folder of ``version`` (``passes/v003``); version 0 is the plain ``passes`` folder of scripts."""
    base = os.path.join(output_root(scene), "passes")
    return os.path.join(base, version_name(version)) if version else base


def frames_dir(scene, version: int = 0) -> str:
    base = os.path.join(output_root(scene), "frames")
    return os.path.join(base, version_name(version)) if version else base


def versions_on_disk(scene) -> list[int]:
    found = set()
    for sub in ("passes", "frames"):
        folder = os.path.join(output_root(scene), sub)
        for name in os.listdir(folder) if os.path.isdir(folder) else []:
            m = VERSION_PATTERN.match(name)
            if m:
                found.add(int(m.group(1)))
    return sorted(found)


def next_version(scene, taken=()) -> int:
    """One more than any version on disk or in ``taken`` (the versions of the scene's job records)."""
    return max([0, *versions_on_disk(scene), *taken]) + 1


def to_blend_path(path: str, blend_path: str = "") -> str:
    """``path`` relative to the saved .blend (``//...``) when it lies under the .blend's folder, so a moved project
    still finds its files; otherwise (unsaved file, another drive, the extension's own folder) absolute."""
    blend = blend_path or bpy.data.filepath
    if not path or not blend or path.startswith("//"):
        return path
    path = os.path.abspath(path)
    base = os.path.dirname(os.path.abspath(blend))
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return path
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return path
    return "//" + ("" if rel == os.curdir else rel.replace(os.sep, "/"))


def from_blend_path(path: str) -> str:
    """An absolute path for ``path`` (``//`` resolved against where the .blend is now)."""
    return os.path.abspath(bpy.path.abspath(path)) if path else ""


# -- the temporary pass scene ----------------------------------------------------------------------------------

def view_layer(scene):
    layer = getattr(bpy.context, "view_layer", None)
    if layer is not None and scene.view_layers.get(layer.name) is layer and layer.use:
        return layer
    for layer in scene.view_layers:
        if layer.use:
            return layer
    return scene.view_layers[0]


def needs_beauty(scene) -> bool:
    """Restyle (keyframes mode with an img2img strength) starts from the beauty render: the Combined pass."""
    s = scene.neurender
    return s.consistency == "keyframes" and s.img2img_strength > 0


def copy_rna(src, dst, skip=()) -> None:
    """Copy every writable plain property of ``src`` to ``dst`` (same RNA type), recursing into nested structs."""
    for prop in src.bl_rna.properties:
        name = prop.identifier
        if name in skip or name == "rna_type":
            continue
        if prop.type == "POINTER":
            if prop.is_readonly and not isinstance(getattr(src, name, None), bpy.types.ID):
                sub_src, sub_dst = getattr(src, name, None), getattr(dst, name, None)
                if sub_src is not None and sub_dst is not None and not isinstance(sub_src, bpy.types.ID):
                    copy_rna(sub_src, sub_dst)
            continue
        if prop.type == "COLLECTION" or prop.is_readonly:
            continue
        try:
            setattr(dst, name, getattr(src, name))
        except (AttributeError, TypeError, ValueError, RuntimeError):
            pass  # depends on another setting (e.g. an enum item of another media type): keep the default


def _mirror_layer_collections(src, dst) -> None:
    """Excluded / holdout / indirect-only collections of the artist's view layer, on the pass scene's layer."""
    by_name = {c.name: c for c in dst.children}
    for child in src.children:
        twin = by_name.get(child.name)
        if twin is None:
            continue
        for attr in ("exclude", "holdout", "indirect_only"):
            try:
                setattr(twin, attr, getattr(child, attr))
            except (AttributeError, TypeError):
                pass
        _mirror_layer_collections(child, twin)


def make_pass_scene(scene, frame_start: int, frame_end: int, folder: str, fast: bool = True, half: bool = False):
    """A temporary scene linking ``scene``'s objects, set up to render the passes of ``frame_start..frame_end``
    into ``folder``; remove it with ``remove_pass_scene``. ``scene`` itself is only read."""
    if scene.camera is None:
        raise contract.ContractError(f"scene {scene.name!r} has no active camera")
    tmp = bpy.data.scenes.new(f"neurender passes ({scene.name})")
    try:
        tmp[PASS_SCENE_TAG] = scene.name
        for child in scene.collection.children:
            tmp.collection.children.link(child)
        for obj in scene.collection.objects:
            tmp.collection.objects.link(obj)
        copies = {}
        tmp.camera = _pinhole(scene.camera, tmp, copies)
        for m in scene.timeline_markers:  # camera cuts: the pass scene switches cameras where the artist's does
            twin = tmp.timeline_markers.new(m.name, frame=m.frame)
            if m.camera is not None:
                twin.camera = _pinhole(m.camera, tmp, copies)
        tmp.world = scene.world
        tmp.background_set = scene.background_set
        r = tmp.render
        r.engine = "CYCLES"  # the only engine with every pass (EEVEE has no object index, Workbench only depth)
        copy_rna(scene.render, r, skip={"engine", "filepath", "image_settings", "use_sequencer", "use_compositing",
                                        "use_motion_blur", "use_border", "use_crop_to_border", "use_multiview",
                                        "use_stamp", "use_file_extension", "use_overwrite", "use_placeholder",
                                        "views", "ffmpeg", "bake", "use_single_layer", "use_persistent_data"})
        copy_rna(scene.cycles, tmp.cycles, skip={"preview_pause"})
        if fast:
            for name, value in FAST.items():
                if hasattr(tmp.cycles, name):
                    setattr(tmp.cycles, name, value)
            r.use_persistent_data = True  # geometry stays loaded between frames
        r.use_motion_blur = False  # the vector pass is only written without motion blur
        r.use_sequencer = False
        r.use_compositing = False
        r.use_border = False
        r.use_file_extension = True
        r.use_overwrite = True
        r.use_placeholder = False
        compat.set_multilayer_exr(r.image_settings, half=half)
        r.filepath = os.path.join(folder, RENDER_PATTERN)
        tmp.frame_start, tmp.frame_end, tmp.frame_step = frame_start, frame_end, 1
        tmp.frame_set(frame_start)
        layer = tmp.view_layers[0]
        layer.name = view_layer(scene).name
        for name in ("use_pass_z", "use_pass_normal", "use_pass_vector", "use_pass_object_index"):
            setattr(layer, name, True)
        _mirror_layer_collections(view_layer(scene).layer_collection, layer.layer_collection)
    except BaseException:
        remove_pass_scene(tmp)
        raise
    return tmp


PASS_CAMERA_TAG = "neurender_pass_camera"


def _pinhole(cam, tmp, copies: dict):
    """A copy of the artist's camera object for the pass scene with depth of field off (the passes are one camera
    ray per pixel through a pinhole); it shares the camera's animation, parent and constraints."""
    if cam.name not in copies:
        twin = cam.copy()
        twin.data = cam.data.copy()
        twin.data.dof.use_dof = False
        twin[PASS_CAMERA_TAG] = True
        tmp.collection.objects.link(twin)
        copies[cam.name] = twin
    return copies[cam.name]


def remove_pass_scene(tmp) -> None:
    """Remove the temporary scene, after freeing the render engine it kept for persistent data.

    With ``use_persistent_data`` the engine (Cycles) outlives the render together with its own depsgraph, which
    stays registered with ``bpy.data`` and points at this scene. Removing the scene first leaves that depsgraph
    dangling: the next relations update (adding a sequencer strip, linking an object) reads the freed scene and
    crashes Blender intermittently (seen as exit -11 under bpy 5.0.1). Turning the option off frees the engine
    (its RNA update calls ``RE_FreePersistentData`` for this scene)."""
    try:
        if tmp.render.use_persistent_data:
            tmp.render.use_persistent_data = False
        cameras = [o for o in tmp.collection.objects if o.get(PASS_CAMERA_TAG)]
        bpy.data.scenes.remove(tmp, do_unlink=True)
        for obj in cameras:
            data = obj.data
            bpy.data.objects.remove(obj, do_unlink=True)
            if data is not None and data.users == 0:
                bpy.data.cameras.remove(data)
    except ReferenceError:  # already gone
        pass


def is_pass_scene(scene) -> bool:
    return scene is not None and scene.get(PASS_SCENE_TAG) is not None


# -- manifest --------------------------------------------------------------------------------------------------

def render_size(scene) -> tuple[int, int]:
    r = scene.render
    return int(r.resolution_x * r.resolution_percentage / 100), int(r.resolution_y * r.resolution_percentage / 100)


def _matrix(m) -> list[list[float]]:
    return [[float(m[r][c]) for c in range(4)] for r in range(4)]


def _depsgraph(scene):
    layer = scene.view_layers[0] if is_pass_scene(scene) else view_layer(scene)
    return layer.depsgraph


def frame_camera(scene, depsgraph=None) -> "contract.FrameCamera":
    """Camera of the current frame (call after ``scene.frame_set``), evaluated in ``scene``'s depsgraph."""
    if scene.camera is None:
        raise contract.ContractError(f"scene {scene.name!r} has no active camera")
    depsgraph = depsgraph or _depsgraph(scene)
    cam = scene.camera.evaluated_get(depsgraph)
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


def _geometry_depths(scene, camera: "contract.FrameCamera", depsgraph) -> list[float]:
    """Nearest and farthest planar depth of every renderable evaluated object's bounding box inside the view."""
    data = scene.camera.evaluated_get(depsgraph).data
    w, h = render_size(scene)
    intr = (camera.fx, camera.fy, camera.cx, camera.cy)
    w2c = camera.world_to_camera
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
    names = os.listdir(folder) if os.path.isdir(folder) else []
    numbers = (contract.frame_number(name, contract.PASS_FILE_PATTERN) for name in names)
    return sorted(f for f in numbers if f is not None and first <= f <= last)


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
    layer = (scene.view_layers[0] if is_pass_scene(scene) else view_layer(scene)).name
    depsgraph = _depsgraph(scene)
    current = scene.frame_current
    entries, depths = [], []
    try:
        for f in range(frame_start, frame_end + 1):
            scene.frame_set(f)
            camera = frame_camera(scene, depsgraph)
            depths.extend(_geometry_depths(scene, camera, depsgraph))
            if f in on_disk:
                entries.append(contract.FrameEntry(frame=f, file=contract.PASS_FILE_PATTERN.format(frame=f),
                                                   camera=camera))
    finally:
        scene.frame_set(current)
    data = cam.data
    passes = {"depth": f"{layer}.Depth", "normal": f"{layer}.Normal", "vector": f"{layer}.Vector",
              "combined": f"{layer}.Combined"}
    if scene.render.engine == "CYCLES" or is_pass_scene(scene):
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


def export_passes(scene, frame_start: int, frame_end: int, half: bool = False, folder: str = "",
                  fast=None) -> "contract.PassManifest":
    """Render ``frame_start..frame_end`` into ``folder`` (default: the scene's plain ``passes`` folder), blocking,
    from a temporary pass scene, and write its manifest. ``scene`` is left exactly as it was.

    ``half`` stores 16-bit floats (smaller files; depth keeps ~3 significant digits). ``fast`` (default: unless
    restyle needs the beauty pass) renders with the pass-only Cycles settings.
    """
    folder = folder or pass_dir(scene)
    fast = (not needs_beauty(scene)) if fast is None else fast
    prepare_folder(folder, frame_start, frame_end)
    tmp = make_pass_scene(scene, frame_start, frame_end, folder, fast=fast, half=half)
    try:
        with bpy.context.temp_override(scene=tmp):
            bpy.ops.render.render(animation=True, scene=tmp.name, layer=tmp.view_layers[0].name)
        manifest = finish_passes(tmp, folder, frame_start, frame_end)
    finally:
        remove_pass_scene(tmp)
    return manifest


def prepare_folder(folder: str, frame_start: int, frame_end: int) -> None:
    """Create ``folder`` and remove its pass files of the range: old and new passes are never mixed."""
    os.makedirs(folder, exist_ok=True)
    for f in frames_on_disk(folder, frame_start, frame_end):
        os.remove(os.path.join(folder, contract.PASS_FILE_PATTERN.format(frame=f)))


def finish_passes(tmp, folder: str, frame_start: int, frame_end: int) -> "contract.PassManifest":
    """After the pass scene ``tmp`` rendered: its manifest, written into ``folder``."""
    manifest = build_manifest(tmp, folder, frame_start, frame_end)
    manifest.scene = tmp.get(PASS_SCENE_TAG) or manifest.scene
    write_manifest(manifest, folder)
    log.info("pass folder %s: frames %d-%d, depth range %.3f..%.3f", folder, manifest.frame_start,
             manifest.frame_end, *manifest.depth_range)
    return manifest
