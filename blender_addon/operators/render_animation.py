"""Render the animation's passes (from a temporary scene, never the artist's render) after the pre-flight, and submit
them; the render hook setting is never changed."""

import bpy

from .. import advice, handlers, pass_export, preferences, preflight, session
from .. import neurender_contract as contract
from .watch import start_watch


def render_and_submit(scene, frame_start: int, frame_end: int) -> None:
    """After the pre-flight (main thread): the passes of the range, then the job; failures become the status."""
    try:
        with handlers.suspended():
            pass_export.export_passes(scene, frame_start, frame_end)
        session.submit_job(scene, frame_start, frame_end)
    except (contract.ContractError, OSError, RuntimeError) as exc:
        session.set_message("", str(exc))


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
