"""Scenario: what the artist sees during and after a neural render against the stub backend in lockstep mode:
monotonic progress past 50% before the first frame exists, the live preview image changing, random weights on the
result, error kinds worded and wrapped with Copy Message, Free VRAM, Connect checking model paths, and the LoRAs /
reference image reaching the backend's settings."""

import hashlib
import os
import sys

import common

config, mod = common.start(sys.argv[1])
import bpy  # noqa: E402
import panel_record  # noqa: E402
import scenes  # noqa: E402

scene = scenes.build(frames=3, samples=1)
prefs = mod.preferences.get()
prefs.backend_url = config["url"]
status = bpy.context.window_manager.neurender
shot = scene.neurender
shot.output_dir = config["out"]
shot.steps = 6
shot.deflicker_preset = "OFF"
out = {}

# -- a job with no checkpoint: random weights ------------------------------------------------------------------
snapshots = []
status_bar = []
orig_snapshot = mod.live.on_snapshot
orig_redraw = mod.session._redraw


def recording_snapshot(st, job, *a, **k):
    text = orig_snapshot(st, job, *a, **k)
    image = bpy.data.images.get(mod.live.PREVIEW_IMAGE)
    digest = ""
    if image is not None:
        digest = hashlib.sha1(bytes(int(v * 255) for v in image.pixels[:])).hexdigest()[:12]
    written = [f for f in os.listdir(job["out_dir"]) if f.startswith("frame_")] if os.path.isdir(
        job.get("out_dir") or "") else []
    snapshots.append({"state": job.get("state"), "progress": st.progress, "text": st.progress_text, "eta": st.eta,
                      "frames_on_disk": len(written), "preview": digest, "preview_step": st.preview_step,
                      "random": st.random_weights, "device": st.job_device,
                      "strip_frames": sum(len(s.elements) for s in mod.vse.our_strips(scene))})
    return text


mod.live.on_snapshot = recording_snapshot
mod.session._redraw = lambda text=None: (status_bar.append(text), orig_redraw(text))[1]
out["connect"] = sorted(bpy.ops.neurender.connect())
out["frame"] = sorted(bpy.ops.neurender.render_animation())
mod.live.on_snapshot = orig_snapshot
out["snapshots"] = snapshots
out["final_message"] = status.message
out["status_bar"] = [t for t in status_bar if t]
out["preview_image"] = list(bpy.data.images[mod.live.PREVIEW_IMAGE].size) if mod.live.PREVIEW_IMAGE in bpy.data.images \
    else None
record = panel_record.draw_all(mod, bpy)
out["done_red"] = panel_record.texts(record, alert=True)
out["strip_names"] = [s.name for s in mod.vse.our_strips(scene)]

# -- settings reach the backend: checkpoint, LoRAs (the disabled one left out), reference image --------------------
models = config["models"]
for name in ("sd15.safetensors", "cn_depth.safetensors", "cn_edges.safetensors", "a.safetensors", "b.safetensors"):
    open(os.path.join(models, name), "wb").close()
prefs.sd_model = os.path.join(models, "sd15.safetensors")
prefs.controlnet_depth = os.path.join(models, "cn_depth.safetensors")
prefs.controlnet_edges = os.path.join(models, "cn_edges.safetensors")
shot.steps = 2
out["no_controlnet_job"] = sorted(bpy.ops.neurender.render_frame())  # said before submitting, not refused
bpy.ops.neurender.add_suggested_controls()
for path, weight, enabled in (("a.safetensors", 0.8, True), ("b.safetensors", 0.3, False)):
    lora = shot.loras.add()
    lora.path, lora.weight, lora.enabled = os.path.join(models, path), weight, enabled
ref = os.path.join(config["tmp"], "ref.png")
img = bpy.data.images.new("ref", 8, 8)
img.filepath_raw, img.file_format = ref, "PNG"
img.save()
bpy.data.images.remove(img)
shot.reference_image = ref
shot.steps = 2
out["real"] = sorted(bpy.ops.neurender.render_frame())
out["real_message"] = status.message
out["real_random"] = status.random_weights
record = panel_record.draw_all(mod, bpy)
out["real_red"] = panel_record.texts(record, alert=True)
# Show Control Images: not on this disk (the stub keeps them in memory), so fetched over HTTP from the backend
out["show_controls"] = sorted(bpy.ops.neurender.show_controls())
out["control_images"] = {i.name: list(i.size) for i in bpy.data.images if i.name.startswith("Neural Render ")
                         and i.name != mod.live.PREVIEW_IMAGE}

# -- errors: worded by kind, wrapped, the full text copied -------------------------------------------------------
shot.model = os.path.join(models, "nowhere", "missing.safetensors")
try:
    out["missing"] = sorted(bpy.ops.neurender.render_frame())
except RuntimeError as exc:
    out["missing"] = ["RuntimeError", str(exc)]
out["missing_error"] = status.error
out["missing_detail"] = status.error_detail
record = panel_record.draw_all(mod, bpy)
labels = [i for i in record if i["what"] == "label" and i["alert"]]
out["error_lines"] = [i["text"] for i in labels]
out["error_buttons"] = [i["name"] for i in record if i["what"] == "operator" and i["alert"]]
bpy.ops.neurender.copy_message()
out["clipboard"] = status.copied
shot.model = ""

prefs.backend_url = "127.0.0.1:8765"
try:
    bpy.ops.neurender.connect()
except RuntimeError:
    pass
out["bad_url_error"] = status.error
prefs.backend_url = config["url"] + "/html"  # another web server answers with its HTML 404 page
try:
    bpy.ops.neurender.connect()
except RuntimeError:
    pass
out["html_error"] = status.error
prefs.backend_url = config["url"]

# -- Free VRAM, and Connect checks the model paths of the preferences ----------------------------------------------
out["free"] = sorted(bpy.ops.neurender.free_vram())
out["free_message"] = status.message
prefs.controlnet_normal = os.path.join(models, "gone", "cn_normal.safetensors")
out["connect_again"] = sorted(bpy.ops.neurender.connect())
out["connect_error"] = status.error
common.finish(out)
