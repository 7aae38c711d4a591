"""Render this frame: pre-flight, then the passes of the current frame (a short Cycles render), then the neural render."""

import bpy

from .. import advice, handlers, jobs, pass_job, preferences, preflight, session
from .watch import start_watch


def render_and_submit(scene, frame: int, settings) -> None:
    """After the pre-flight (main thread): the frame's passes (a render job in the UI, Esc cancels), then the job."""
    key = jobs.new(scene, frame, frame, kind=jobs.KIND_FRAME)  # its own version: never the animation's files or strip
    with handlers.suspended():
        pass_job.render_then(scene, frame, frame, jobs.find(key=key)[1].abs_pass_dir,
                             lambda s, _manifest: session.submit_job(s, frame, frame, key=key, settings=settings),
                             f"The passes of frame {frame}", key=key)


class NEURENDER_OT_render_frame(bpy.types.Operator):
    bl_idname = "neurender.render_frame"
    bl_label = "Render This Frame"
    bl_description = "Render the passes of the current frame and send them to the neural renderer"

    def execute(self, context):
        frame = context.scene.frame_current
        advice.report(self, context.scene, preferences.get(context))  # said, not refused
        error = preflight.run(context.scene, frame, frame, lambda scene, settings: render_and_submit(scene, frame, settings))
        status = context.window_manager.neurender
        error = error or (status.error if bpy.app.background else "")  # background: everything ran inline
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return start_watch(self, context)
