"""Actions on one job record of the Jobs panel: cancel it, import its frames again, open its folder."""

import os

import bpy
from bpy.props import StringProperty

from .. import jobs, session
from .. import neurender_contract as contract


def _record(op):
    found = jobs.find(key=op.key)
    if found is None:
        op.report({"WARNING"}, "That neural render is no longer in this file")
    return found


class NEURENDER_OT_job_cancel(bpy.types.Operator):
    bl_idname = "neurender.job_cancel"
    bl_label = "Cancel Job"
    bl_description = "Stop this neural render at its next step (finished frames are kept)"
    bl_options = {"INTERNAL"}

    key: StringProperty(description="Local id of the job record (jobs.py)")

    def execute(self, context):
        found = _record(self)
        if found is None:
            return {"CANCELLED"}
        rec = found[1]
        if not rec.job_id or not rec.active or not session.cancel_job(rec.job_id):
            self.report({"WARNING"}, f"{rec.label}: not running")
            return {"CANCELLED"}
        return {"FINISHED"}


class NEURENDER_OT_job_import(bpy.types.Operator):
    bl_idname = "neurender.job_import"
    bl_label = "Import Job"
    bl_description = ("Bring this render's finished frames into Blender: the sequencer strip of an animation "
                      "(replacing older versions' strips), the image of a single frame")
    bl_options = {"INTERNAL"}

    key: StringProperty(description="Local id of the job record (jobs.py)")

    def execute(self, context):
        found = _record(self)
        if found is None:
            return {"CANCELLED"}
        scene, rec = found
        try:
            text = session.import_record(scene, rec)
        except (contract.ContractError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        session.set_message(text)
        self.report({"INFO"}, text)
        return {"FINISHED"}


class NEURENDER_OT_job_open_folder(bpy.types.Operator):
    bl_idname = "neurender.job_open_folder"
    bl_label = "Open Job Folder"
    bl_description = "Open the folder of this render's neural frames"
    bl_options = {"INTERNAL"}

    key: StringProperty(description="Local id of the job record (jobs.py)")

    def execute(self, context):
        found = _record(self)
        if found is None:
            return {"CANCELLED"}
        folder = found[1].abs_out_dir
        if not os.path.isdir(folder):
            self.report({"WARNING"}, f"{folder} does not exist")
            return {"CANCELLED"}
        return bpy.ops.wm.path_open(filepath=folder)


classes = (NEURENDER_OT_job_cancel, NEURENDER_OT_job_import, NEURENDER_OT_job_open_folder)
