"""Shot presets (one click sets several properties) and the suggested ControlNet units."""

import bpy
from bpy.props import StringProperty

from .. import preferences, properties


class NEURENDER_OT_apply_preset(bpy.types.Operator):
    bl_idname = "neurender.apply_preset"
    bl_label = "Apply Preset"
    bl_description = "Set the shot's steps, scheduler, guidance and deflicker to a preset"
    bl_options = {"UNDO"}

    preset: StringProperty(name="Preset", description="Name of the preset (properties.SHOT_PRESETS)")

    @classmethod
    def description(cls, context, props):
        entry = properties.SHOT_PRESETS.get(props.preset)
        return entry[1] if entry else cls.bl_description

    def execute(self, context):
        if self.preset not in properties.SHOT_PRESETS:
            self.report({"ERROR"}, f"No preset named {self.preset!r}")
            return {"CANCELLED"}
        properties.apply_preset(context.scene, self.preset)
        return {"FINISHED"}


class NEURENDER_OT_add_suggested_controls(bpy.types.Operator):
    bl_idname = "neurender.add_suggested_controls"
    bl_label = "Add Depth + Edges"
    bl_description = "Add the depth (weight 1.0) and edges (0.6, ending at 0.8) ControlNets with the models set in " \
                     "the preferences, so the render follows the scene's layout"
    bl_options = {"UNDO"}

    def execute(self, context):
        try:
            prefs = preferences.get(context)
        except (KeyError, AttributeError):
            prefs = None
        added = properties.add_suggested_controls(context.scene, prefs)
        self.report({"INFO"}, f"Added {', '.join(added)} ControlNet" if added else "The units are already there")
        return {"FINISHED"}
