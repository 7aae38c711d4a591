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
MAX_COMPONENT_BYTES = 255
"""The longest file name (one path component) of the common file systems (ext4, XFS, APFS, NTFS), in UTF-8 bytes."""


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
    try:
        encoded = raw.encode("utf-8")  # strict: a lone surrogate could never be written into a response
    except UnicodeEncodeError:
        raise PathRefused(f"{what} is not valid Unicode text") from None
    if len(encoded) > MAX_PATH_CHARS:
        raise PathRefused(f"{what} is not a valid path (longer than {MAX_PATH_CHARS} bytes)")
    if any(len(part) > MAX_COMPONENT_BYTES for part in encoded.split(b"/")):
        raise PathRefused(f"{what} has a folder or file name longer than {MAX_COMPONENT_BYTES} bytes")
    if ".." in PurePosixPath(raw).parts or ".." in PureWindowsPath(raw).parts:
        raise PathRefused(f"{what} {raw!r} must not contain '..'")
    path = Path(raw)
    if not path.is_absolute():
        raise PathRefused(f"{what} {raw!r} must be an absolute path")
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:
        raise PathRefused(f"{what} {raw!r} cannot be resolved: {exc}") from None
    if not inside(resolved, roots):
        raise PathOutsideRoots(f"{what} {raw!r} lies outside the folders this server may use (see --root)")
    return resolved


def inside(resolved: Path, roots: Sequence[Path]) -> bool:
    """True if the already resolved ``resolved`` is one of ``roots`` or lies below one."""
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def confine_file(path: Path, roots: Sequence[Path], what: str) -> Path:
    """Refuse a file (e.g. a frame EXR inside a pass folder) that is, or links to, something outside ``roots``."""
    try:
        resolved = Path(os.path.realpath(path))
    except (OSError, ValueError) as exc:
        raise PathRefused(f"{what} cannot be resolved: {exc}") from None
    if not inside(resolved, roots):
        raise PathOutsideRoots(f"{what} links to a file outside the folders this server may use (see --root)")
    return resolved
