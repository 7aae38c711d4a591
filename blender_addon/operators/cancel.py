"""Cancel: the backend stops the job at its next denoising step; finished frames stay."""

import bpy

from .. import session


class NEURENDER_OT_cancel(bpy.types.Operator):
    bl_idname = "neurender.cancel"
    bl_label = "Cancel"
    bl_description = "Stop the neural render at the next step (finished frames are kept)"

    @classmethod
    def poll(cls, context):
        from .. import neurender_contract as contract

        st = context.window_manager.neurender
        return bool(st.job_id) and st.job_state not in contract.JOB_FINAL_STATES

    def execute(self, context):
        if not session.cancel_job():
            self.report({"WARNING"}, "No neural render is running")
            return {"CANCELLED"}
        return {"FINISHED"}
