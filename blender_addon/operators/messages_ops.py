"""Copy Message and Open Log: the full text of the latest error, and the local backend's log."""

import os

import bpy

from .. import session


class NEURENDER_OT_copy_message(bpy.types.Operator):
    bl_idname = "neurender.copy_message"
    bl_label = "Copy Message"
    bl_description = "Copy the full text of the latest neural render message to the clipboard (for a bug report)"

    def execute(self, context):
        st = context.window_manager.neurender
        text = st.error_detail if st.error_detail and st.error_detail not in st.error else ""
        full = st.error + (f"\n\nDetails: {text}" if text else "") if st.error else st.message
        context.window_manager.clipboard = full
        st.copied = full  # what went to the clipboard (headless Blender has no clipboard to read it back from)
        self.report({"INFO"}, "Message copied to the clipboard")
        return {"FINISHED"}


class NEURENDER_OT_open_log(bpy.types.Operator):
    bl_idname = "neurender.open_log"
    bl_label = "Open Log"
    bl_description = "Open the log of the local backend started by Blender (a backend on another computer keeps " \
                     "its log there)"

    def execute(self, context):
        path = session.state().local.log_path
        if not path or not os.path.isfile(path):
            self.report({"WARNING"}, "No local backend log: the backend runs on its own, so its log is where it "
                                     "was started")
            return {"CANCELLED"}
        return bpy.ops.wm.path_open(filepath=path)
