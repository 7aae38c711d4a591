"""Bearer-token authentication of ``neurender serve``.

The token is generated with :mod:`secrets` on first run and stored with 0600 permissions; requests carry
``Authorization: Bearer <token>`` and are compared in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Optional

from neurender.errors import InputError

log = logging.getLogger(__name__)

TOKEN_BYTES = 32


class TokenFileError(InputError):
    """The token file is unreadable, empty or readable by other users."""


def load_or_create_token(path: Path) -> str:
    """Read the token at ``path``; create it (mode 0600, exclusive create) if it does not exist yet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(path):
        return _read_token(path)
    # written to a private temporary file, then linked in place (atomic, never replacing an existing file): a process
    # killed meanwhile leaves no empty token file behind, and two servers starting at once end with one token
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as fh:
            token = secrets.token_urlsafe(TOKEN_BYTES)
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_token(path)
        except OSError:  # a file system without hard links: exclusive create, then write
            _write_exclusive(path, token)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("generated a new access token in %s", path)
    return token


def _write_exclusive(path: Path, token: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _read_token(path: Path) -> str:
    """Read an existing token file: a regular file (not a symlink: the link itself is checked, never followed),
    owned by us and closed to other users."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode):
        raise TokenFileError(f"token file {path} must be a regular file (not a symlink or a folder)")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(f"token file {path} is accessible by other users; run: chmod 600 {path}")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:  # swapped for a link between the check and the open
        raise TokenFileError(f"token file {path} cannot be opened as a regular file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise TokenFileError(f"token file {path} must be a regular file")
        raw = fh.read(4096)
    try:
        token = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {path} is not text") from None
    if len(token) < 16:
        raise TokenFileError(f"token file {path} holds no token of at least 16 characters")
    return token


def bearer_matches(header_value: Optional[str], token: str) -> bool:
    """Constant-time check of an ``Authorization`` header against the expected token."""
    if not header_value:
        return False
    scheme, _, given = header_value.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8"))
