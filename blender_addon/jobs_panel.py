"""The "Jobs" sub-panel: the shot's neural renders (the job records in the .blend), newest first, each with cancel,
import and open-folder. Drawing only: no state changes, no network."""

import bpy

from . import jobs, panels

SHOWN = 8
"""Newest records drawn; older ones stay in the .blend (and their folders on disk)."""


class NEURENDER_PT_jobs(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Render"
    bl_label = "Jobs"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        layout = self.layout
        recs = list(jobs.records(context.scene))
        if not recs:
            layout.label(text="No neural renders of this shot yet")
            return
        for rec in sorted(recs, key=lambda r: r.version, reverse=True)[:SHOWN]:  # versions only grow
            box = layout.box()
            row = box.row(align=True)
            row.label(text=rec.label, icon="RENDER_ANIMATION" if rec.kind == jobs.KIND_ANIMATION else "RENDER_STILL")
            if rec.active and rec.job_id:
                row.operator("neurender.job_cancel", text="", icon="CANCEL").key = rec.key
            if not rec.active or rec.imported:
                row.operator("neurender.job_import", text="", icon="IMPORT").key = rec.key
            row.operator("neurender.job_open_folder", text="", icon="FILEBROWSER").key = rec.key
            if rec.random_weights:
                sub = box.row()
                sub.alert = True
                sub.label(text="RANDOM WEIGHTS: noise, not an image (no checkpoint set)", icon="ERROR")
            if rec.message:
                sub = box.row()
                sub.alert = rec.state in (jobs.ERROR, jobs.LOST, "failed")
                panels.draw_wrapped(sub, rec.message, 60)
        if len(recs) > SHOWN:
            layout.label(text=f"{len(recs) - SHOWN} older renders not shown")


classes = (NEURENDER_PT_jobs,)
