"""Render this frame: passes of the current frame (a short blocking Cycles render), then the neural render."""

import bpy

from .. import advice, handlers, pass_export, preferences, properties, session
from .. import neurender_contract as contract
from .watch import start_watch


class NEURENDER_OT_render_frame(bpy.types.Operator):
    bl_idname = "neurender.render_frame"
    bl_label = "Render This Frame"
    bl_description = "Render the passes of the current frame and send them to the neural renderer"

    def execute(self, context):
        scene = context.scene
        frame = scene.frame_current
        try:
            properties.to_settings(scene, preferences.get(context))  # bad settings stop us before rendering
        except contract.ContractError as exc:
            self.report({"ERROR"}, f"Bad settings: {exc}")
            return {"CANCELLED"}
        advice.report(self, scene, preferences.get(context))  # random weights, no ControlNet...: said, not refused
        try:
            with handlers.suspended():
                pass_export.export_passes(scene, frame, frame)
        except (contract.ContractError, OSError, RuntimeError) as exc:  # no camera, unwritable output, render failed
            self.report({"ERROR"}, f"The passes of frame {frame} could not be rendered: {exc}")
            return {"CANCELLED"}
        try:
            session.submit_job(scene, frame, frame)
        except contract.ContractError as exc:
            self.report({"ERROR"}, f"Bad settings: {exc}")
            return {"CANCELLED"}
        status = context.window_manager.neurender
        if bpy.app.background and status.error:  # the blocking submit already failed
            self.report({"ERROR"}, status.error)
            return {"CANCELLED"}
        return start_watch(self, context)
