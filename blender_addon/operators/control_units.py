"""Add or remove a ControlNet unit of the shot."""

import bpy
from bpy.props import IntProperty


class NEURENDER_OT_control_add(bpy.types.Operator):
    bl_idname = "neurender.control_add"
    bl_label = "Add ControlNet"
    bl_options = {"UNDO"}

    def execute(self, context):
        units = context.scene.neurender.controlnets
        used = {u.kind for u in units}
        unit = units.add()
        unit.kind = next((k for k in ("depth", "normal", "edges") if k not in used), "depth")
        return {"FINISHED"}


class NEURENDER_OT_control_remove(bpy.types.Operator):
    bl_idname = "neurender.control_remove"
    bl_label = "Remove ControlNet"
    bl_options = {"UNDO"}

    index: IntProperty()

    def execute(self, context):
        units = context.scene.neurender.controlnets
        if 0 <= self.index < len(units):
            units.remove(self.index)
        return {"FINISHED"}
