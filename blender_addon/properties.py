"""Shot settings on the Scene (saved in the .blend) and short-lived status on the WindowManager (never saved).

``NeurenderShot`` mirrors ``contract.RenderSettings``; ``to_settings`` builds that contract object and checks it,
so bad settings are reported before anything is rendered or sent.
"""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty,
)

from . import neurender_contract as contract


def _items(values, labels=None):
    labels = labels or {}
    return [(v, labels.get(v, v.replace("_", " ").title()), "") for v in values]


class NeurenderControlUnit(bpy.types.PropertyGroup):
    enabled: BoolProperty(name="Enabled", default=True)
    kind: EnumProperty(name="Control", items=_items(contract.CONTROL_KINDS), default="depth")
    model: StringProperty(name="Model", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                          description="ControlNet path; empty uses the one set in the preferences for this kind")
    weight: FloatProperty(name="Weight", default=1.0, min=0.0, max=4.0)
    guidance_start: FloatProperty(name="Start", default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    guidance_end: FloatProperty(name="End", default=1.0, min=0.0, max=1.0, subtype="FACTOR")


class NeurenderShot(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", default="")
    negative_prompt: StringProperty(name="Negative", default="")
    seed: IntProperty(name="Seed", default=0, min=0)
    steps: IntProperty(name="Steps", default=20, min=1, max=contract.MAX_STEPS)
    guidance_scale: FloatProperty(name="Guidance", default=7.5, min=0.0, max=50.0)
    scheduler: EnumProperty(name="Scheduler", items=_items(contract.SCHEDULERS, {"dpmpp_2m": "DPM++ 2M",
                                                                                 "euler_a": "Euler a",
                                                                                 "ddim": "DDIM", "lcm": "LCM",
                                                                                 "tcd": "TCD"}),
                            default="dpmpp_2m")
    width: IntProperty(name="Width", default=0, min=0, max=contract.MAX_RESOLUTION, step=8,
                       description="0: the render resolution rounded down to a multiple of 8")
    height: IntProperty(name="Height", default=0, min=0, max=contract.MAX_RESOLUTION, step=8)
    model: StringProperty(name="Checkpoint", subtype="FILE_PATH", options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                          description="Empty uses the Stable Diffusion checkpoint from the preferences")
    controlnets: CollectionProperty(type=NeurenderControlUnit)
    consistency: EnumProperty(name="Consistency", items=_items(contract.CONSISTENCY_MODES,
                                                                {"first+prev": "First + previous"}),
                              default="first+prev")
    fixed_noise: BoolProperty(name="Fixed noise", default=True)
    window_size: IntProperty(name="Window", default=8, min=2, max=64)
    window_stride: IntProperty(name="Stride", default=4, min=1, max=64)
    batch_size: IntProperty(name="Batch", default=4, min=1, max=64)
    depth_smoothing: IntProperty(name="Depth smoothing", default=0, min=0, max=99,
                                 description="0 keeps one depth range for the shot; odd >= 3 smooths it")
    deflicker_steps: StringProperty(name="Deflicker steps", default="",
                                    description="Comma-separated denoising step indices, e.g. 4,9,14")
    deflicker_method: EnumProperty(name="Deflicker", items=_items(("auto", "exact", "flow", "patchmatch")), default="auto")
    deflicker_window: IntProperty(name="Deflicker window", default=4, min=1, max=32)
    post_deflicker: BoolProperty(name="Post deflicker", default=False)
    deflicker_compensate: BoolProperty(name="Colour compensation", default=False,
                                       description="After blending, match each frame's colours to its window's input")
    deflicker_sharpen: BoolProperty(name="Sharpen after blending", default=False,
                                    description="Contrast and sharpness x1.1 after blending (DiffSynth)")
    deflicker_space: EnumProperty(name="Deflicker space", items=_items(contract.DEFLICKER_SPACES), default="pixel",
                                  description="In-iteration deflicker on decoded frames (DiffSynth) or on latents "
                                              "(cheaper)")
    keyframe_block: IntProperty(name="Keyframe block", default=8, min=1, max=64,
                                description="Keyframes mode: one random keyframe per block of this many frames")
    img2img_strength: FloatProperty(name="Restyle strength", default=0.0, min=0.0, max=1.0, subtype="FACTOR",
                                    description="Keyframes mode: start from the DDIM-inverted beauty render "
                                                "(0: from noise; lower keeps more of the render's look)")
    inversion_steps: IntProperty(name="Inversion steps", default=50, min=1, max=1000)
    pnp_features: FloatProperty(name="Structure injection", default=0.8, min=0.0, max=1.0, subtype="FACTOR",
                                description="Fraction of steps with the render's decoder features injected")
    pnp_attention: FloatProperty(name="Attention injection", default=0.5, min=0.0, max=1.0, subtype="FACTOR",
                                 description="Fraction of steps with the render's attention queries/keys injected")
    device: EnumProperty(name="Device", items=_items(contract.DEVICES, {"cpu": "CPU", "cuda": "CUDA", "mps": "MPS"}),
                         default="cpu")
    dtype: EnumProperty(name="Precision", items=_items(contract.DTYPES), default="float32")
    prediction_type: EnumProperty(
        name="Prediction", items=_items(contract.PREDICTION_TYPES, {"auto": "Auto", "epsilon": "Epsilon (SD 1.5)",
                                                                    "v_prediction": "V-prediction"}),
        default="auto",
        description="What the checkpoint predicts. Auto reads a .yaml next to the checkpoint (parameterization "
                    "\"v\"), else epsilon; set V-prediction for SD 1.x v-prediction fine-tunes without a .yaml")
    overwrite: BoolProperty(name="Overwrite frames", default=True,
                            description="Render every frame again instead of keeping frames already done")
    output_dir: StringProperty(name="Output", subtype="DIR_PATH", default="//neurender/",
                               options={"PATH_SUPPORTS_BLEND_RELATIVE"},
                               description="Folder for the pass folder and the neural frames")
    render_hook: BoolProperty(name="Neural render on animation render", default=False,
                              description="After Render Animation (Ctrl+F12, blender -b -a) completes, also render the "
                                          "passes (from a temporary scene) and submit the neural render; still "
                                          "renders (F12) and the artist's output are never touched")
    make_movie: BoolProperty(name="Also write a movie", default=False,
                             description="Encode the neural frames as an MP4 next to them (neurender.mp4)")
    wait_headless: BoolProperty(name="Wait in background mode", default=True)


class NeurenderStatus(bpy.types.PropertyGroup):
    """Short-lived state: lives on the WindowManager, so it is never saved in the .blend."""

    connected: BoolProperty(default=False)
    backend_info: StringProperty(default="")
    message: StringProperty(default="")
    error: StringProperty(default="")
    job_id: StringProperty(default="")
    job_state: StringProperty(default="")
    frames_done: IntProperty(default=0)
    frames_total: IntProperty(default=0)
    step: IntProperty(default=0)
    steps_total: IntProperty(default=0)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR", name="Progress")
    out_dir: StringProperty(default="")


def shot(scene) -> NeurenderShot:
    return scene.neurender


def status(context=None) -> NeurenderStatus:
    return (context or bpy.context).window_manager.neurender


def _deflicker_steps(text: str) -> list[int]:
    out = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise contract.ContractError(f"deflicker steps {text!r} must be whole numbers separated by commas") from None
    return out


def to_settings(scene, prefs=None, frames: str = "") -> "contract.RenderSettings":
    """The scene's shot settings as a checked ``contract.RenderSettings`` (raises ``contract.ContractError``)."""
    s = shot(scene)
    units = []
    for u in s.controlnets:
        if not u.enabled:
            continue
        model = bpy.path.abspath(u.model) if u.model else (prefs.controlnet_path(u.kind) if prefs else "")
        units.append(contract.ControlNetUnit(kind=u.kind, model=model, weight=u.weight,
                                             guidance_start=u.guidance_start, guidance_end=u.guidance_end))
    model = bpy.path.abspath(s.model) if s.model else (bpy.path.abspath(prefs.sd_model) if prefs else "")
    settings = contract.RenderSettings(
        prompt=s.prompt, negative_prompt=s.negative_prompt, seed=s.seed, steps=s.steps,
        guidance_scale=s.guidance_scale, scheduler=s.scheduler, width=s.width, height=s.height, model=model,
        controlnets=units, consistency=s.consistency, fixed_noise=s.fixed_noise, window_size=s.window_size,
        window_stride=s.window_stride, batch_size=s.batch_size, depth_smoothing=s.depth_smoothing,
        deflicker_steps=_deflicker_steps(s.deflicker_steps), deflicker_method=s.deflicker_method,
        deflicker_window=s.deflicker_window, post_deflicker=s.post_deflicker, deflicker_space=s.deflicker_space,
        deflicker_compensate=s.deflicker_compensate, deflicker_sharpen=s.deflicker_sharpen,
        keyframe_block=s.keyframe_block, img2img_strength=s.img2img_strength, inversion_steps=s.inversion_steps,
        pnp_features=s.pnp_features, pnp_attention=s.pnp_attention, frames=frames, device=s.device,
        dtype=s.dtype, overwrite=s.overwrite, prediction_type=s.prediction_type,
        embeddings=[prefs.embeddings_path()] if prefs and prefs.embeddings_dir else [],
    )
    settings.check()
    return settings


classes = (NeurenderControlUnit, NeurenderShot, NeurenderStatus)


def register_props() -> None:
    bpy.types.Scene.neurender = PointerProperty(type=NeurenderShot)
    bpy.types.WindowManager.neurender = PointerProperty(type=NeurenderStatus)


def unregister_props() -> None:
    del bpy.types.WindowManager.neurender
    del bpy.types.Scene.neurender
