"""Looks: save the shot's settings as a look file (.nrlook), apply one to this shot."""

import os

import bpy

from .. import looks, pass_export, preferences, properties
from .. import neurender_contract as contract


def _look_path(context) -> str:
    raw = context.scene.neurender.look_file
    return bpy.path.abspath(raw) if raw else ""


class NEURENDER_OT_look_save(bpy.types.Operator):
    bl_idname = "neurender.look_save"
    bl_label = "Save Look"
    bl_description = "Save this shot's prompt, model, ControlNets, LoRAs, reference image and sampling settings as " \
                     "the look file set above, to apply to other shots"

    def execute(self, context):
        path = _look_path(context)
        if not path:
            self.report({"ERROR"}, "Set the Look file path first")
            return {"CANCELLED"}
        try:
            try:
                prefs = preferences.get(context)
            except (KeyError, AttributeError):
                prefs = None
            written = looks.save(path, properties.to_settings(context.scene, prefs), name=context.scene.name)
        except (contract.ContractError, OSError) as exc:
            self.report({"ERROR"}, f"The look could not be saved: {exc}")
            return {"CANCELLED"}
        context.scene.neurender.look_file = pass_export.to_blend_path(written)
        self.report({"INFO"}, f"Look saved: {written}")
        return {"FINISHED"}


class NEURENDER_OT_look_apply(bpy.types.Operator):
    bl_idname = "neurender.look_apply"
    bl_label = "Apply Look"
    bl_description = "Set this shot's settings from the look file set above (its reference image is extracted " \
                     "next to the shot's neural renders)"
    bl_options = {"UNDO"}

    def execute(self, context):
        path = _look_path(context)
        if not path or not os.path.isfile(path):
            self.report({"ERROR"}, f"No look file at {path or 'the Look path (empty)'}")
            return {"CANCELLED"}
        scene = context.scene
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            _, data = looks.load(path, os.path.join(pass_export.output_root(scene), "looks", name))
        except (contract.ContractError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        skipped = properties.apply_settings(scene, data)
        if skipped:
            self.report({"WARNING"}, f"Look applied, except {', '.join(skipped)}")
        else:
            self.report({"INFO"}, f"Look {name} applied")
        return {"FINISHED"}
