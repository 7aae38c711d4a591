"""Render the animation: in the UI an ordinary Render Animation with the hook on; headless, render and wait."""

import bpy

from .. import handlers, pass_export, preferences, properties, session
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
        if not bpy.app.background:
            # Blender's own render job (progress, Esc) writes the passes; the hook submits on completion.
            status = context.window_manager.neurender
            status.job_id, status.job_state, status.error = "", "rendering passes", ""
            if not scene.neurender.render_hook:
                scene.neurender.render_hook = True
            bpy.ops.render.render("INVOKE_DEFAULT", animation=True)
            return start_watch(self, context)
        try:
            with handlers.suspended():
                pass_export.export_passes(scene, scene.frame_start, scene.frame_end)
            session.submit_job(scene, scene.frame_start, scene.frame_end)
        except contract.ContractError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        status = context.window_manager.neurender
        if status.error:
            self.report({"ERROR"}, status.error)
            return {"CANCELLED"}
        return {"FINISHED"}
