"""Where neurender keeps generated files (config folders, the random demo model).

Order: ``$NEURENDER_CACHE``, then ``$XDG_CACHE_HOME/neurender``, then ``~/.cache/neurender``.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (not created here)."""
    explicit = os.environ.get("NEURENDER_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "neurender"
