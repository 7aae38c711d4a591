"""Render the animation's passes (from a temporary scene, never the artist's render) and submit them; the render hook
setting is never changed."""

import bpy

from .. import advice, handlers, pass_export, preferences, properties, session
from .. import neurender_contract as contract
from .watch import start_watch


class NEURENDER_OT_render_animation(bpy.types.Operator):
    bl_idname = "neurender.render_animation"
    bl_label = "Render Animation"
    bl_description = "Render the passes of the scene's frame range and send them to the neural renderer"

    def execute(self, context):
        scene = context.scene
        try:
            properties.to_settings(scene, preferences.get(context))
        except contract.ContractError as exc:
            self.report({"ERROR"}, f"Bad settings: {exc}")
            return {"CANCELLED"}
        advice.report(self, scene, preferences.get(context))  # random weights, no ControlNet...: said, not refused
        try:
            with handlers.suspended():
                pass_export.export_passes(scene, scene.frame_start, scene.frame_end)
            session.submit_job(scene, scene.frame_start, scene.frame_end)
        except (contract.ContractError, OSError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        status = context.window_manager.neurender
        if bpy.app.background and status.error:
            self.report({"ERROR"}, status.error)
            return {"CANCELLED"}
        return start_watch(self, context)
