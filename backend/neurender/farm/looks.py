"""Looks: what makes a result recognisable, saved once and reused on other shots.

A look file is a zip archive (``.nrlook``) holding ``look.json`` (a version, a name, and the render settings that
define the look: model, LoRAs, ControlNets, prompts, seed, sampler, consistency; never frames or overwrite), the
reference image if the settings name one, and the shot's anchors folder (``anchors.py``). Rendering another shot
with ``--look FILE`` starts from those settings and attends to the same anchors, so the second clip draws its
appearance from exactly the frames the first one did.

Opening a look extracts it once into ``<cache>/looks/<sha256 of the file>/`` (atomically), so every chunk on a node
reads the same bytes; only known member names are extracted.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from neurender.contract import ContractError, RenderSettings
from neurender.errors import InputError
from neurender.farm.anchor_files import ANCHORS_DATA, ANCHORS_META, read_meta

log = logging.getLogger(__name__)

LOOK_VERSION = 1
LOOK_META = "look.json"
LOOK_SUFFIX = ".nrlook"
_NOT_LOOK = ("frames", "overwrite")
_MEMBER = re.compile(
    r"^(look\.json|reference\.(png|jpg|jpeg|webp)|anchors/(anchors\.json|anchors\.pt|anchor_\d{4,}\.png))$"
)


@dataclass
class Look:
    path: Path
    name: str
    settings: RenderSettings
    anchors: Optional[Path]
    """Extracted anchors folder, or None when the look has no anchors."""
    folder: Path


def look_settings(settings: RenderSettings) -> dict:
    data = settings.to_dict()
    for name in _NOT_LOOK:
        data.pop(name, None)
    return data


def save_look(
    path: Path | str, settings: RenderSettings, *, anchors: Optional[Path | str] = None, name: str = ""
) -> Path:
    """Write a look file (atomically). ``anchors`` is an anchors folder computed with compatible settings."""
    settings.check()
    path = Path(path)
    data = look_settings(settings)
    members: dict[str, bytes] = {}
    if settings.reference_image:
        ref = Path(settings.reference_image)
        if not ref.is_file():
            raise InputError(f"reference image {ref} does not exist")
        suffix = ref.suffix.lower().lstrip(".")
        if suffix not in ("png", "jpg", "jpeg", "webp"):
            raise InputError(f"reference image {ref} must be a PNG, JPEG or WebP file to go into a look")
        members[f"reference.{suffix}"] = ref.read_bytes()
        data["reference_image"] = f"reference.{suffix}"
    if anchors is not None:
        folder = Path(anchors)
        meta = read_meta(folder)
        from neurender.farm.anchor_files import check_compatible

        check_compatible(meta, settings, folder)
        for member in [ANCHORS_META, ANCHORS_DATA] + [f"anchor_{int(f):04d}.png" for f in meta["frames"]]:
            if (folder / member).is_file():
                members[f"anchors/{member}"] = (folder / member).read_bytes()
    meta = {"version": LOOK_VERSION, "name": name or path.stem, "settings": data, "has_anchors": anchors is not None}
    members[LOOK_META] = json.dumps(meta, indent=1, sort_keys=True).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for member in sorted(members):  # a fixed order and fixed timestamps: the same look gives the same bytes
            info = zipfile.ZipInfo(member, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, members[member])
    from neurender.frames import write_bytes_atomic

    write_bytes_atomic(path, buf.getvalue())
    log.info("look %s saved to %s (%d files)", meta["name"], path, len(members))
    return path


def _cache_dir() -> Path:
    from neurender.models.cachedir import cache_root

    return cache_root() / "looks"


def open_look(path: Path | str, cache_dir: Optional[Path] = None) -> Look:
    """Read a look file; its reference image and anchors are extracted into the cache (once per file content)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"look file {path} does not exist") from None
    except OSError as exc:
        raise InputError(f"look file {path} cannot be read: {exc}") from None
    digest = hashlib.sha256(raw).hexdigest()
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        meta = json.loads(zf.read(LOOK_META))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InputError(f"{path} is not a neurender look file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != LOOK_VERSION:
        raise InputError(f"look file {path} has version {meta.get('version') if isinstance(meta, dict) else '?'}; "
                         f"this neurender reads version {LOOK_VERSION}")
    root = Path(cache_dir) if cache_dir is not None else _cache_dir()
    folder = root / digest[:32]
    if not (folder / LOOK_META).is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".look-", dir=root))
        try:
            for member in zf.namelist():
                if not _MEMBER.match(member):
                    log.warning("look %s: ignoring unexpected member %s", path, member)
                    continue
                target = tmp / member
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(member))
            os.chmod(tmp, 0o755)
            try:
                os.replace(tmp, folder)
            except OSError:  # another process extracted it first
                if not (folder / LOOK_META).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    data = dict(meta.get("settings", {}))
    if data.get("reference_image"):
        data["reference_image"] = str(folder / data["reference_image"])
    try:
        settings = RenderSettings.from_dict(data)
    except ContractError as exc:
        raise InputError(f"look file {path}: {exc}") from None
    anchors = folder / "anchors" if (folder / "anchors" / ANCHORS_META).is_file() else None
    return Look(path=path, name=str(meta.get("name", path.stem)), settings=settings, anchors=anchors, folder=folder)
