"""Add-on preferences: where the backend is (URL + token, or a local one started from its Python env), models."""

from __future__ import annotations

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import remote


def get(context=None):
    """This add-on's preferences object."""
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


class NEURENDER_AP_preferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_url: StringProperty(name="Backend URL", default="http://127.0.0.1:8765",
                                description="Address of a running neurender backend, e.g. http://127.0.0.1:8765 "
                                            "(or http://render-box:8765 on another computer)")
    shared_disk: EnumProperty(
        name="Backend shares this computer's disk",
        items=[
            (remote.SHARED_AUTO, "Automatic", "Yes for a local backend started here or a loopback URL "
             "(127.0.0.1, localhost); no for any other host"),
            (remote.SHARED_YES, "Yes", "The backend reads the pass folder and writes the frames by path"),
            (remote.SHARED_NO, "No (upload)", "Upload the pass folder as a zip and download the finished frames "
             "into the scene's output folder"),
        ],
        default=remote.SHARED_AUTO,
        description="Whether the backend reads the pass folder and writes the frames on this computer's disk, or "
                    "gets them by upload and download",
    )
    token: StringProperty(name="Token", subtype="PASSWORD", description="Sent as 'Authorization: Bearer' if set")
    start_local: BoolProperty(
        name="Start a local backend",
        description="Start 'neurender serve' from the Python environment below as a child of Blender",
        default=False,
    )
    backend_env: StringProperty(
        name="Backend Python environment", subtype="DIR_PATH",
        description="Folder of the Python environment where neurender is installed (contains bin/neurender)",
    )
    local_port: IntProperty(name="Port", default=0, min=0, max=65535, description="0 picks a free port")
    backend_root: StringProperty(
        name="Allowed root", subtype="DIR_PATH",
        description="Folder the local backend may read passes from and write frames to (empty: your home folder)",
    )
    sd_model: StringProperty(name="Stable Diffusion checkpoint", subtype="FILE_PATH",
                             description="SD 1.5 checkpoint (.safetensors) or diffusers folder, as the backend's "
                                         "computer sees it")
    controlnet_depth: StringProperty(name="ControlNet depth", subtype="FILE_PATH",
                                     description="ControlNet for the depth control image (from the Z pass): a "
                                                 ".safetensors file or diffusers folder for SD 1.5; new depth units "
                                                 "use it")
    controlnet_normal: StringProperty(name="ControlNet normal", subtype="FILE_PATH",
                                      description="ControlNet for the normal control image (from the Normal pass): "
                                                  "a .safetensors file or diffusers folder for SD 1.5; new normal "
                                                  "units use it")
    controlnet_edges: StringProperty(name="ControlNet edges", subtype="FILE_PATH",
                                     description="ControlNet for the edges control image (lineart/canny-style): a "
                                                 ".safetensors file or diffusers folder for SD 1.5; new edges units "
                                                 "use it")
    motion_module: StringProperty(
        name="Motion module", subtype="FILE_PATH",
        description="AnimateDiff motion module for shots that use one: mm_sd_v15_v2.ckpt (or .safetensors), or a "
                    "diffusers MotionAdapter folder, as the backend's computer sees it")
    embeddings_dir: StringProperty(
        name="Embeddings", subtype="DIR_PATH",
        description="Folder of textual-inversion embeddings (.pt/.safetensors, e.g. EasyNegative): each is used in a "
                    "prompt or negative prompt by its file name, as the backend's computer sees it")
    force_version: BoolProperty(name="Ignore protocol mismatch", default=False,
                                description="Talk to a backend of another protocol version anyway (may fail)")

    def draw(self, context):
        layout = self.layout
        col = layout.column()
        col.prop(self, "start_local")
        if self.start_local:
            col.prop(self, "backend_env")
            col.prop(self, "backend_root")
            col.prop(self, "local_port")
        else:
            col.prop(self, "backend_url")
        col.prop(self, "shared_disk")  # shown for both: an override also applies to a local backend
        col.prop(self, "token")
        col.prop(self, "force_version")
        box = layout.box()
        box.label(text="Models")
        box.prop(self, "sd_model")
        box.prop(self, "controlnet_depth")
        box.prop(self, "controlnet_normal")
        box.prop(self, "controlnet_edges")
        box.prop(self, "embeddings_dir")
        box.prop(self, "motion_module")

    def motion_module_path(self) -> str:
        return bpy.path.abspath(self.motion_module).rstrip("/\\") if self.motion_module else ""

    def embeddings_path(self) -> str:
        return bpy.path.abspath(self.embeddings_dir).rstrip("/\\") if self.embeddings_dir else ""

    def controlnet_path(self, kind: str) -> str:
        return bpy.path.abspath(getattr(self, f"controlnet_{kind}", ""))

    def shares_disk(self, url: str = "") -> bool:
        """Whether jobs go by path (True) or by upload/download (False) for the backend at ``url``."""
        return remote.shares_disk(self.shared_disk, url or self.backend_url, self.start_local)

    def model_folders(self) -> list[str]:
        """Folders of the checkpoint and ControlNets set here (a local backend may read models from them)."""
        paths = [bpy.path.abspath(self.sd_model)] + [self.controlnet_path(k) for k in ("depth", "normal", "edges")]
        folders = [os.path.dirname(os.path.abspath(p.rstrip("/\\"))) for p in paths if p]
        folders += [os.path.dirname(os.path.abspath(self.motion_module_path()))] if self.motion_module else []
        return folders + ([os.path.abspath(self.embeddings_path())] if self.embeddings_dir else [])

    def resolved_root(self) -> str:
        return os.path.abspath(bpy.path.abspath(self.backend_root)) if self.backend_root else os.path.expanduser("~")


classes = (NEURENDER_AP_preferences,)
