"""Neural frames back into Blender: an image-sequence strip in the VSE on a free channel.

The strip starts at the first rendered frame number, so it lines up with the scene's frame range. Our strips are
tagged with a custom property holding the render's version; a newer animation render replaces the strip of older
versions (on the same channel), never the artist's other strips. A single-frame render never touches the sequencer:
it becomes an image (``load_frame_image``), shown in an open Image Editor. Folders are stored relative to the
.blend (``//``) where they lie under it, so a moved project still finds its frames.
"""

from __future__ import annotations

import logging
import os

import bpy

from . import compat, pass_export
from . import neurender_contract as contract

log = logging.getLogger(__name__)

TAG = "neurender"
STRIP_NAME = "neurender"


def result_frames(folder: str) -> list[int]:
    """Frame numbers of ``frame_NNNN.png`` files in ``folder``, sorted."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(f for f in map(contract.frame_number, names) if f is not None)


def our_strips(scene) -> list:
    se = scene.sequence_editor
    if se is None:
        return []
    return [s for s in compat.all_strips(se) if s.get(TAG)]


def free_channel(scene, start: int, end: int, exclude=()) -> int:
    """Lowest channel with no strip overlapping ``start..end`` (inclusive), ignoring strips in ``exclude``."""
    se = scene.sequence_editor
    busy = set()
    if se is not None:
        for s in compat.strips(se):
            if s in exclude:
                continue
            if s.frame_final_start <= end and s.frame_final_end > start:
                busy.add(s.channel)
    channel = 1
    while channel in busy:
        channel += 1
    return channel


def _held_names(frames: list[int]) -> list[str]:
    """File name shown at every frame of ``frames[0]..frames[-1]`` (sorted): a missing frame holds the previous one."""
    present = set(frames)
    names, last = [], frames[0]
    for f in range(frames[0], frames[-1] + 1):
        if f in present:
            last = f
        names.append(contract.FRAME_FILE_PATTERN.format(frame=last))
    return names


def place_result(scene, folder: str, frames: list[int] | None = None, version: int | None = None):
    """Add the neurender image strip of ``version`` for the frames in ``folder``, replacing our strips of that and
    older versions (all of ours when ``version`` is None); returns the strip."""
    frames = sorted(frames if frames is not None else result_frames(folder))
    if not frames:
        raise contract.ContractError(f"no neural frames (frame_NNNN.png) found in {folder}")
    se = scene.sequence_editor or scene.sequence_editor_create()
    old = [s for s in our_strips(scene) if version is None or _version_of(s) <= version]
    keep = old[0].channel if old else None
    # With Post Processing > Sequencer on, any unmuted strip becomes the scene's render output: ours is added muted so
    # the artist's next F12 / Ctrl+F12 renders what it rendered before (an artist who unmuted our strip keeps that).
    mute = bool(scene.render.use_sequencer) and (old[0].mute if old else True)
    for s in old:
        compat.strips(se).remove(s)
    busy = {s.channel for s in compat.strips(se)
            if s.frame_final_start <= frames[-1] and s.frame_final_end > frames[0]}
    channel = keep if keep is not None and keep not in busy else free_channel(scene, frames[0], frames[-1])
    first = os.path.join(folder, contract.FRAME_FILE_PATTERN.format(frame=frames[0]))
    name = f"{STRIP_NAME} v{version:03d}" if version else STRIP_NAME
    # FILL: frames a few pixels smaller than the render (multiples of 8, Fit within) still cover the whole canvas
    strip = compat.strips(se).new_image(name=name, filepath=first, channel=channel, frame_start=frames[0],
                                        fit_method="FILL")
    _relative_directory(strip, folder)
    expected = list(range(frames[0], frames[-1] + 1))
    if frames != expected:
        log.warning("neural frames %s are not contiguous; missing frames hold the previous image", frames)
    for name in _held_names(frames)[1:]:
        strip.elements.append(name)
    strip[TAG] = version or 1
    strip.mute = mute
    log.info("neurender strip on channel %d, frames %d-%d", channel, frames[0], frames[-1])
    return strip


def _version_of(strip) -> int:
    try:
        return int(strip.get(TAG) or 0)
    except (TypeError, ValueError):
        return 1


def _relative_directory(strip, folder: str) -> None:
    rel = pass_export.to_blend_path(folder)
    if rel.startswith("//"):
        strip.directory = rel.rstrip("/") + "/"


def load_frame_image(path: str, name: str):
    """A single neural frame as an image datablock (never a strip), shown in an open Image Editor; returns it."""
    img = bpy.data.images.load(path, check_existing=False)
    img.name = name
    img.use_fake_user = True  # kept in the .blend although no editor shows it
    rel = pass_export.to_blend_path(path)
    if rel.startswith("//"):
        img.filepath = rel
    wm = bpy.context.window_manager
    for window in (wm.windows if wm is not None else ()):
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = img
                area.tag_redraw()
                return img
    return img


def write_movie(scene, folder: str, frames: list[int], path: str) -> str:
    """Encode the neural frames as an H.264 MP4 at the scene's frame rate, via a temporary scene's sequencer."""
    frames = sorted(frames)
    if not frames:
        raise contract.ContractError(f"no neural frames to write a movie from in {folder}")
    tmp = bpy.data.scenes.new("neurender_movie")
    try:
        first = os.path.join(folder, contract.FRAME_FILE_PATTERN.format(frame=frames[0]))
        img = bpy.data.images.load(first, check_existing=False)
        width, height = img.size
        bpy.data.images.remove(img)
        r = tmp.render
        r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
        r.fps, r.fps_base = scene.render.fps, scene.render.fps_base
        tmp.frame_start, tmp.frame_end = frames[0], frames[-1]
        se = tmp.sequence_editor_create()
        strip = compat.strips(se).new_image(name="frames", filepath=first, channel=1, frame_start=frames[0])
        for name in _held_names(frames)[1:]:
            strip.elements.append(name)
        r.use_sequencer = True
        compat.set_movie_output(r)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        r.filepath = path
        r.use_file_extension = False
        bpy.ops.render.render(animation=True, scene=tmp.name)
    finally:
        bpy.data.scenes.remove(tmp)
    if not os.path.isfile(path):
        raise RuntimeError(f"the movie {path} was not written")
    return path
