"""Free VRAM: the backend unloads its models (the next render loads them again)."""

import bpy

from .. import session


class NEURENDER_OT_free_vram(bpy.types.Operator):
    bl_idname = "neurender.free_vram"
    bl_label = "Free VRAM"
    bl_description = "Make the backend unload its models and free the GPU memory they hold (the next render " \
                     "loads them again)"

    def execute(self, context):
        session.free_vram()
        st = context.window_manager.neurender
        if st.error:
            self.report({"ERROR"}, st.error)
            return {"CANCELLED"}
        return {"FINISHED"}
