"""What the artist should know before pressing Render: drawn by the panel, reported by the render operators.

This is advice, not the gate (``preflight.py`` refuses what cannot work): the render goes ahead. Each warning is
``(level, text, fix)``: level ``ERROR`` (the output will be noise) or ``WARNING``; ``fix`` is the idname of an
operator that fixes it in one click, or ``""``.
"""

from __future__ import annotations

import os

import bpy

from . import properties

RANDOM_WEIGHTS = ("RANDOM WEIGHTS: no checkpoint is set, so the backend renders with random demo weights and the "
                  "output is noise, not an image. Set a Stable Diffusion checkpoint in the preferences or under "
                  "Model & Prompt.")
NO_CONTROLNET = ("No ControlNet: the output ignores your scene (plain text-to-image). Add the depth and edges "
                 "units to follow its layout.")
ADD_CONTROLS = "neurender.add_suggested_controls"
SMALL = 256
"""Frames whose long side is below this (a 32-latent side) come out shapeless from SD 1.5."""


def checkpoint(scene, prefs) -> str:
    """The checkpoint the job will use: the shot's, else the preferences' ("" = none)."""
    s = scene.neurender
    if s.model:
        return bpy.path.abspath(s.model)
    return bpy.path.abspath(prefs.sd_model) if prefs is not None and prefs.sd_model else ""


def random_weights(scene, prefs) -> bool:
    """No checkpoint anywhere: the backend falls back to its random-weight demo model."""
    return not checkpoint(scene, prefs)


def no_controlnet(scene, prefs) -> bool:
    """A real checkpoint and no enabled ControlNet unit: the render does not follow the scene."""
    return not random_weights(scene, prefs) and not any(u.enabled for u in scene.neurender.controlnets)


def warnings(scene, prefs) -> list[tuple[str, str, str]]:
    out = []
    if random_weights(scene, prefs):
        out.append(("ERROR", RANDOM_WEIGHTS, ""))
    elif no_controlnet(scene, prefs):
        out.append(("WARNING", NO_CONTROLNET, ADD_CONTROLS))
    for u in scene.neurender.controlnets:
        if u.enabled and not u.model and not (prefs is not None and prefs.controlnet_path(u.kind)):
            out.append(("WARNING", f"The {u.kind} ControlNet has no model: set 'ControlNet {u.kind}' in the "
                                   "preferences or the unit's Model.", ""))
    w, h = properties.render_size(scene)
    if max(w, h) > 1024:
        out.append(("WARNING", f"{w} x {h} is large for SD 1.5 (trained at 512): expect repeated objects and long "
                               "renders; lower Fit within under Output.", ""))
    elif max(w, h) < SMALL:
        out.append(("WARNING", f"{w} x {h} is small for SD 1.5 (trained at 512): expect shapeless frames; raise "
                               "the render resolution (Fit within never enlarges) or set Width or Height under "
                               "Advanced.", ""))
    if prefs is not None:
        out += [("WARNING", p[0].upper() + p[1:] + ".", "") for p in model_path_problems(prefs, scene)]
    return out


def model_path_problems(prefs, scene=None) -> list[str]:
    """Model paths that do not exist on this computer (checked only when the backend shares this disk)."""
    if not prefs.shares_disk():
        return []
    paths = [("the Stable Diffusion checkpoint", bpy.path.abspath(prefs.sd_model) if prefs.sd_model else "")]
    paths += [(f"the ControlNet {k}", prefs.controlnet_path(k) if getattr(prefs, f"controlnet_{k}") else "")
              for k in ("depth", "normal", "edges")]
    if scene is not None:
        s = scene.neurender
        paths.append(("the shot's checkpoint", bpy.path.abspath(s.model) if s.model else ""))
        paths += [(f"the {u.kind} ControlNet", bpy.path.abspath(u.model)) for u in s.controlnets
                  if u.enabled and u.model]
        paths += [(f"the LoRA {os.path.basename(lora.path)}", bpy.path.abspath(lora.path)) for lora in s.loras
                  if lora.enabled and lora.path]
        paths.append(("the reference image", bpy.path.abspath(s.reference_image) if s.reference_image else ""))
    return [f"{what} {path} does not exist" for what, path in paths if path and not os.path.exists(path)]


def report(op, scene, prefs) -> None:
    """The render operators report the advice too (the info bar, and the terminal in background mode)."""
    for level, text, _fix in warnings(scene, prefs):
        op.report({"WARNING"}, text)
