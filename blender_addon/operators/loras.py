"""Add or remove a LoRA of the shot."""

import bpy
from bpy.props import IntProperty


class NEURENDER_OT_lora_add(bpy.types.Operator):
    bl_idname = "neurender.lora_add"
    bl_label = "Add LoRA"
    bl_description = "Add a LoRA (a .safetensors file trained for SD 1.5) with its weight"
    bl_options = {"UNDO"}

    def execute(self, context):
        context.scene.neurender.loras.add()
        return {"FINISHED"}


class NEURENDER_OT_lora_remove(bpy.types.Operator):
    bl_idname = "neurender.lora_remove"
    bl_label = "Remove LoRA"
    bl_description = "Remove this LoRA from the shot"
    bl_options = {"UNDO"}

    index: IntProperty(name="Index", description="Position of the LoRA in the list")

    def execute(self, context):
        loras = context.scene.neurender.loras
        if 0 <= self.index < len(loras):
            loras.remove(self.index)
        return {"FINISHED"}
