"""The one settings object of ``neurender serve``: built once from the command line and passed down."""

from __future__ import annotations

import dataclasses
import ipaddress
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from neurender.contract import MAX_FRAMES

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; anything else (0.0.0.0 included) is a network bind."""
    return bool(allowed_hosts(host))


def allowed_hosts(host: str) -> tuple[str, ...]:
    """The ``Host`` header names a token-free server bound to ``host`` answers to; empty for a network bind.

    One rule for both decisions (token or not, which Host names pass): the bind address itself in its canonical
    form (``127.0.0.2``, ``[::1]``), plus ``localhost`` for the two addresses ``localhost`` resolves to; a bind to
    ``localhost`` answers to its name and both addresses. Any other bind (0.0.0.0 included) needs a token.
    """
    name = host.strip().lower()
    if name in LOOPBACK_NAMES:
        return ("localhost", "127.0.0.1", "[::1]")
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return ()
    if not address.is_loopback:
        return ()
    literal = f"[{address.compressed}]" if address.version == 6 else address.compressed
    if str(address) in ("127.0.0.1", "::1"):
        return (literal, "localhost")
    return (literal,)


@dataclass
class ServerConfig:
    """Everything that configures the service. Paths are resolved by :meth:`resolved`."""

    host: str = "127.0.0.1"
    port: int = 8765
    data_dir: Path = field(default_factory=lambda: Path.home() / ".neurender" / "server")
    roots: list[Path] = field(default_factory=list)
    """Directories that request paths (pass folders, output folders, models) must lie inside.
    Empty: the user's home and the temp directory on a loopback bind, only ``data_dir`` on a network bind."""
    model_roots: list[Path] = field(default_factory=list)
    """Extra directories model/LoRA/reference paths in settings may point into (besides ``roots``)."""
    token_file: Optional[Path] = None
    """Default: ``data_dir/token``."""
    require_token: bool = False
    """Also require the token on a loopback bind (always required on any other bind)."""
    device: str = "auto"
    """Reported by ``GET /version``; ``auto`` asks torch once at start-up."""
    max_upload_bytes: int = 8 * 1024**3
    max_upload_files: int = MAX_FRAMES + 64
    max_unpacked_bytes: int = 32 * 1024**3
    max_json_bytes: int = 1024**2
    max_queued_jobs: int = 200
    keep_days: float = 30.0
    """Finished jobs older than this are purged: their record and their server-owned files (uploaded passes, frames
    of a job without ``out_dir``); an ``out_dir`` the client chose is never touched. 0: keep forever."""
    progress_interval: float = 0.1
    """Seconds between progress writes to the database (frame completions are always written)."""
    sse_max_seconds: float = 3600.0
    sse_poll_seconds: float = 0.2

    @property
    def allowed_hosts(self) -> tuple[str, ...]:
        """Host names a token-free server answers to (see :func:`allowed_hosts`)."""
        return allowed_hosts(self.host)

    @property
    def token_required(self) -> bool:
        return self.require_token or not is_loopback(self.host)

    @property
    def db_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def resolved(self) -> "ServerConfig":
        """A copy with absolute, symlink-resolved paths and the default roots filled in."""
        data_dir = Path(self.data_dir).expanduser().resolve()
        roots = [Path(r).expanduser().resolve() for r in self.roots]
        if not roots:
            roots = [Path.home().resolve(), Path(tempfile.gettempdir()).resolve()] if is_loopback(self.host) else []
        if data_dir not in roots:
            roots.append(data_dir)
        model_roots = [Path(r).expanduser().resolve() for r in self.model_roots]
        # the folder is resolved, the file name is not: a token file that is a symlink must be seen (and refused)
        # as one, not silently replaced by its target
        token_file = _resolve_parent(Path(self.token_file)) if self.token_file else data_dir / "token"
        return dataclasses.replace(
            self, data_dir=data_dir, roots=roots, model_roots=model_roots, token_file=token_file
        )


def _resolve_parent(path: Path) -> Path:
    path = path.expanduser()
    return path.parent.resolve() / path.name
