"""Shared start-up of a scenario process: isolated Blender, the extension installed from the zip."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, "scripts", "demo"))
sys.path.insert(0, os.path.dirname(HERE))

import addon_env  # noqa: E402


def start(config_path: str):
    """Returns (config dict, add-on module)."""
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    addon_env.isolate(config["tmp"])
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    mod = addon_env.install(config["zip"])
    return config, mod


def finish(result: dict) -> None:
    import bpy

    addon_env.disable()
    leftovers = [f"{name}:{h.__module__}.{h.__name__}" for name in dir(bpy.app.handlers)
                 if isinstance(getattr(bpy.app.handlers, name), list)
                 for h in getattr(bpy.app.handlers, name) if "neurender" in (h.__module__ or "")]
    result["leftover_handlers"] = leftovers
    print("RESULT " + json.dumps(result), flush=True)
