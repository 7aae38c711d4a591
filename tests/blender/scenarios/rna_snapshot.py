"""A generic walk of Blender data for "nothing changed" checks: every readable RNA property of a struct, recursing
into pointers and collections to a bounded depth (ID pointers by name), and a diff listing what differs."""

from __future__ import annotations

import bpy


def snap(obj, skip: set, max_depth: int = 3, digits: int | None = None, depth: int = 0) -> dict:
    """Every readable RNA property of ``obj`` except those named in ``skip``; floats rounded to ``digits`` when given
    (None compares them exactly)."""
    out: dict = {}
    if obj is None or depth > max_depth:
        return out

    def num(x):
        return round(x, digits) if digits is not None and isinstance(x, float) else x

    for p in obj.bl_rna.properties:
        k = p.identifier
        if k in skip:
            continue
        try:
            v = getattr(obj, k)
        except Exception:  # noqa: BLE001 - some properties are unreadable headless
            continue
        if p.type == "POINTER":
            if isinstance(v, bpy.types.ID):
                out[k] = v.name
            elif v is not None:
                out[k] = snap(v, skip, max_depth, digits, depth + 1)
        elif p.type == "COLLECTION":
            try:
                out[k] = [i.name if isinstance(i, bpy.types.ID) else snap(i, skip, max_depth, digits, depth + 1)
                          for i in v]
            except TypeError:
                continue
        else:
            try:
                out[k] = [num(x) for x in v] if hasattr(v, "__len__") and not isinstance(v, str) else num(v)
            except TypeError:
                out[k] = str(v)
    return out


def diff(a, b, path: str = "") -> list[str]:
    """``path: before -> after`` for every leaf that differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} -> {b!r}"]
