"""Render the animation's passes (from a temporary scene, never the artist's render) after the pre-flight, and submit
them; the render hook setting is never changed."""

import bpy

from .. import advice, handlers, pass_export, pass_job, preferences, preflight, session
from .watch import start_watch


def render_and_submit(scene, frame_start: int, frame_end: int) -> None:
    """After the pre-flight (main thread): the passes of the range (a render job in the UI, Esc cancels), then the
    job."""
    with handlers.suspended():
        pass_job.render_then(scene, frame_start, frame_end, pass_export.pass_dir(scene),
                             lambda s, _manifest: session.submit_job(s, frame_start, frame_end),
                             f"The passes of frames {frame_start}-{frame_end}")


class NEURENDER_OT_render_animation(bpy.types.Operator):
    bl_idname = "neurender.render_animation"
    bl_label = "Render Animation"
    bl_description = "Render the passes of the scene's frame range and send them to the neural renderer"

    def execute(self, context):
        scene = context.scene
        first, last = scene.frame_start, scene.frame_end
        advice.report(self, context.scene, preferences.get(context))  # said, not refused
        error = preflight.run(scene, first, last, lambda s: render_and_submit(s, first, last))
        status = context.window_manager.neurender
        error = error or (status.error if bpy.app.background else "")  # background: everything ran inline
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return start_watch(self, context)
