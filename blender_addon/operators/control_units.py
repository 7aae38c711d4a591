"""Add or remove a ControlNet unit of the shot."""

import bpy
from bpy.props import IntProperty

from .. import preferences, properties


class NEURENDER_OT_control_add(bpy.types.Operator):
    bl_idname = "neurender.control_add"
    bl_label = "Add ControlNet"
    bl_description = "Add a ControlNet unit of the next kind not used yet, with its preset weight and the model " \
                     "set in the preferences"
    bl_options = {"UNDO"}

    def execute(self, context):
        units = context.scene.neurender.controlnets
        used = {u.kind for u in units}
        unit = units.add()
        try:
            prefs = preferences.get(context)
        except (KeyError, AttributeError):
            prefs = None
        properties.apply_control_preset(unit, next((k for k in ("depth", "edges", "normal") if k not in used),
                                                   "depth"), prefs)
        return {"FINISHED"}


class NEURENDER_OT_control_remove(bpy.types.Operator):
    bl_idname = "neurender.control_remove"
    bl_label = "Remove ControlNet"
    bl_description = "Remove this ControlNet unit from the shot"
    bl_options = {"UNDO"}

    index: IntProperty(name="Index", description="Position of the unit in the list")

    def execute(self, context):
        units = context.scene.neurender.controlnets
        if 0 <= self.index < len(units):
            units.remove(self.index)
        return {"FINISHED"}
