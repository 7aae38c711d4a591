"""Show the live preview and the control images of the current frame in an Image Editor."""

import bpy

from .. import live, session


def _show_in_image_editor(context, image) -> bool:
    """Put ``image`` in an open Image Editor, if there is one (nothing happens in background mode)."""
    screen = getattr(context, "screen", None)
    for area in screen.areas if screen is not None else ():
        if area.type == "IMAGE_EDITOR":
            area.spaces.active.image = image
            return True
    return False


class NEURENDER_OT_show_preview(bpy.types.Operator):
    bl_idname = "neurender.show_preview"
    bl_label = "Show Preview"
    bl_description = "Show the live preview of the running neural render (the predicted frames of the latest " \
                     "denoising step) in an open Image Editor"

    def execute(self, context):
        image = bpy.data.images.get(live.PREVIEW_IMAGE)
        if image is None:
            self.report({"WARNING"}, "No preview yet: it appears after the first denoising step")
            return {"CANCELLED"}
        if not _show_in_image_editor(context, image):
            self.report({"INFO"}, f"Open an Image Editor and pick the image '{live.PREVIEW_IMAGE}'")
        return {"FINISHED"}


class NEURENDER_OT_show_controls(bpy.types.Operator):
    bl_idname = "neurender.show_controls"
    bl_label = "Show Control Images"
    bl_description = "Load the depth, normal and edge images the backend derived from the passes for the current " \
                     "frame (of the latest neural render) as images, to check what the ControlNets see"

    def execute(self, context):
        result = {}

        def shown(images, err) -> None:
            result.update(images=images, err=err)
            if err is not None:
                session.set_message("", session._artist_message(err) if hasattr(err, "kind") else str(err))
            else:
                if images:  # may run later (a remote backend): the context of the click is gone by then
                    _show_in_image_editor(bpy.context, images[0])
                session.set_message("Loaded " + ", ".join(i.name for i in images))

        session.show_control_images(context.scene, context.scene.frame_current, shown)
        if result.get("err") is not None:  # known at once (local files, or background mode)
            self.report({"ERROR"}, str(result["err"]))
            return {"CANCELLED"}
        if result.get("images"):
            self.report({"INFO"}, "Loaded " + ", ".join(i.name for i in result["images"]))
        return {"FINISHED"}
