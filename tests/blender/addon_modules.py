"""Import the add-on's bpy-free modules (camera_math, client, worker) without Blender.

They live in a package whose ``__init__`` imports bpy, so a stand-in parent package is made whose path is a
staged copy of the add-on (with the contract module staged as in the real zip); ``__init__`` is never run.
"""

import importlib
import os
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "scripts"))

PKG = "neurender_addon_under_test"


def load(name: str):
    if PKG not in sys.modules:
        import build_extension

        staged = build_extension.stage(os.path.join(tempfile.mkdtemp(prefix="nr-stage-"), "neurender"))
        pkg = types.ModuleType(PKG)
        pkg.__path__ = [staged]
        sys.modules[PKG] = pkg
    return importlib.import_module(f"{PKG}.{name}")
