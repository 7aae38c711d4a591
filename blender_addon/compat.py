"""Every difference between Blender 4.5 LTS and 5.0 that the add-on touches, in one place.

* EXR output: 4.5 ``image_settings.file_format = 'OPEN_EXR_MULTILAYER'``; 5.0 ``media_type = 'MULTI_LAYER_IMAGE'``
  first (``file_format`` only accepts the formats of the current media type: 'PNG' needs 'IMAGE' again).
* Compositor node tree: 4.5 ``scene.node_tree``; 5.0 ``scene.compositing_node_group``.
* VSE: 4.5 has ``sequence_editor.strips`` and ``.sequences``; 5.0 only ``.strips``.
* Keyframes: ``action.fcurves`` is gone in 5.0; use the channelbag of the action slot.
* Object index channel: ``IndexOB`` (4.5) or ``Object Index`` (5.0).
* Materials and worlds always have a node tree in 5.0 (``use_nodes`` is deprecated there).
* ``sequence_editor.strips.new_effect``: 4.5 takes ``frame_end``, 5.0 ``length`` (the add-on only adds image strips).
* 5.0's File Output node drops W of a VECTOR input; the add-on never uses File Output nodes, it renders the
  view-layer passes straight into a multilayer EXR, which keeps all four Vector channels on both versions.
"""

from __future__ import annotations

import bpy


def blender_major_minor() -> tuple[int, int]:
    return bpy.app.version[0], bpy.app.version[1]


def is_5x() -> bool:
    return bpy.app.version[0] >= 5


def set_multilayer_exr(image_settings, *, half: bool = False) -> None:
    """Make ``image_settings`` write one multilayer OpenEXR per frame (all view-layer passes)."""
    if hasattr(image_settings, "media_type"):
        image_settings.media_type = "MULTI_LAYER_IMAGE"
    image_settings.file_format = "OPEN_EXR_MULTILAYER"
    image_settings.color_depth = "16" if half else "32"
    image_settings.exr_codec = "ZIP"


def set_file_format(image_settings, file_format: str) -> None:
    """Set ``file_format`` (e.g. the artist's saved 'PNG'); 5.0 first needs the matching ``media_type``."""
    if hasattr(image_settings, "media_type"):
        media = {"OPEN_EXR_MULTILAYER": "MULTI_LAYER_IMAGE", "FFMPEG": "VIDEO"}.get(file_format, "IMAGE")
        image_settings.media_type = media
    image_settings.file_format = file_format


def is_multilayer_exr(image_settings) -> bool:
    return image_settings.file_format == "OPEN_EXR_MULTILAYER"


def compositor_tree(scene):
    """The scene's compositor node tree, or None."""
    if hasattr(scene, "compositing_node_group"):
        return scene.compositing_node_group
    return getattr(scene, "node_tree", None)


def strips(sequence_editor):
    """The top-level strips collection of a sequence editor (``.strips`` on both versions when present)."""
    if hasattr(sequence_editor, "strips"):
        return sequence_editor.strips
    return sequence_editor.sequences


def all_strips(sequence_editor):
    if hasattr(sequence_editor, "strips_all"):
        return sequence_editor.strips_all
    return sequence_editor.sequences_all


def object_index_channel_prefix() -> str:
    return "ViewLayer.Object Index" if is_5x() else "ViewLayer.IndexOB"


def fcurves(action, obj=None):
    """The F-curves of ``action`` (4.x: ``action.fcurves``; 5.0: the channelbag of the object's slot)."""
    if not is_5x() and hasattr(action, "fcurves"):
        return action.fcurves
    from bpy_extras import anim_utils

    slot = obj.animation_data.action_slot if obj is not None and obj.animation_data else action.slots[0]
    bag = anim_utils.action_get_channelbag_for_slot(action, slot)
    return bag.fcurves if bag is not None else []


def set_linear_interpolation(obj) -> None:
    """Make every keyframe of ``obj``'s action linear (for motion that is exactly known in tests and demos)."""
    ad = obj.animation_data
    if ad is None or ad.action is None:
        return
    for fc in fcurves(ad.action, obj):
        for kp in fc.keyframe_points:
            kp.interpolation = "LINEAR"


def use_nodes(id_block) -> None:
    """Give a material or world its node tree (4.5: ``use_nodes = True``; 5.0: it always has one)."""
    if not is_5x():
        id_block.use_nodes = True


def set_movie_output(render) -> None:
    """H.264 in an MP4 container (4.5: file_format 'FFMPEG'; 5.0 additionally media_type 'VIDEO')."""
    ims = render.image_settings
    if hasattr(ims, "media_type"):
        ims.media_type = "VIDEO"
    ims.file_format = "FFMPEG"
    render.ffmpeg.format = "MPEG4"
    render.ffmpeg.codec = "H264"
    render.ffmpeg.constant_rate_factor = "HIGH"
