"""Render this frame: pre-flight, then the passes of the current frame (a short Cycles render), then the neural render."""

import bpy

from .. import advice, handlers, pass_export, preferences, preflight, session
from .. import neurender_contract as contract
from .watch import start_watch


def render_and_submit(scene, frame: int) -> None:
    """After the pre-flight (main thread): the frame's passes, then the job; failures become the status report."""
    try:
        with handlers.suspended():
            pass_export.export_passes(scene, frame, frame)
    except (contract.ContractError, OSError, RuntimeError) as exc:  # e.g. the render itself failed
        session.set_message("", f"The passes of frame {frame} could not be rendered: {exc}")
        return
    try:
        session.submit_job(scene, frame, frame)
    except contract.ContractError as exc:
        session.set_message("", f"Bad settings: {exc}")


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
