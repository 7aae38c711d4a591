"""Scenario: draw every panel and the preferences with a recording layout (bpy has no UI in background mode).

Each ``layout.prop(data, name)`` must name a real property and each ``operator`` a registered operator.
"""

import sys
import types

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402

problems, calls = [], []


class Layout:
    def __getattr__(self, name):
        return None

    def __setattr__(self, name, value):
        pass

    def _child(self, *a, **k):
        return Layout()

    row = column = box = split = _child

    def prop(self, data, name, **kw):
        calls.append(name)
        target = data if not hasattr(data, "layout") else mod.preferences.get()
        if name not in target.bl_rna.properties:
            problems.append(f"no property {name} on {data}")

    def operator(self, idname, **kw):
        calls.append(idname)
        cat, _, op = idname.partition(".")
        try:
            getattr(getattr(bpy.ops, cat), op).get_rna_type()
        except (KeyError, AttributeError):
            problems.append(f"no operator {idname}")
        return Layout()

    def label(self, **kw):
        calls.append("label:" + kw.get("text", ""))

    def progress(self, **kw):
        calls.append("progress")

    def separator(self, **kw):
        pass


scene = bpy.context.scene
scene.neurender.controlnets.add().kind = "normal"
scene.neurender.loras.add().path = "/models/lora.safetensors"
status = bpy.context.window_manager.neurender
status.job_id, status.job_state, status.step, status.steps_total = "abc", "running", 3, 20
status.error = ("The backend refused a setting in the Neural Render panel: steps must be within 1..150, and the "
                "deflicker steps 4, 9 and 14 must be below the number of steps; lower them or raise Steps")


class Ctx:
    pass


ctx = Ctx()
ctx.scene, ctx.window_manager, ctx.preferences = scene, bpy.context.window_manager, bpy.context.preferences
for cls in mod.panels.classes:
    cls.draw(types.SimpleNamespace(layout=Layout()), ctx)


class PrefsSelf:
    """Stands in for the preferences object: its layout plus the real preference values."""

    layout = Layout()

    def __getattr__(self, name):
        return getattr(mod.preferences.get(), name)


scene.neurender.consistency, scene.neurender.img2img_strength = "keyframes", 0.5  # draws the keyframe options
for cls in mod.panels.classes:
    cls.draw(types.SimpleNamespace(layout=Layout()), ctx)
# Every RenderSettings field is either a scene property or filled in by the add-on itself.
filled_by_addon = {"model", "controlnets", "loras", "reference_image", "frames", "embeddings", "motion_module"}
missing = [f for f in mod.neurender_contract.RenderSettings.__dataclass_fields__
           if f not in filled_by_addon and f not in scene.neurender.bl_rna.properties]
problems += [f"RenderSettings.{f} has no scene property" for f in missing]
scene.neurender.controlnets[0].model = "/models/cn-normal.safetensors"
settings = mod.properties.to_settings(scene)
calls.append(f"settings:{settings.consistency}:{settings.img2img_strength}")
prefs = mod.preferences.get()
prefs.embeddings_dir, scene.neurender.prediction_type = "/models/embeddings/", "v_prediction"
settings = mod.properties.to_settings(scene, prefs)
calls.append(f"models:{settings.embeddings}:{settings.prediction_type}:{'/models/embeddings' in prefs.model_folders()}")
prefs.embeddings_dir, scene.neurender.prediction_type = "", "auto"
prefs.motion_module = "/models/mm_sd_v15_v2.ckpt"
calls.append(f"motion-off:{mod.properties.to_settings(scene, prefs).motion_module}")
consistency, strength = scene.neurender.consistency, scene.neurender.img2img_strength
scene.neurender.consistency, scene.neurender.img2img_strength = "first+prev", 0.0  # motion: off / first / first+prev
scene.neurender.use_motion_module, scene.neurender.context_length = True, 8
for cls in mod.panels.classes:  # draws the context fields under the checkbox
    cls.draw(types.SimpleNamespace(layout=Layout()), ctx)
settings = mod.properties.to_settings(scene, prefs)
calls.append(f"motion:{settings.motion_module}:{settings.context_length}:{settings.context_overlap}:"
             f"{'/models' in prefs.model_folders()}")
prefs.motion_module, scene.neurender.use_motion_module, scene.neurender.context_length = "", False, 16
scene.neurender.consistency, scene.neurender.img2img_strength = consistency, strength

mod.preferences.get().start_local = True  # draws the local-backend fields
mod.preferences.NEURENDER_AP_preferences.draw(PrefsSelf(), ctx)
mod.preferences.get().start_local = False
mod.preferences.NEURENDER_AP_preferences.draw(PrefsSelf(), ctx)
common.finish({"problems": problems, "calls": calls})
