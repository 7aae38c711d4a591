"""Shot settings on the Scene (saved in the .blend) and short-lived status on the WindowManager (never saved).

The shot's properties are derived from ``contract.RenderSettings``: every settings field has a property of the
same name whose default is the contract's (``FIELDS`` adds the label and tooltip), except the few the add-on fills
itself (``FILLED_BY_ADDON``). ``to_settings`` walks the contract's fields, so a new field without a property is an
error at once (a test checks it), never a silently dropped setting. A few properties are artist-facing
simplifications that the add-on turns into contract fields: "Fit within" gives width/height, the deflicker preset
gives the step list and the post pass, the ControlNet presets give weights.
"""

from __future__ import annotations

import dataclasses
import logging

import bpy
from bpy.props import (
    BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty,
)

from . import neurender_contract as contract

log = logging.getLogger(__name__)

_DEFAULTS = contract.RenderSettings()


def _items(values, labels=None, descriptions=None):
    labels = labels or {}
    descriptions = descriptions or {}
    return [(v, labels.get(v, v.replace("_", " ").title()), descriptions.get(v, labels.get(v, v))) for v in values]


# -- ControlNet presets ------------------------------------------------------------------------------------------

CONTROL_PRESETS = {"depth": (1.0, 0.0, 1.0), "edges": (0.6, 0.0, 0.8), "normal": (0.5, 0.0, 1.0)}
"""kind -> (weight, guidance start, guidance end): depth holds the layout, edges add detail and let go at the end,
normals add shading."""

SUGGESTED_CONTROLS = ("depth", "edges")


def apply_control_preset(unit, kind: str, prefs=None) -> None:
    """Set a unit to the preset of ``kind``, with the model path from the preferences when one is set there."""
    weight, start, end = CONTROL_PRESETS.get(kind, (1.0, 0.0, 1.0))
    unit.kind = kind
    unit.weight, unit.guidance_start, unit.guidance_end = weight, start, end
    if prefs is not None and not unit.model:
        unit.model = getattr(prefs, f"controlnet_{kind}", "") or ""


def add_suggested_controls(scene, prefs=None) -> list[str]:
    """Add the suggested units (depth, edges) the shot lacks, with their presets; returns the kinds added. A unit
    of that kind that is switched off is switched on instead of adding a second one."""
    units = scene.neurender.controlnets
    added = []
    for kind in SUGGESTED_CONTROLS:
        existing = [u for u in units if u.kind == kind]
        if existing:
            if not any(u.enabled for u in existing):
                existing[0].enabled = True
                added.append(kind)
            continue
        if len(units) >= contract.MAX_CONTROLNETS:
            break
        apply_control_preset(units.add(), kind, prefs)
        added.append(kind)
    return added


class NeurenderControlUnit(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="Enabled", default=True, description="Use this ControlNet in the render")
    kind: EnumProperty(name="Control", items=_items(contract.CONTROL_KINDS, descriptions={
        "depth": "Depth from the Z pass: keeps the scene's layout and silhouettes",
        "normal": "Surface normals from the Normal pass: keeps shading and surface direction",
        "edges": "Edges of depth and object boundaries: keeps outlines and detail"}), default="depth",
        description="Which control image derived from the passes this ControlNet reads")
    model: StringProperty(name="Model", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                          description="ControlNet file or folder; empty uses the one set in the preferences for this "
                                      "kind")
    weight: FloatProperty(name="Weight", default=1.0, min=0.0, max=4.0,
                          description="How strongly this control steers the image (presets: depth 1.0, edges 0.6, "
                                      "normal 0.5)")
    guidance_start: FloatProperty(name="Start", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                  description="Fraction of the denoising steps after which this control starts")
    guidance_end: FloatProperty(name="End", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                                description="Fraction of the denoising steps after which this control stops (lower "
                                            "leaves the last steps free for texture)")


class NeurenderLora(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="Enabled", default=True, description="Use this LoRA in the render")
    path: StringProperty(name="LoRA", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                         description="LoRA file (.safetensors) for SD 1.5, as the backend's computer sees it")
    weight: FloatProperty(name="Weight", default=contract.LoraSpec(path="x").weight, min=-4.0, max=4.0,
                          description="Strength of the LoRA (1 = as trained; negative pushes away from it)")


# -- the shot: one property per RenderSettings field -------------------------------------------------------------

SCHEDULER_LABELS = {"dpmpp_2m": "DPM++ 2M", "euler_a": "Euler a", "ddim": "DDIM", "lcm": "LCM", "tcd": "TCD"}

FILLED_BY_ADDON = {"model", "controlnets", "loras", "frames", "reference_image", "embeddings", "motion_module"}
"""Contract fields the add-on fills itself (paths resolved with the preferences, the frame range of the job)."""

DERIVED = {"width", "height", "deflicker_steps", "post_deflicker"}
"""Contract fields with a property, but computed from artist-facing ones (Fit within, the deflicker preset)."""


def _custom_deflicker(shot, _context) -> None:
    """A raw step list typed by the artist is used: the deflicker preset becomes Custom."""
    if shot.deflicker_steps.strip() and shot.deflicker_preset != "CUSTOM":
        shot.deflicker_preset = "CUSTOM"


def _field_props() -> dict:
    """Property of each RenderSettings field: label, tooltip and limits here, default from the contract."""
    d = _DEFAULTS
    return {
        "prompt": StringProperty(name="Prompt", default=d.prompt,
                                 description="What the image should show, in words (the scene gives the layout)"),
        "negative_prompt": StringProperty(name="Negative", default=d.negative_prompt,
                                          description="What the image should not show, e.g. 'blurry, text'"),
        "seed": IntProperty(name="Seed", default=d.seed, min=0,
                            description="Random seed: the same seed and settings give the same frames"),
        "steps": IntProperty(name="Steps", default=d.steps, min=1, max=contract.MAX_STEPS,
                             description="Denoising steps: more is slower and usually finer (20-30 is typical)"),
        "guidance_scale": FloatProperty(name="Guidance", default=d.guidance_scale, min=0.0, max=50.0,
                                        description="How closely the image follows the prompt (7.5 is typical)"),
        "scheduler": EnumProperty(name="Scheduler", items=_items(contract.SCHEDULERS, SCHEDULER_LABELS),
                                  default=d.scheduler, description="The sampling method of the denoising steps"),
        "width": IntProperty(name="Width", default=d.width, min=0, max=contract.MAX_RESOLUTION, step=8,
                             description="Exact width in pixels (a multiple of 8); 0 uses Fit within (only one of Width and "
                                         "Height set: the other follows the render's aspect)"),
        "height": IntProperty(name="Height", default=d.height, min=0, max=contract.MAX_RESOLUTION, step=8,
                              description="Exact height in pixels (a multiple of 8); 0 uses Fit within (only one of Width "
                                          "and Height set: the other follows the render's aspect)"),
        "consistency": EnumProperty(
            name="Consistency", default=d.consistency, description="How frames share their look over time",
            items=_items(contract.CONSISTENCY_MODES, {"first+prev": "First + previous"}, {
                "off": "Every frame on its own (flickers)",
                "first": "Every frame attends to the first frame",
                "first+prev": "Every frame attends to the first and the previous frame (recommended)",
                "window": "Overlapping windows of frames attend to each other",
                "keyframes": "Keyframes rendered together, propagated along the scene's exact motion"})),
        "fixed_noise": BoolProperty(name="Fixed noise", default=d.fixed_noise,
                                    description="One starting noise for every frame (steadier textures)"),
        "window_size": IntProperty(name="Window", default=d.window_size, min=2, max=64,
                                   description="Window mode: frames denoised together in one window"),
        "window_stride": IntProperty(name="Stride", default=d.window_stride, min=1, max=64,
                                     description="Window mode: frames between the starts of two windows"),
        "context_length": IntProperty(name="Context", default=d.context_length, min=2, max=64,
                                      description="Motion module: frames denoised together in one window (AnimateDiff "
                                                  "was trained on 16; memory grows with it, not with the shot)"),
        "context_overlap": IntProperty(name="Overlap", default=d.context_overlap, min=0, max=63,
                                       description="Motion module: frames shared by neighbouring windows, blended so "
                                                   "that no seam shows between them"),
        "keyframe_block": IntProperty(name="Keyframe block", default=d.keyframe_block, min=1, max=64,
                                      description="Keyframes mode: one random keyframe per block of this many frames"),
        "img2img_strength": FloatProperty(
            name="Restyle strength", default=d.img2img_strength, min=0.0, max=1.0, subtype="FACTOR",
            description="Keyframes mode: start from the DDIM-inverted beauty render (0: from noise; lower keeps "
                        "more of the render's look)"),
        "inversion_steps": IntProperty(name="Inversion steps", default=d.inversion_steps, min=1, max=1000,
                                       description="Restyle: DDIM inversion steps of the beauty render"),
        "pnp_features": FloatProperty(name="Structure injection", default=d.pnp_features, min=0.0, max=1.0,
                                      subtype="FACTOR",
                                      description="Restyle: fraction of steps with the render's decoder features "
                                                  "injected"),
        "pnp_attention": FloatProperty(name="Attention injection", default=d.pnp_attention, min=0.0, max=1.0,
                                       subtype="FACTOR",
                                       description="Restyle: fraction of steps with the render's attention "
                                                   "queries/keys injected"),
        "batch_size": IntProperty(name="Batch", default=d.batch_size, min=0, max=64,
                                  description="Frames evaluated at once: higher is faster and needs more memory; "
                                              "0 picks it from the GPU's free memory (or the VRAM budget)"),
        # memory options for small GPUs (backend engine/memory.py): the same frames with less memory
        "attention_slice": IntProperty(name="Attention slice", default=d.attention_slice, min=0, max=1 << 20,
                                       description="Attention over at most this many query tokens at a time "
                                                   "(0: all at once). Saves memory in float32 or on older cards"),
        "vae_slicing": BoolProperty(name="VAE slicing", default=d.vae_slicing,
                                    description="Decode and encode one frame at a time (same frames, less memory)"),
        "vae_tiling": BoolProperty(name="VAE tiling", default=d.vae_tiling,
                                   description="Decode large frames in overlapping tiles (less memory; the "
                                               "frames change very slightly)"),
        "cpu_offload": BoolProperty(name="CPU offload", default=d.cpu_offload,
                                    description="Keep the models in system memory and move each to the GPU only "
                                                "while it runs: for 6-8 GB cards, a little slower"),
        "vram_budget": FloatProperty(name="VRAM budget (GiB)", default=d.vram_budget, min=0.0, max=4096.0,
                                     description="Memory the render may use; the batch size is chosen to fit "
                                                 "(0: the GPU's free memory)"),
        "depth_smoothing": IntProperty(name="Depth smoothing", default=d.depth_smoothing, min=0, max=99,
                                       description="0 keeps one depth range for the shot; odd >= 3 smooths it over "
                                                   "this many frames"),
        "deflicker_steps": StringProperty(name="Deflicker steps", default="", update=_custom_deflicker,
                                          description="Custom deflicker: comma-separated denoising steps, counted "
                                                      "from 0, e.g. 4,9,14 (typing here switches Deflicker to "
                                                      "Custom)"),
        "deflicker_method": EnumProperty(name="Matching", default=d.deflicker_method,
                                         items=_items(("auto", "exact", "flow", "patchmatch"), descriptions={
                                             "auto": "Exact motion from the Vector pass when there is one, else "
                                                     "estimated optical flow",
                                             "exact": "Exact motion from the Vector pass",
                                             "flow": "Optical flow estimated from the images (footage without "
                                                     "passes)",
                                             "patchmatch": "Motion estimated from the images"}),
                                         description="Where the deflicker takes the motion between frames from"),
        "deflicker_window": IntProperty(name="Deflicker window", default=d.deflicker_window, min=1, max=32,
                                        description="Frames on each side blended by the deflicker"),
        "post_deflicker": BoolProperty(name="Post pass", default=d.post_deflicker,
                                       description="Custom deflicker: blend the finished frames along the motion"),
        "deflicker_compensate": BoolProperty(name="Colour compensation", default=d.deflicker_compensate,
                                             description="After blending, match each frame's colours to its "
                                                         "window's input"),
        "deflicker_sharpen": BoolProperty(name="Sharpen after blending", default=d.deflicker_sharpen,
                                          description="Contrast and sharpness x1.1 after blending (DiffSynth)"),
        "deflicker_space": EnumProperty(name="Deflicker space", default=d.deflicker_space,
                                        items=_items(contract.DEFLICKER_SPACES, descriptions={
                                            "pixel": "Decode, deflicker and encode again (DiffSynth; better)",
                                            "latent": "Warp the latents directly (cheaper)"}),
                                        description="In-iteration deflicker on decoded frames or on latents"),
        "device": EnumProperty(name="Device", default="auto",
                               items=_items(contract.DEVICES, {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}, {
                                   "auto": "The backend picks CUDA, else Apple MPS, else the CPU, and says which",
                                   "cpu": "The CPU (slow)", "cuda": "An NVIDIA GPU", "mps": "Apple silicon GPU"}),
                               description="Where the backend renders"),
        "dtype": EnumProperty(name="Precision", default="auto",
                              items=_items(contract.DTYPES, {"auto": "Auto"}, {
                                  "auto": "Half precision on a GPU, full precision on the CPU",
                                  "float32": "Full precision", "float16": "Half precision (GPU)",
                                  "bfloat16": "bfloat16 (recent GPUs)"}),
                              description="Number precision of the models: half precision halves memory on a GPU"),
        "prediction_type": EnumProperty(
            name="Prediction", default=d.prediction_type,
            items=_items(contract.PREDICTION_TYPES, {"auto": "Auto", "epsilon": "Epsilon (SD 1.5)",
                                                     "v_prediction": "V-prediction"}, {
                "auto": "Read a .yaml next to the checkpoint (parameterization \"v\"), else epsilon",
                "epsilon": "The checkpoint predicts the noise (SD 1.5 and most fine-tunes)",
                "v_prediction": "The checkpoint predicts v (SD 1.x v-prediction fine-tunes without a .yaml)"}),
            description="What the checkpoint predicts. Auto reads a .yaml next to the checkpoint (parameterization "
                        "\"v\"), else epsilon; set V-prediction for SD 1.x v-prediction fine-tunes without a .yaml"),
        "overwrite": BoolProperty(name="Overwrite frames", default=True,
                                  description="Render every frame again instead of keeping frames already in "
                                              "the job's folder (each render gets a new version folder, so this "
                                              "matters for a job resumed or sent into a folder that has frames)"),
    }


DEFLICKER_PRESETS = {
    "OFF": (0, False, "No deflicker"),
    "STANDARD": (4, True, "4 in-iteration deflicker steps and a post pass (DiffSynth)"),
    "STRONG": (8, True, "8 in-iteration deflicker steps and a post pass"),
}


SHOT_PRESETS: dict[str, tuple[str, str, dict]] = {}
"""name -> (button label, tooltip, shot property values): one click sets several properties (Model & Prompt)."""


def register_preset(name: str, label: str, description: str, values: dict) -> None:
    """Add a preset button (another helper's feature adds its own here, e.g. a few-step scheduler preset)."""
    SHOT_PRESETS[name] = (label, description, dict(values))


register_preset("FAST", "Fast preview", "4 steps with the LCM scheduler: a quick look at the shot (needs an LCM "
                "LoRA or an LCM checkpoint for a clean image)", {"steps": 4, "scheduler": "lcm",
                                                                 "guidance_scale": 1.5, "deflicker_preset": "OFF"})
register_preset("DRAFT", "Draft", "12 steps of DPM++ 2M, light deflicker", {
    "steps": 12, "scheduler": "dpmpp_2m", "guidance_scale": 7.5, "deflicker_preset": "STANDARD"})
register_preset("FINAL", "Final", "30 steps of DPM++ 2M with the Standard deflicker", {
    "steps": 30, "scheduler": "dpmpp_2m", "guidance_scale": 7.5, "deflicker_preset": "STANDARD"})


def apply_preset(scene, name: str) -> None:
    """Set the shot's properties of preset ``name`` (KeyError for an unknown one)."""
    s = shot(scene)
    for prop, value in SHOT_PRESETS[name][2].items():
        setattr(s, prop, value)


def deflicker_plan(shot) -> tuple[list[int], bool]:
    """(deflicker steps, post pass) of the shot's preset: its steps spread evenly over the denoising steps that run
    (with img2img from its start step, ``contract.img2img_start_step``), step 0 excluded (nothing to deflicker in
    pure noise); ``CUSTOM`` reads the raw step list."""
    if shot.deflicker_preset == "CUSTOM":
        return parse_steps(shot.deflicker_steps), shot.post_deflicker
    count, post, _ = DEFLICKER_PRESETS[shot.deflicker_preset]
    n = shot.steps
    first = contract.img2img_start_step(n, shot.img2img_strength) if shot.img2img_strength > 0 and n > 1 else 0
    span = n - first
    steps = sorted({min(n - 1, max(first or 1, first + round(span * (i + 1) / (count + 1)))) for i in range(count)}
                   ) if n > 1 else []
    return steps, post


def render_size(scene) -> tuple[int, int]:
    """(width, height) sent to the backend: the exact size if set, else the render resolution scaled to fit within
    ``fit_within`` on the long side (never enlarged), aspect kept, each side a multiple of 8. With only one exact
    side set, the other follows the render's aspect (a multiple of 8)."""
    s = scene.neurender
    if s.width and s.height:
        return s.width, s.height
    r = scene.render
    w = max(1, r.resolution_x * r.resolution_percentage // 100)
    h = max(1, r.resolution_y * r.resolution_percentage // 100)
    if s.width:
        return s.width, max(8, round(s.width * h / w / 8) * 8)
    if s.height:
        return max(8, round(s.height * w / h / 8) * 8), s.height
    scale = min(1.0, s.fit_within / max(w, h)) if s.fit_within else 1.0
    fw = max(8, int(w * scale) // 8 * 8)
    fh = max(8, int(h * scale) // 8 * 8)
    return fw, fh


_SHOT_EXTRA = {
    "use_motion_module": BoolProperty(name="Motion module (AnimateDiff)", default=False,
                                      description="Denoise the frames with the AnimateDiff motion module set in the "
                                                  "add-on preferences (smoother motion, fewer flickering details)"),
    "controlnets": CollectionProperty(type=NeurenderControlUnit, name="ControlNets",
                                      description="ControlNet units: each steers the image with a control image "
                                                  "derived from the passes"),
    "loras": CollectionProperty(type=NeurenderLora, name="LoRAs",
                                description="LoRA files applied to the model, each with its weight"),
    "reference_image": StringProperty(name="Reference image", subtype="FILE_PATH",
                                      options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                                      description="An image every frame also attends to, for a look to match"),
    "model": StringProperty(name="Checkpoint", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                            description="SD 1.5 checkpoint for this shot; empty uses the one from the preferences"),
    "fit_within": IntProperty(name="Fit within", default=768, min=64, max=contract.MAX_RESOLUTION, step=8,
                              description="The frames' long side in pixels: the render resolution is scaled down to "
                                          "fit (aspect kept, multiples of 8; never enlarged). SD 1.5 works best "
                                          "around 512-768"),
    "deflicker_preset": EnumProperty(
        name="Deflicker", default="STANDARD", description="How hard flicker between frames is smoothed away",
        items=[(k, k.title(), v[2]) for k, v in DEFLICKER_PRESETS.items()]
        + [("CUSTOM", "Custom", "The step list and post pass set under Advanced")]),
    "output_dir": StringProperty(name="Output", subtype="DIR_PATH", default="//neurender/",
                                 options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                                 description="Folder for this shot's renders: each render writes its own "
                                             "passes/vNNN and frames/vNNN inside it (// is the .blend's folder)"),
    "render_hook": BoolProperty(name="Neural render on animation render", default=False,
                                description="After Render Animation (Ctrl+F12, blender -b -a) completes, also render "
                                            "the passes (from a temporary scene) and submit the neural render; still "
                                            "renders (F12) and the artist's output are never touched"),
    "make_movie": BoolProperty(name="Also write a movie", default=False,
                               description="Encode the neural frames as an MP4 next to them (neurender.mp4)"),
    "wait_headless": BoolProperty(name="Wait in background mode", default=True,
                                  description="blender -b: wait for the neural render to finish before exiting"),
    "look_file": StringProperty(name="Look", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                                description="A look file (.nrlook): saved from a shot, applied to another"),
}

def _auto_props(explicit: dict) -> dict:
    """A plain property for each simple RenderSettings field (bool, int, float, str) without an entry in
    ``_field_props``: a field another change adds to the contract reaches the panel (Advanced) and the backend at
    once, with the contract's default. Its label and tooltip are generic, so the panels test fails until the field
    gets its own entry (``AUTO_FIELDS`` must be empty)."""
    out = {}
    for f in dataclasses.fields(contract.RenderSettings):
        if f.name in explicit or f.name in FILLED_BY_ADDON or f.name in _SHOT_EXTRA:
            continue
        default = getattr(_DEFAULTS, f.name)
        label = f.name.replace("_", " ").capitalize()
        description = f"RenderSettings.{f.name} (no tooltip yet)"
        if isinstance(default, bool):
            out[f.name] = BoolProperty(name=label, default=default, description=description)
        elif isinstance(default, int):
            out[f.name] = IntProperty(name=label, default=default, description=description)
        elif isinstance(default, float):
            out[f.name] = FloatProperty(name=label, default=default, description=description)
        elif isinstance(default, str):
            out[f.name] = StringProperty(name=label, default=default, description=description)
    return out


_EXPLICIT = _field_props()
_AUTO = _auto_props(_EXPLICIT)
AUTO_FIELDS = sorted(_AUTO)
"""RenderSettings fields whose property was made by ``_auto_props`` (should be none: give each its entry)."""

NeurenderShot = type("NeurenderShot", (bpy.types.PropertyGroup,), {
    "__doc__": "The shot's neural render settings (saved in the .blend); one property per RenderSettings field.",
    "__annotations__": {**_EXPLICIT, **_AUTO, **_SHOT_EXTRA},
})


_detail_fresh = [False]
"""True between setting ``error_detail`` and setting ``error``: that detail belongs to the error being set."""


def _detail_set(_status, _context) -> None:
    _detail_fresh[0] = True


def _error_set(status, _context) -> None:
    """A new error without a detail of its own clears the previous error's (Copy Message would append it)."""
    if not _detail_fresh[0] and status.error_detail:
        status.error_detail = ""
    _detail_fresh[0] = False


class NeurenderStatus(bpy.types.PropertyGroup):
    """Short-lived state: lives on the WindowManager, so it is never saved in the .blend."""

    connected: BoolProperty(default=False, description="A backend answered Connect")
    backend_info: StringProperty(default="", description="Version and device of the connected backend")
    message: StringProperty(default="", description="The latest status line")
    error: StringProperty(default="", description="The latest error, as one sentence", update=_error_set)
    error_detail: StringProperty(default="", description="The latest error in full (Copy Message)",
                                 update=_detail_set)
    copied: StringProperty(default="", description="The text Copy Message put on the clipboard last")
    job_id: StringProperty(default="", description="The neural render being watched")
    job_state: StringProperty(default="", description="State of the watched job")
    frames_done: IntProperty(default=0, description="Frames written")
    frames_total: IntProperty(default=0, description="Frames of the job")
    step: IntProperty(default=0, description="Denoising step reached")
    steps_total: IntProperty(default=0, description="Denoising steps of the job")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR", name="Progress",
                            description="Share of the job done (never goes backwards)")
    phase: StringProperty(default="", description="What the backend is doing now")
    progress_text: StringProperty(default="", description="Phase, step of steps, frames decoded")
    eta: StringProperty(default="", description="Estimated time left")
    random_weights: BoolProperty(default=False, description="The result is noise from random weights")
    job_device: StringProperty(default="", description="Device and precision the backend picked")
    preview_step: IntProperty(default=0, description="Denoising step shown in the preview image")
    out_dir: StringProperty(default="", description="Folder of the neural frames")


def shot(scene):
    return scene.neurender


def status(context=None) -> NeurenderStatus:
    return (context or bpy.context).window_manager.neurender


parse_steps = contract.parse_step_list  # the one parser of deflicker step lists (0-based indices)
_deflicker_steps = parse_steps  # the old name


def _num(value: float) -> float:
    """A Blender float (single precision: 0.6 reads 0.6000000238) as the number the artist typed."""
    return float(f"{value:.6g}")


def _path(value: str) -> str:
    return bpy.path.abspath(value) if value else ""


def to_settings(scene, prefs=None, frames: str = "") -> "contract.RenderSettings":
    """The scene's shot settings as a checked ``contract.RenderSettings`` (raises ``contract.ContractError``)."""
    s = shot(scene)
    units = []
    for u in s.controlnets:
        if not u.enabled:
            continue
        model = _path(u.model) or (prefs.controlnet_path(u.kind) if prefs else "")
        units.append(contract.ControlNetUnit(kind=u.kind, model=model, weight=_num(u.weight),
                                             guidance_start=_num(u.guidance_start), guidance_end=_num(u.guidance_end)))
    width, height = render_size(scene)
    steps, post = deflicker_plan(s)
    filled = {
        "model": _path(s.model) or (_path(prefs.sd_model) if prefs else ""),
        "controlnets": units,
        "loras": [contract.LoraSpec(path=_path(lora.path), weight=_num(lora.weight)) for lora in s.loras
                  if lora.enabled and lora.path],
        "reference_image": _path(s.reference_image),
        "frames": frames,
        "embeddings": [prefs.embeddings_path()] if prefs is not None and prefs.embeddings_dir else [],
        "motion_module": prefs.motion_module_path() if prefs is not None and s.use_motion_module else "",
        "width": width,
        "height": height,
        "deflicker_steps": steps,
        "post_deflicker": post,
    }
    values = {}
    for f in dataclasses.fields(contract.RenderSettings):
        if f.name in filled:
            values[f.name] = filled[f.name]
        elif f.name in s.bl_rna.properties:
            value = getattr(s, f.name)
            values[f.name] = _num(value) if isinstance(value, float) else value
        else:  # a list/object field without a property: the contract's default (the panels test names it)
            log.warning("the add-on has no property for RenderSettings.%s; its default is sent", f.name)
    settings = contract.RenderSettings(**values)
    settings.check()
    return settings


def apply_settings(scene, data: dict) -> list[str]:
    """Set the shot's properties from settings (a look's); returns the names of fields that were not applied."""
    s = shot(scene)
    skipped = []
    for name, value in data.items():
        if name == "controlnets":
            s.controlnets.clear()
            for u in value:
                unit = s.controlnets.add()
                unit.kind = u.get("kind", "depth")
                unit.model = u.get("model", "")
                unit.weight = u.get("weight", 1.0)
                unit.guidance_start = u.get("guidance_start", 0.0)
                unit.guidance_end = u.get("guidance_end", 1.0)
        elif name == "loras":
            s.loras.clear()
            for spec in value:
                lora = s.loras.add()
                lora.path, lora.weight = spec.get("path", ""), spec.get("weight", 1.0)
        elif name == "deflicker_steps":
            s.deflicker_steps = ", ".join(str(x) for x in value)
            if value or data.get("post_deflicker"):
                s.deflicker_preset = "CUSTOM"
        elif name in ("frames", "overwrite"):
            continue
        elif name in s.bl_rna.properties:
            try:
                setattr(s, name, value)
            except (TypeError, ValueError):
                skipped.append(name)
        else:
            skipped.append(name)
    if not data.get("deflicker_steps") and not data.get("post_deflicker") and "deflicker_steps" in data:
        s.deflicker_preset = "OFF"
    return skipped


classes = (NeurenderControlUnit, NeurenderLora, NeurenderShot, NeurenderStatus)


def register_props() -> None:
    bpy.types.Scene.neurender = PointerProperty(type=NeurenderShot, name="Neural Render",
                                                description="The shot's neural render settings")
    bpy.types.WindowManager.neurender = PointerProperty(type=NeurenderStatus, name="Neural Render status",
                                                        description="The add-on's short-lived status")


def unregister_props() -> None:
    del bpy.types.WindowManager.neurender
    del bpy.types.Scene.neurender
