"""Render the animation's passes (from a temporary scene, never the artist's render) after the pre-flight, and submit
them; the render hook setting is never changed."""

import bpy

from .. import advice, handlers, jobs, pass_job, preferences, preflight, session
from .watch import start_watch


def render_and_submit(scene, frame_start: int, frame_end: int, settings) -> None:
    """After the pre-flight (main thread): the passes of the range (a render job in the UI, Esc cancels), then the
    job."""
    key = jobs.new(scene, frame_start, frame_end)  # its own versioned pass and frame folders
    with handlers.suspended():
        pass_job.render_then(scene, frame_start, frame_end, jobs.find(key=key)[1].abs_pass_dir,
                             lambda s, _manifest: session.submit_job(s, frame_start, frame_end, key=key,
                                                                           settings=settings),
                             f"The passes of frames {frame_start}-{frame_end}", key=key)


class NEURENDER_OT_render_animation(bpy.types.Operator):
    bl_idname = "neurender.render_animation"
    bl_label = "Render Animation"
    bl_description = "Render the passes of the scene's frame range and send them to the neural renderer"

    def execute(self, context):
        scene = context.scene
        first, last = scene.frame_start, scene.frame_end
        advice.report(self, context.scene, preferences.get(context))  # said, not refused
        error = preflight.run(scene, first, last, lambda s, settings: render_and_submit(s, first, last, settings))
        status = context.window_manager.neurender
        error = error or (status.error if bpy.app.background else "")  # background: everything ran inline
        if error:
            self.report({"ERROR"}, error)
            return {"CANCELLED"}
        return start_watch(self, context)
