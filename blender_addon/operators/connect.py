"""Connect: start the local backend if configured, then check the backend's version."""

import bpy

from .. import session


class NEURENDER_OT_connect(bpy.types.Operator):
    bl_idname = "neurender.connect"
    bl_label = "Connect"
    bl_description = "Start or find the neurender backend and check that its version matches"

    def execute(self, context):
        result = {}
        session.connect(on_done=lambda info, err: result.update(info=info, err=err))
        err = result.get("err")
        if err is not None:  # known at once in background mode (or when starting failed)
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        if result.get("info"):
            self.report({"INFO"}, context.window_manager.neurender.message)
        return {"FINISHED"}
