"""Scenario: what the panel tells the artist before any render (no backend): descriptions, defaults, the
random-weights and no-ControlNet advice with its one-click fix, presets, fit within, looks, control images."""

import dataclasses
import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import panel_record  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=2, samples=1)
prefs = mod.preferences.get()
shot = scene.neurender
shot.output_dir = config["out"]
out = {}

# -- every property and operator has a description (walk bl_rna, not a list kept by hand) -------------------------
missing = []


def walk(rna_struct, where):
    for p in rna_struct.properties:
        if p.identifier in ("rna_type", "bl_idname") or (p.identifier == "name" and where != "NeurenderShot"):
            continue  # Blender's own built-ins
        if not (p.description or "").strip():
            missing.append(f"{where}.{p.identifier}")
        if p.type == "ENUM":
            for item in p.enum_items:
                if not (item.description or "").strip():
                    missing.append(f"{where}.{p.identifier}[{item.identifier}]")


for cls in mod.properties.classes:
    walk(cls.bl_rna, cls.__name__)
walk(mod.preferences.NEURENDER_AP_preferences.bl_rna, "preferences")
ops = []
for cls in mod.operators.classes:
    cat, _, name = cls.bl_idname.partition(".")
    rna = getattr(getattr(bpy.ops, cat), name).get_rna_type()
    ops.append(cls.bl_idname)
    if not (rna.description or "").strip():
        missing.append(f"operator {cls.bl_idname}")
    walk(rna, f"operator {cls.bl_idname}")
for cls in mod.panels.classes:
    if not cls.bl_label:
        missing.append(f"panel {cls.__name__}")
out["undescribed"] = missing
out["operators"] = ops

# -- the shot's properties are the contract's RenderSettings fields --------------------------------------------
props = scene.neurender.bl_rna.properties
fields = [f.name for f in dataclasses.fields(mod.neurender_contract.RenderSettings)]
out["fields_without_property"] = [f for f in fields if f not in props and f not in mod.properties.FILLED_BY_ADDON]
out["filled_by_addon"] = sorted(mod.properties.FILLED_BY_ADDON)
out["auto_fields"] = mod.properties.AUTO_FIELDS
defaults = mod.neurender_contract.RenderSettings()


def same(a, b):
    return abs(a - b) < 1e-6 if isinstance(b, float) else a == b


out["defaults_differ"] = [f for f in fields if f in props and f not in mod.properties.DERIVED
                          and f not in mod.properties.FILLED_BY_ADDON and f not in ("device", "dtype", "overwrite")
                          and not same(getattr(shot, f), getattr(defaults, f))]
out["device"], out["dtype"] = shot.device, shot.dtype

# -- fit within: long side 768, multiples of 8, aspect kept, never enlarged ------------------------------------
sizes = {}
for w, h, pct in ((1920, 1080, 100), (100, 60, 100), (1080, 1920, 50), (64, 48, 100)):
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = w, h, pct
    sizes[f"{w}x{h}@{pct}"] = list(mod.properties.render_size(scene))
scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 64, 48, 100
out["fit_within"] = shot.fit_within
out["sizes"] = sizes

# -- the advice: random weights (red), then no ControlNet with its one-click fix -------------------------------
record = panel_record.draw_all(mod, bpy)
out["no_checkpoint_red"] = panel_record.texts(record, alert=True)
out["no_checkpoint_warnings"] = [w[0] for w in mod.advice.warnings(scene, prefs)]
models = config["models"]
for name in ("sd15.safetensors", "cn_depth.safetensors", "cn_edges.safetensors"):
    open(os.path.join(models, name), "wb").close()
prefs.sd_model = os.path.join(models, "sd15.safetensors")
prefs.controlnet_depth = os.path.join(models, "cn_depth.safetensors")
prefs.controlnet_edges = os.path.join(models, "cn_edges.safetensors")
record = panel_record.draw_all(mod, bpy)
out["no_controlnet_texts"] = panel_record.texts(record)
out["no_controlnet_red"] = panel_record.texts(record, alert=True)
at = next(n for n, i in enumerate(record) if i["what"] == "label" and i["text"].startswith("No ControlNet"))
out["fix_button"] = [next(i["name"] for i in record[at:] if i["what"] != "label")]  # right under the warning
out["add_result"] = sorted(bpy.ops.neurender.add_suggested_controls())
out["units"] = [{"kind": u.kind, "weight": round(u.weight, 3), "start": round(u.guidance_start, 3),
                 "end": round(u.guidance_end, 3), "model": u.model} for u in shot.controlnets]
out["after_fix_warnings"] = [t for _, t, _ in mod.advice.warnings(scene, prefs)]
bpy.ops.neurender.add_suggested_controls()  # twice: nothing is added again
out["units_after_second_click"] = len(shot.controlnets)
open(os.path.join(models, "cn_normal.safetensors"), "wb").close()
prefs.controlnet_normal = os.path.join(models, "cn_normal.safetensors")
bpy.ops.neurender.control_add()  # the next kind (normal) with its preset
out["added_normal"] = [shot.controlnets[-1].kind, round(shot.controlnets[-1].weight, 3)]
settings = mod.properties.to_settings(scene, prefs)
out["settings_units"] = [(u.kind, round(u.weight, 3), round(u.guidance_end, 3)) for u in settings.controlnets]

# -- deflicker presets --------------------------------------------------------------------------------------------
plans = {}
shot.steps = 20
for preset in ("OFF", "STANDARD", "STRONG"):
    shot.deflicker_preset = preset
    s = mod.properties.to_settings(scene, prefs)
    plans[preset] = [s.deflicker_steps, s.post_deflicker]
out["default_deflicker"] = "STANDARD"
shot.deflicker_steps = "2, 5"  # the raw list under Advanced switches to Custom
out["custom_after_typing"] = shot.deflicker_preset
s = mod.properties.to_settings(scene, prefs)
plans["CUSTOM"] = [s.deflicker_steps, s.post_deflicker]
out["deflicker_plans"] = plans
shot.deflicker_steps = "2, 25"
try:
    mod.properties.to_settings(scene, prefs)
    out["bad_custom_step"] = "accepted"
except mod.neurender_contract.ContractError as exc:
    out["bad_custom_step"] = str(exc)
shot.deflicker_steps, shot.deflicker_preset = "", "STANDARD"

# -- presets (one click sets several properties) -----------------------------------------------------------------
out["presets"] = sorted(mod.properties.SHOT_PRESETS)
bpy.ops.neurender.apply_preset(preset="FAST")
out["fast"] = [shot.steps, shot.scheduler, shot.deflicker_preset]
bpy.ops.neurender.apply_preset(preset="FINAL")
out["final"] = [shot.steps, shot.scheduler]

# -- looks: save the shot, change it, apply the look again ---------------------------------------------------------
ref = os.path.join(config["tmp"], "ref.png")
img = bpy.data.images.new("ref", 8, 8)
img.filepath_raw, img.file_format = ref, "PNG"
img.save()
bpy.data.images.remove(img)
shot.prompt, shot.seed, shot.reference_image = "a brass owl", 77, ref
lora = shot.loras.add()
lora.path, lora.weight = os.path.join(models, "style.safetensors"), 0.7
shot.look_file = os.path.join(config["tmp"], "owl")
out["look_save"] = sorted(bpy.ops.neurender.look_save())
out["look_file"] = bpy.path.abspath(shot.look_file)
shot.prompt, shot.seed, shot.reference_image = "something else", 1, ""
shot.loras.clear()
shot.controlnets.clear()
out["look_apply"] = sorted(bpy.ops.neurender.look_apply())
s = mod.properties.to_settings(scene, prefs)
out["after_look"] = {"prompt": s.prompt, "seed": s.seed, "loras": [[l.path, round(l.weight, 3)] for l in s.loras],
                     "reference": s.reference_image, "units": [u.kind for u in s.controlnets],
                     "reference_exists": os.path.isfile(s.reference_image)}

# -- show control images of the current frame -------------------------------------------------------------------
frames = mod.pass_export.frames_dir(scene)
controls = os.path.join(frames, *mod.neurender_contract.CONTROLS_DIR.split("/"))
os.makedirs(controls, exist_ok=True)
for kind, value in (("depth", 0.2), ("edges", 0.9)):
    im = bpy.data.images.new("tmp", 16, 12)
    im.pixels = [value, value, value, 1.0] * (16 * 12)
    im.filepath_raw, im.file_format = os.path.join(controls, f"{kind}_{scene.frame_current:04d}.png"), "PNG"
    im.save()
    bpy.data.images.remove(im)
bpy.context.window_manager.neurender.out_dir = frames
out["show_controls"] = sorted(bpy.ops.neurender.show_controls())
out["control_images"] = {i.name: list(i.size) for i in bpy.data.images if i.name.startswith("Neural Render")}
scene.frame_current = 2
try:
    bpy.ops.neurender.show_controls()
    out["no_controls"] = "no error"
except RuntimeError as exc:
    out["no_controls"] = str(exc)

# -- a 100x60 render gives 96x56 frames: their strip still fills the canvas -----------------------------------------
strip_dir = os.path.join(config["tmp"], "strip")
os.makedirs(strip_dir, exist_ok=True)
im = bpy.data.images.new("tmp", 96, 56)
im.filepath_raw, im.file_format = os.path.join(strip_dir, "frame_0001.png"), "PNG"
im.save()
bpy.data.images.remove(im)
scene.render.resolution_x, scene.render.resolution_y = 100, 60
strip = mod.vse.place_result(scene, strip_dir, [1])
t = strip.transform
out["strip_covers"] = [96 * t.scale_x, 56 * t.scale_y, abs(t.scale_x - t.scale_y) < 1e-6]
common.finish(out)
