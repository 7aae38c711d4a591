"""The "Neural Render" tab of the 3D viewport sidebar. Drawing only: no state changes, no network.

Layout: the main panel (backend, what the artist should know, render buttons, progress, preview, messages), then
Model & Prompt, ControlNets, Consistency, Deflicker, Output and Advanced. Advanced also draws every shot property
of a RenderSettings field that no other panel draws, so a field added to the contract appears without a panel edit.
"""

import dataclasses
import os

import bpy

from . import advice, jobs, live, messages, preferences, properties
from . import neurender_contract as contract


class _Base:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Neural Render"


def _chars(context) -> int:
    """Characters that fit on one line of the sidebar (about 7 px per character at the default UI scale)."""
    region = getattr(context, "region", None)
    width = getattr(region, "width", 0) or 0
    return max(28, int(width / 7.0) - 4) if width else 48


def draw_wrapped(layout, text: str, chars: int, icon: str = "NONE") -> None:
    """A long message as several labels (a panel label is one line), the icon on the first."""
    col = layout.column(align=True)
    for i, line in enumerate(messages.wrap(text, chars)):
        col.label(text=line, icon=icon if i == 0 else "BLANK1" if icon != "NONE" else "NONE")


def _prefs(context):
    try:
        return preferences.get(context)
    except (KeyError, AttributeError):
        return None


def job_scene(st) -> str:
    """Name of the scene whose job record the status follows ("" when none is known)."""
    found = jobs.find(job_id=st.job_id) if st.job_id else None
    return found[0].name if found else ""


class NEURENDER_PT_main(_Base, bpy.types.Panel):
    bl_label = "Neural Render"

    def draw(self, context):
        layout = self.layout
        st = context.window_manager.neurender
        scene = context.scene
        shot = scene.neurender
        prefs = _prefs(context)
        chars = _chars(context)
        row = layout.row(align=True)
        row.label(text=st.backend_info if st.connected else "Backend: not connected",
                  icon="CHECKMARK" if st.connected else "UNLINKED")
        row.operator("neurender.connect", text="", icon="FILE_REFRESH")
        row.operator("neurender.free_vram", text="", icon="TRASH")

        # what the artist should know before pressing Render (advice.py): red for noise, yellow for warnings
        tips = advice.warnings(scene, prefs)
        said_random = any(text == advice.RANDOM_WEIGHTS for _level, text, _fix in tips)
        for level, text, fix in tips:
            box = layout.box()
            box.alert = level == "ERROR"
            draw_wrapped(box, text, chars, icon="ERROR" if level == "ERROR" else "INFO")
            if fix:
                box.operator(fix, icon="ADD")

        col = layout.column(align=True)
        col.operator("neurender.render_frame", icon="RENDER_STILL")
        col.operator("neurender.render_animation", icon="RENDER_ANIMATION")
        row = col.row(align=True)
        row.operator("neurender.cancel", icon="CANCEL")
        row.operator("neurender.open_output", icon="FILEBROWSER")
        layout.prop(shot, "render_hook")

        other = job_scene(st)
        if other and other != scene.name:  # the status follows the latest job, which may be another shot's
            draw_wrapped(layout, f"The render below is of the scene '{other}', not this one", chars,
                         icon="SCENE_DATA")
        running = st.job_state and st.job_state not in contract.JOB_FINAL_STATES
        # a render being checked or submitted has no job yet: the progress fields still hold the previous job's
        # numbers ("100%", "step 20/20"), so only the message line below says what is happening
        preparing = running and not st.job_id
        if running and not preparing:
            text = st.progress_text or f"{st.job_state}"
            layout.progress(factor=st.progress, text=f"{int(st.progress * 100)}%" + (f", {st.eta} left"
                                                                                     if st.eta else ""))
            draw_wrapped(layout, text, chars)
        if st.job_device and not preparing:
            layout.label(text=f"Rendering on {st.job_device}", icon="MEMORY")
        if st.preview_step and not preparing:
            row = layout.row(align=True)
            row.label(text=f"Preview: image '{live.PREVIEW_IMAGE}' (step {st.preview_step})", icon="IMAGE_DATA")
            row.operator("neurender.show_preview", text="", icon="WINDOW")
        if st.job_id and st.random_weights and not said_random:  # on the result too: whatever it shows is noise
            box = layout.box()
            box.alert = True
            draw_wrapped(box, live.RANDOM_WEIGHTS_NOTE, chars, icon="ERROR")
        if st.error:
            box = layout.box()
            box.alert = True
            draw_wrapped(box, st.error, chars, icon="ERROR")
            row = box.row(align=True)
            row.operator("neurender.copy_message", icon="COPYDOWN")
            row.operator("neurender.open_log", icon="TEXT")
        elif st.message:  # the random-weights note of a result is in its red box above: said once
            draw_wrapped(layout, st.message.replace(live.result_note({"progress": {"random_weights": True}}), ""),
                         chars)


class NEURENDER_PT_prompt(_Base, bpy.types.Panel):
    bl_label = "Model & Prompt"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        shot = context.scene.neurender
        layout = self.layout
        row = layout.row(align=True)
        row.label(text="Preset")
        for name in properties.SHOT_PRESETS:
            row.operator("neurender.apply_preset", text=properties.SHOT_PRESETS[name][0]).preset = name
        col = layout.column()
        col.prop(shot, "prompt", text="")
        col.prop(shot, "negative_prompt")
        col.prop(shot, "model")
        col.prop(shot, "prediction_type")
        col.prop(shot, "seed")
        col.prop(shot, "steps")
        col.prop(shot, "guidance_scale")
        col.prop(shot, "scheduler")
        box = layout.box()
        box.label(text="LoRAs")
        for i, lora in enumerate(shot.loras):
            row = box.row(align=True)
            row.prop(lora, "enabled", text="")
            row.prop(lora, "path", text="")
            row.prop(lora, "weight", text="")
            row.operator("neurender.lora_remove", text="", icon="X").index = i
        box.operator("neurender.lora_add", icon="ADD")
        col = layout.column()
        col.prop(shot, "reference_image")
        box = layout.box()
        box.label(text="Look")
        box.prop(shot, "look_file", text="")
        row = box.row(align=True)
        row.operator("neurender.look_save", icon="FILE_TICK")
        row.operator("neurender.look_apply", icon="IMPORT")


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
        row = layout.row(align=True)
        row.operator("neurender.control_add", icon="ADD")
        row.operator("neurender.add_suggested_controls", icon="PRESET")
        layout.operator("neurender.show_controls", icon="IMAGE_DATA")


class NEURENDER_PT_consistency(_Base, bpy.types.Panel):
    bl_label = "Consistency"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        shot = context.scene.neurender
        col = self.layout.column()
        col.prop(shot, "consistency")
        col.prop(shot, "fixed_noise")
        col.prop(shot, "use_motion_module")
        if shot.use_motion_module:
            row = col.row(align=True)
            row.prop(shot, "context_length")
            row.prop(shot, "context_overlap")
        if shot.consistency == "window":
            row = col.row(align=True)
            row.prop(shot, "window_size")
            row.prop(shot, "window_stride")
        if shot.consistency == "keyframes":
            box = col.box()
            box.prop(shot, "keyframe_block")
            box.prop(shot, "img2img_strength")
            if shot.img2img_strength > 0:
                box.prop(shot, "inversion_steps")
                box.prop(shot, "pnp_features")
                box.prop(shot, "pnp_attention")


class NEURENDER_PT_deflicker(_Base, bpy.types.Panel):
    bl_label = "Deflicker"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        shot = context.scene.neurender
        col = self.layout.column()
        col.prop(shot, "deflicker_preset")
        if shot.deflicker_preset == "CUSTOM":
            col.prop(shot, "deflicker_steps")
            col.prop(shot, "post_deflicker")
        elif shot.deflicker_preset != "OFF":
            steps, post = properties.deflicker_plan(shot)
            col.label(text=f"Steps {', '.join(str(s) for s in steps) or 'none'}" + (" + post pass" if post else ""))
        if shot.deflicker_preset != "OFF":
            col.prop(shot, "deflicker_method")
            col.prop(shot, "deflicker_window")


def output_folder(scene) -> tuple[str, bool]:
    """(the folder the shot's files go to, whether a relative Output falls back because the .blend is unsaved),
    as ``pass_export.output_root`` resolves it, without creating any folder (this is drawing)."""
    raw = scene.neurender.output_dir
    if raw and (not raw.startswith("//") or bpy.data.filepath):
        return os.path.abspath(bpy.path.abspath(raw)), False
    base = bpy.utils.extension_path_user(__package__, path="renders", create=False)
    return os.path.abspath(os.path.join(base, bpy.path.clean_name(scene.name))), bool(raw)


class NEURENDER_PT_output(_Base, bpy.types.Panel):
    bl_label = "Output"
    bl_parent_id = "NEURENDER_PT_main"

    def draw(self, context):
        scene = context.scene
        shot = scene.neurender
        col = self.layout.column()
        col.prop(shot, "fit_within")
        w, h = properties.render_size(scene)
        col.label(text=f"Frames of {w} x {h} pixels")
        col.prop(shot, "output_dir")
        folder, unsaved = output_folder(scene)
        draw_wrapped(col, f"Writes to {folder}" + (" (the .blend is not saved yet, so not next to it)" if unsaved
                                                   else ""), _chars(context), icon="FILE_FOLDER")
        col.prop(shot, "overwrite")
        col.prop(shot, "make_movie")
        col.prop(shot, "wait_headless")


ADVANCED_DRAWN = {"width", "height", "device", "dtype", "batch_size", "depth_smoothing", "deflicker_space",
                  "deflicker_compensate", "deflicker_sharpen"}
"""Drawn by the Advanced panel itself; any other field property not drawn by another panel is listed below them."""

DRAWN_ELSEWHERE = {"prompt", "negative_prompt", "model", "prediction_type", "embeddings", "seed", "steps", "guidance_scale", "scheduler", "loras",
                   "reference_image", "controlnets", "consistency", "fixed_noise", "window_size", "window_stride",
                   "keyframe_block", "img2img_strength", "inversion_steps", "pnp_features", "pnp_attention",
                   "deflicker_steps", "post_deflicker", "deflicker_method", "deflicker_window", "overwrite", "frames",
                   "context_length", "context_overlap", "motion_module"}


def undrawn_fields(shot) -> list[str]:
    """RenderSettings fields with a shot property that no panel draws by name (new fields: drawn in Advanced)."""
    return [f.name for f in dataclasses.fields(contract.RenderSettings)
            if f.name not in DRAWN_ELSEWHERE | ADVANCED_DRAWN and f.name in shot.bl_rna.properties]


class NEURENDER_PT_advanced(_Base, bpy.types.Panel):
    bl_label = "Advanced"
    bl_parent_id = "NEURENDER_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        shot = context.scene.neurender
        col = self.layout.column()
        col.prop(shot, "device")
        col.prop(shot, "dtype")
        col.prop(shot, "batch_size")
        row = col.row(align=True)
        row.prop(shot, "width")
        row.prop(shot, "height")
        col.prop(shot, "depth_smoothing")
        col.separator()
        col.label(text="Deflicker")
        col.prop(shot, "deflicker_space")
        row = col.row(align=True)
        row.prop(shot, "deflicker_compensate")
        row.prop(shot, "deflicker_sharpen")
        if shot.deflicker_preset != "CUSTOM":
            col.prop(shot, "deflicker_steps", text="Custom steps")
        extra = undrawn_fields(shot)
        if extra:
            col.separator()
            for name in extra:
                col.prop(shot, name)


classes = (NEURENDER_PT_main, NEURENDER_PT_prompt, NEURENDER_PT_controls, NEURENDER_PT_consistency,
           NEURENDER_PT_deflicker, NEURENDER_PT_output, NEURENDER_PT_advanced)
