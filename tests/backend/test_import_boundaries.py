"""Imports go one way: the add-on never imports the ML stack, the backend never imports Blender, and the wire
contract (copied verbatim into the extension zip) imports the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ADDON_FORBIDDEN = {"torch", "diffusers", "transformers", "cv2", "safetensors", "accelerate", "peft", "neurender"}
BACKEND_FORBIDDEN = {"bpy", "bmesh", "mathutils", "bpy_extras", "bl_math", "gpu", "addon_utils"}


def top_level_imports(path: Path) -> set[str]:
    """Absolute top-level module names imported anywhere in the file (also inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.add(str(node.args[0].value).split(".")[0])
    return names


def _violations(root: Path, forbidden: set[str]) -> list[str]:
    files = sorted(root.rglob("*.py"))
    assert files, f"no Python files under {root}"
    return [f"{p.relative_to(REPO)} imports {sorted(top_level_imports(p) & forbidden)}"
            for p in files if top_level_imports(p) & forbidden]


def test_addon_does_not_import_the_ml_stack():
    assert _violations(REPO / "blender_addon", ADDON_FORBIDDEN) == []


def test_backend_does_not_import_blender():
    assert _violations(REPO / "backend" / "neurender", BACKEND_FORBIDDEN) == []


def test_contract_is_stdlib_only():
    path = REPO / "backend" / "neurender" / "contract.py"
    extra = top_level_imports(path) - set(sys.stdlib_module_names) - {"__future__"}
    assert extra == set(), f"contract.py imports non-stdlib modules: {sorted(extra)}"


def test_the_checker_catches_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\ndef f():\n    from torch import nn\n    import importlib; importlib.import_module('cv2.x')\n")
    assert {"torch", "cv2"} <= top_level_imports(bad)
