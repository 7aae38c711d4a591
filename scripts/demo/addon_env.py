"""Run bpy with an isolated user folder and the neurender extension installed from its zip.

Used by the demo scripts and the Blender tests (each in its own ``.venv-blender/bin/python`` process):

    env = addon_env.isolate()          # before ``import bpy``
    mod = addon_env.install(zip_path)  # Blender's own extension install, enabled
    ...
    addon_env.disable()                # unregisters: removes every handler and timer (bpy 4.5 hangs otherwise)
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile

MODULE = "bl_ext.user_default.neurender"


def isolate(base: str = "") -> str:
    """Point Blender's user resources and caches at a private folder; must run before ``import bpy``."""
    if "bpy" in sys.modules:
        raise RuntimeError("isolate() must run before bpy is imported")
    base = base or tempfile.mkdtemp(prefix="neurender-blender-")
    os.environ["BLENDER_USER_RESOURCES"] = os.path.join(base, "user")
    os.environ["XDG_CACHE_HOME"] = os.path.join(base, "cache")
    os.makedirs(os.environ["BLENDER_USER_RESOURCES"], exist_ok=True)
    return base


def install(zip_path: str):
    """Install and enable the extension zip through Blender's extension install; returns the add-on module."""
    import bpy

    result = bpy.ops.extensions.package_install_files(filepath=os.path.abspath(zip_path), repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"}:
        raise RuntimeError(f"installing {zip_path} failed: {result}")
    if MODULE not in bpy.context.preferences.addons:
        raise RuntimeError(f"{MODULE} is installed but not enabled")
    return importlib.import_module(MODULE)


def disable() -> None:
    import addon_utils

    addon_utils.disable(MODULE, default_set=True)


def build_zip(out_dir: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(here))
    import build_extension

    return build_extension.build(out_dir)
