"""Look files (``.nrlook``) from Blender, standard library only: the same zip the backend writes and reads
(``neurender.farm.looks``, version 1): ``look.json`` = {"version", "name", "settings", "has_anchors"} plus the
reference image as ``reference.<ext>``. Saved from the shot's settings; applied by setting the shot's properties.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile

from . import neurender_contract as contract

LOOK_VERSION = 1
LOOK_META = "look.json"
LOOK_SUFFIX = ".nrlook"
_NOT_LOOK = ("frames", "overwrite")
_IMAGE_SUFFIXES = ("png", "jpg", "jpeg", "webp")


def save(path: str, settings: "contract.RenderSettings", name: str = "") -> str:
    """Write ``settings`` as a look file at ``path`` (atomically); the reference image goes inside."""
    if not path.endswith(LOOK_SUFFIX):
        path += LOOK_SUFFIX
    data = settings.to_dict()
    for key in _NOT_LOOK:
        data.pop(key, None)
    members: dict[str, bytes] = {}
    if settings.reference_image:
        suffix = os.path.splitext(settings.reference_image)[1].lower().lstrip(".")
        if suffix not in _IMAGE_SUFFIXES:
            raise contract.ContractError(f"the reference image {settings.reference_image} must be a PNG, JPEG or "
                                         "WebP file to go into a look")
        try:
            with open(settings.reference_image, "rb") as f:
                members[f"reference.{suffix}"] = f.read()
        except OSError as exc:
            raise contract.ContractError(f"the reference image cannot be read: {exc}") from None
        data["reference_image"] = f"reference.{suffix}"
    meta = {"version": LOOK_VERSION, "name": name or os.path.splitext(os.path.basename(path))[0],
            "settings": data, "has_anchors": False}
    members[LOOK_META] = json.dumps(meta, indent=1, sort_keys=True).encode()
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".look-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for member in sorted(members):
                info = zipfile.ZipInfo(member, date_time=(2000, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, members[member])
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load(path: str, extract_to: str) -> tuple[str, dict]:
    """(name, settings dict) of a look file; its reference image is extracted into ``extract_to``."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise contract.ContractError(f"the look file {path} cannot be read: {exc}") from None
    try:
        zf = zipfile.ZipFile(io.BytesIO(raw))
        meta = json.loads(zf.read(LOOK_META))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise contract.ContractError(f"{path} is not a neurender look file ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != LOOK_VERSION:
        raise contract.ContractError(f"the look file {path} is of another version than this add-on reads "
                                     f"({LOOK_VERSION})")
    data = dict(meta.get("settings") or {})
    ref = data.get("reference_image") or ""
    if ref:
        suffix = os.path.splitext(ref)[1].lower().lstrip(".")
        if ref != f"reference.{suffix}" or suffix not in _IMAGE_SUFFIXES or ref not in zf.namelist():
            raise contract.ContractError(f"the look file {path} names a reference image it does not hold")
        os.makedirs(extract_to, exist_ok=True)
        target = os.path.join(extract_to, ref)
        with open(target, "wb") as f:
            f.write(zf.read(ref))
        data["reference_image"] = target
    contract.RenderSettings.from_dict(data)  # a look of settings this add-on cannot send is refused here
    return str(meta.get("name") or ""), data
