"""Render this frame: pre-flight, then the passes of the current frame (a short Cycles render), then the neural render."""

import bpy

from .. import advice, handlers, pass_export, pass_job, preferences, preflight, session
from .watch import start_watch


def render_and_submit(scene, frame: int) -> None:
    """After the pre-flight (main thread): the frame's passes (a render job in the UI, Esc cancels), then the job."""
    with handlers.suspended():
        pass_job.render_then(scene, frame, frame, pass_export.pass_dir(scene),
                             lambda s, _manifest: session.submit_job(s, frame, frame), f"The passes of frame {frame}")


class NEURENDER_OT_render_frame(bpy.types.Operator):
    bl_idname = "neurender.render_frame"
    bl_label = "Render This Frame"
    bl_description = "Render the passes of the current frame and send them to the neural renderer"

    def execute(self, context):
        frame = context.scene.frame_current
        advice.report(self, context.scene, preferences.get(context))  # said, not refused
        error = preflight.run(context.scene, frame, frame, lambda scene: render_and_submit(scene, frame))
        status = context.window_manager.neurender
        error = error or (status.error if bpy.app.background else "")  # background: everything ran inline
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return start_watch(self, context)
