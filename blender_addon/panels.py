"""The "Neural Render" tab of the 3D viewport sidebar. Drawing only: no state changes, no network."""

import bpy

from . import neurender_contract as contract


class _Base:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Render"


class NEURENDER_PT_main(_Base, bpy.types.Panel):
    bl_label = "Neural Render"

    def draw(self, context):
        layout = self.layout
        st = context.window_manager.neurender
        shot = context.scene.neurender
        row = layout.row()
        row.label(text=st.backend_info if st.connected else "Backend: not connected",
                  icon="CHECKMARK" if st.connected else "UNLINKED")
        row.operator("neurender.connect", text="", icon="FILE_REFRESH")
        col = layout.column(align=True)
        col.operator("neurender.render_frame", icon="RENDER_STILL")
        col.operator("neurender.render_animation", icon="RENDER_ANIMATION")
        row = col.row(align=True)
        row.operator("neurender.cancel", icon="CANCEL")
        row.operator("neurender.open_output", icon="FILEBROWSER")
        layout.prop(shot, "render_hook")
        if st.job_state and st.job_state not in contract.JOB_FINAL_STATES:
            layout.progress(factor=st.progress,
                            text=f"Frame {st.frames_done}/{st.frames_total}  step {st.step}/{st.steps_total}")
        if st.error:
            box = layout.box()
            box.alert = True
            box.label(text=st.error, icon="ERROR")
        elif st.message:
            layout.label(text=st.message)


class NEURENDER_PT_prompt(_Base, bpy.types.Panel):
    bl_label = "Prompt"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        shot = context.scene.neurender
        col = self.layout.column()
        col.prop(shot, "prompt", text="")
        col.prop(shot, "negative_prompt")
        col.prop(shot, "seed")
        col.prop(shot, "steps")
        col.prop(shot, "guidance_scale")
        col.prop(shot, "scheduler")
        row = col.row(align=True)
        row.prop(shot, "width")
        row.prop(shot, "height")
        col.prop(shot, "model")
        col.prop(shot, "prediction_type")
        col.prop(shot, "output_dir")
        col.prop(shot, "make_movie")


class NEURENDER_PT_controls(_Base, bpy.types.Panel):
    bl_label = "ControlNets"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        shot = context.scene.neurender
        layout = self.layout
        for i, unit in enumerate(shot.controlnets):
            box = layout.box()
            row = box.row(align=True)
            row.prop(unit, "enabled", text="")
            row.prop(unit, "kind", text="")
            row.prop(unit, "weight")
            row.operator("neurender.control_remove", text="", icon="X").index = i
            row = box.row(align=True)
            row.prop(unit, "guidance_start")
            row.prop(unit, "guidance_end")
            box.prop(unit, "model")
        layout.operator("neurender.control_add", icon="ADD")


class NEURENDER_PT_consistency(_Base, bpy.types.Panel):
    bl_label = "Consistency"
    bl_parent_id = "NEURENDER_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        shot = context.scene.neurender
        col = self.layout.column()
        col.prop(shot, "consistency")
        col.prop(shot, "fixed_noise")
        row = col.row(align=True)
        row.prop(shot, "window_size")
        row.prop(shot, "window_stride")
        col.prop(shot, "batch_size")
        col.prop(shot, "depth_smoothing")
        if shot.consistency == "keyframes":
            box = col.box()
            box.prop(shot, "keyframe_block")
            box.prop(shot, "img2img_strength")
            if shot.img2img_strength > 0:
                box.prop(shot, "inversion_steps")
                box.prop(shot, "pnp_features")
                box.prop(shot, "pnp_attention")
        col.separator()
        col.prop(shot, "deflicker_steps")
        col.prop(shot, "deflicker_space")
        col.prop(shot, "deflicker_method")
        col.prop(shot, "deflicker_window")
        col.prop(shot, "post_deflicker")
        row = col.row(align=True)
        row.prop(shot, "deflicker_compensate")
        row.prop(shot, "deflicker_sharpen")
        col.separator()
        col.prop(shot, "device")
        col.prop(shot, "dtype")
        col.prop(shot, "overwrite")
        col.prop(shot, "wait_headless")


classes = (NEURENDER_PT_main, NEURENDER_PT_prompt, NEURENDER_PT_controls, NEURENDER_PT_consistency)
