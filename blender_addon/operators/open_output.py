"""Open the folder holding the neural frames in the system's file browser."""

import os

import bpy

from .. import pass_export


class NEURENDER_OT_open_output(bpy.types.Operator):
    bl_idname = "neurender.open_output"
    bl_label = "Open Output"
    bl_description = "Open the folder of the neural frames"

    def execute(self, context):
        folder = context.window_manager.neurender.out_dir or pass_export.frames_dir(context.scene)
        if not os.path.isdir(folder):
            self.report({"WARNING"}, f"No output yet: {folder} does not exist")
            return {"CANCELLED"}
        return bpy.ops.wm.path_open(filepath=folder)
