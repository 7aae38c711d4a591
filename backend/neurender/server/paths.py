"""Confinement of request paths to the configured roots.

A request path must be absolute, must not contain ``..`` components, and after resolving every symlink it must
lie inside one of the allowed roots (themselves resolved). Anything else is refused, never "fixed".
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Sequence

from neurender.contract import ErrorKind
from neurender.errors import InputError

MAX_PATH_CHARS = 4096


class PathRefused(InputError):
    """A path in a request that is malformed or lies outside the allowed roots."""

    kind = ErrorKind.PATH_REFUSED


class PathOutsideRoots(PathRefused):
    kind = ErrorKind.PATH_OUTSIDE_ROOTS


def confine(raw: object, roots: Sequence[Path], what: str) -> Path:
    """Return the resolved ``raw`` path if it lies inside one of ``roots``; raise ``PathRefused`` otherwise."""
    if not isinstance(raw, str) or not raw:
        raise PathRefused(f"{what} must be a non-empty absolute path")
    if len(raw) > MAX_PATH_CHARS or "\x00" in raw:
        raise PathRefused(f"{what} is not a valid path")
    if ".." in PurePosixPath(raw).parts or ".." in PureWindowsPath(raw).parts:
        raise PathRefused(f"{what} {raw!r} must not contain '..'")
    path = Path(raw)
    if not path.is_absolute():
        raise PathRefused(f"{what} {raw!r} must be an absolute path")
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:
        raise PathRefused(f"{what} {raw!r} cannot be resolved: {exc}") from None
    for root in roots:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise PathOutsideRoots(f"{what} {raw!r} lies outside the folders this server may use (see --root)")
