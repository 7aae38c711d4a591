"""The JSON schema of ``RenderSettings``, generated from the contract's dataclasses for the OpenAPI spec.

Every field of ``RenderSettings`` (and of its ControlNet / LoRA units) appears with its JSON type, its default, the
allowed values where the contract names them in one tuple (``SCHEDULERS``, ``DTYPES`` ...) and the attribute's
docstring as its description; unknown fields are refused (``additionalProperties: false``), as ``from_dict`` does.
Clients can validate against it; the server still validates with the contract itself (``RenderSettings.from_dict``
and ``check``), so the schema documents the rules and never replaces them. A field added to the contract appears here
without any change to this module (a test compares the two).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from typing import Any

from neurender import contract
from neurender.contract import ControlNetUnit, RenderSettings

CHOICES: dict[tuple[type, str], tuple[str, ...]] = {
    (RenderSettings, "scheduler"): contract.SCHEDULERS,
    (RenderSettings, "consistency"): contract.CONSISTENCY_MODES,
    (RenderSettings, "device"): contract.DEVICES,
    (RenderSettings, "dtype"): contract.DTYPES,
    (RenderSettings, "deflicker_space"): contract.DEFLICKER_SPACES,
    (RenderSettings, "prediction_type"): contract.PREDICTION_TYPES,
    (ControlNetUnit, "kind"): contract.CONTROL_KINDS,
}
"""Fields whose allowed values the contract lists in one tuple."""

_SCALARS = {bool: "boolean", int: "integer", float: "number", str: "string"}


def _docstrings(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after a field) of a dataclass, from its source; {} without one."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def _type_schema(hint: Any) -> dict[str, Any]:
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list and len(args) == 1:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is typing.Union and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return {"anyOf": [_type_schema(inner), {"type": "null"}]}
    if dataclasses.is_dataclass(hint):
        return dataclass_schema(hint)  # type: ignore[arg-type]
    return {}  # a type this module does not know yet: any JSON value (a test fails until it is described)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def dataclass_schema(cls: type) -> dict[str, Any]:
    """The JSON schema of one contract dataclass: an object of its fields, no other keys."""
    hints = typing.get_type_hints(cls, vars(contract))
    docs = _docstrings(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        schema = _type_schema(hints[f.name])
        if (cls, f.name) in CHOICES:
            schema["enum"] = list(CHOICES[(cls, f.name)])
        default = _default(f)
        if default is dataclasses.MISSING:
            required.append(f.name)
        else:
            schema["default"] = default
        if f.name in docs:
            schema["description"] = docs[f.name]
        properties[f.name] = schema
    out: dict[str, Any] = {"type": "object", "title": cls.__name__, "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = required
    doc = inspect.getdoc(cls)
    if doc and not doc.startswith(f"{cls.__name__}("):  # not the dataclass-generated signature
        out["description"] = " ".join(doc.split("\n\n")[0].split())
    return out


def render_settings_schema() -> dict[str, Any]:
    """The JSON schema of ``RenderSettings`` (every key optional: missing ones take their defaults)."""
    return dataclass_schema(RenderSettings)

