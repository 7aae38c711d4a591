#!/usr/bin/env python3
"""Build the neurender Blender extension zip.

Stages blender_addon/ + blender_manifest.toml + a verbatim copy of backend/neurender/contract.py (as
``neurender_contract.py``) in a temporary folder, then validates and builds it with Blender's own extension
tool (``bl_pkg/cli/blender_ext.py``, shipped with Blender and with the bpy module). Usage:

    .venv-blender/bin/python scripts/build_extension.py [--out dist/] [--stage DIR]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON_DIR = os.path.join(REPO, "blender_addon")
MANIFEST = os.path.join(REPO, "blender_manifest.toml")
CONTRACT = os.path.join(REPO, "backend", "neurender", "contract.py")
CONTRACT_NAME = "neurender_contract.py"


def find_blender_ext() -> str:
    """Locate blender_ext.py: $BLENDER_EXT, the bpy module of this Python, or the repo's .venv-blender."""
    if os.environ.get("BLENDER_EXT"):
        return os.environ["BLENDER_EXT"]
    roots = []
    spec = importlib.util.find_spec("bpy")
    if spec is not None and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
    roots += glob.glob(os.path.join(REPO, ".venv-blender", "lib", "python3*", "site-packages", "bpy"))
    for root in roots:
        hits = sorted(glob.glob(os.path.join(root, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py")))
        if hits:
            return hits[-1]
    raise SystemExit("blender_ext.py not found: install bpy (scripts/setup_env.sh) or set BLENDER_EXT")


def stage(dest: str) -> str:
    """Copy the package sources into ``dest`` (created) and return it."""
    if os.path.exists(os.path.join(ADDON_DIR, CONTRACT_NAME)):
        raise SystemExit(f"blender_addon/{CONTRACT_NAME} must not exist: the contract is staged from the backend")
    shutil.copytree(ADDON_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
    shutil.copy2(MANIFEST, os.path.join(dest, "blender_manifest.toml"))
    shutil.copy2(CONTRACT, os.path.join(dest, CONTRACT_NAME))
    return dest


def build(out_dir: str) -> str:
    """Stage, validate and build; returns the path of the zip."""
    with open(MANIFEST, "rb") as f:
        meta = tomllib.load(f)
    tool = find_blender_ext()
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="neurender-ext-") as tmp:
        src = stage(os.path.join(tmp, meta["id"]))
        for args in (["validate", src], ["build", "--source-dir", src, "--output-dir", out_dir]):
            proc = subprocess.run([sys.executable, tool, *args], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"blender_ext.py {args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    path = os.path.join(out_dir, f"{meta['id']}-{meta['version']}.zip")
    if not os.path.isfile(path):
        raise SystemExit(f"the build did not produce {path}")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(REPO, "dist"), help="output folder for the zip")
    ap.add_argument("--stage", help="only stage the package sources into this folder")
    args = ap.parse_args(argv)
    if args.stage:
        print(stage(args.stage))
        return 0
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
