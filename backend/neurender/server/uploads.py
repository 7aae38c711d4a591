"""Safe unpacking of an uploaded pass-folder zip.

Refused: absolute names, drive letters, ``..`` components, backslashes, symlinks and other non-regular entries,
names that are not valid UTF-8, a name component over 255 bytes, paths deeper than ``MAX_DEPTH`` folders, an entry
that is both a file and a folder (``a`` and ``a/b``) or listed twice, more entries than allowed, and more uncompressed
bytes than allowed (the declared sizes, checked before anything is written; a zip that lies about its sizes is
refused too, because ``zipfile`` reads no more than an entry's declared size and then fails its CRC check - the
bytes are also counted while extracting, as a second guard). The byte quota of
one upload is a small multiple of what its manifest says the frames need (:func:`upload_quota`). Files are created
exclusively inside a fresh directory; nothing is ever written outside it, and any file-system error while unpacking
is the archive's fault (a 4xx), never a server error.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from neurender.contract import MANIFEST_NAME, ContractError, ErrorKind, PassManifest
from neurender.errors import InputError

CHUNK = 1024 * 1024
MAX_DEPTH = 8
"""Folders an entry may be nested in (a pass folder is flat; one top-level folder plus room for __MACOSX etc.)."""
MAX_NAME_BYTES = 255
MAX_ENTRY_BYTES = 1024
MAX_MANIFEST_BYTES = 16 * 1024**2
QUOTA_FACTOR = 2
"""An upload may unpack to at most this many times what its manifest says the frames need (plus ``QUOTA_SLACK``)."""
QUOTA_SLACK = 16 * 1024**2
_CHANNELS = {"depth": 1, "normal": 3, "vector": 4, "object_index": 1, "combined": 4}
_ALWAYS_CHANNELS = 4  # Blender's multilayer EXR may always carry Combined RGBA, whatever the manifest lists
_FRAME_OVERHEAD = 64 * 1024  # header, offset tables, per-chunk overhead of one EXR


def frames_need_bytes(manifest: PassManifest) -> int:
    """Bytes the manifest's frame files need at most: uncompressed float32 of every listed channel per frame."""
    channels = sum(_CHANNELS.get(name, 4) for name in manifest.passes) + _ALWAYS_CHANNELS
    per_frame = manifest.width * manifest.height * channels * 4 + _FRAME_OVERHEAD
    return len(manifest.frames) * per_frame


def upload_quota(manifest: PassManifest, limit: int) -> int:
    """The unpacked-size quota of one upload: ``QUOTA_FACTOR`` x what the frames need + slack, capped at ``limit``."""
    return min(limit, QUOTA_FACTOR * frames_need_bytes(manifest) + QUOTA_SLACK)


class UploadRefused(InputError):
    """An uploaded archive that is not a safe, bounded zip of one pass folder."""

    kind = ErrorKind.BAD_UPLOAD


class UploadTooLarge(UploadRefused):
    kind = ErrorKind.TOO_LARGE


def _shown(name: str) -> str:
    return repr(name if len(name) <= 80 else name[:80] + "...")


def _safe_member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if not name or "\\" in name or "\x00" in name:
        raise UploadRefused(f"zip entry {_shown(name)} has an invalid name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadRefused(f"zip entry {_shown(name)} has an absolute name")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UploadRefused(f"zip entry {_shown(name)} has a name that is not valid Unicode") from None
    parts = PurePosixPath(name).parts
    if any(p in ("..", "") for p in parts):
        raise UploadRefused(f"zip entry {_shown(name)} must not contain '..'")
    if len(encoded) > MAX_ENTRY_BYTES or any(len(p.encode("utf-8")) > MAX_NAME_BYTES for p in parts):
        raise UploadRefused(
            f"zip entry {_shown(name)} has a name longer than {MAX_NAME_BYTES} bytes (or a path over {MAX_ENTRY_BYTES})"
        )
    if len(parts) > MAX_DEPTH + 1:
        raise UploadRefused(f"zip entry {_shown(name)} is nested deeper than {MAX_DEPTH} folders")
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UploadRefused(f"zip entry {_shown(name)} is a link or special file; only plain files are accepted")
    return PurePosixPath(*parts)


def _check_layout(members: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> None:
    """Refuse an entry listed twice and a name that is a file in one entry and a folder in another."""
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    for info, rel in members:
        folders.update(rel.parents)
        if info.is_dir():
            folders.add(rel)
        elif rel in files:
            raise UploadRefused(f"zip entry {_shown(info.filename)} appears twice")
        else:
            files.add(rel)
    clash = sorted(files & folders)
    if clash:
        raise UploadRefused(f"zip entry {_shown(str(clash[0]))} is both a file and a folder")


def _manifest_of(archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> PassManifest:
    """The pass folder's manifest, read from the archive before anything is unpacked (it sets the quota)."""
    candidates = [(i, r) for i, r in members if not i.is_dir() and r.name == MANIFEST_NAME and len(r.parts) <= 2]
    candidates = [c for c in candidates if not c[1].parts[0].startswith("__MACOSX")]
    top = [c for c in candidates if len(c[1].parts) == 1]
    chosen = top or candidates
    if len(chosen) != 1:
        raise UploadRefused(f"the zip holds no single {MANIFEST_NAME} at its top or inside one top-level folder")
    info = chosen[0][0]
    if info.file_size > MAX_MANIFEST_BYTES:
        raise UploadTooLarge(f"{info.filename} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        with archive.open(info) as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, RuntimeError, OSError) as exc:
        raise UploadRefused(f"zip entry {_shown(info.filename)} cannot be read: {exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise UploadTooLarge(f"{info.filename} is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return PassManifest.from_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise UploadRefused(f"{info.filename} is not UTF-8 text") from None
    except ContractError as exc:
        raise UploadRefused(f"{info.filename}: {exc}") from None


def unpack_pass_zip(
    source: BinaryIO, dest: Path, *, max_files: int, max_unpacked_bytes: int
) -> Path:
    """Unpack the zip in ``source`` into the new directory ``dest``; return the folder holding the manifest.

    The manifest may sit at the top of the archive or inside one top-level folder. At most ``upload_quota`` of it
    (capped at ``max_unpacked_bytes``) is unpacked.
    """
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UploadRefused(f"the uploaded file is not a valid zip archive ({exc})") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > max_files:
            raise UploadTooLarge(f"the zip holds {len(infos)} entries; at most {max_files} are accepted")
        members = [(info, _safe_member_path(info)) for info in infos]
        _check_layout(members)
        quota = upload_quota(_manifest_of(archive, members), max_unpacked_bytes)
        declared = sum(i.file_size for i in infos)
        if declared > quota:
            raise UploadTooLarge(
                f"the zip unpacks to {declared} bytes; this pass folder's manifest allows at most {quota}"
            )
        dest.mkdir(parents=True, exist_ok=False)
        try:
            _extract(archive, members, dest, quota)
            return _find_pass_folder(dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise


def _extract(archive: zipfile.ZipFile, members: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path,
             quota: int) -> None:
    written = 0
    root = dest.resolve()
    for info, rel in members:
        target = dest.joinpath(*rel.parts)
        try:
            if not target.resolve().is_relative_to(root):
                raise UploadRefused(f"zip entry {_shown(info.filename)} would be written outside the upload folder")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "xb") as out:
                while True:
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > quota:
                        raise UploadTooLarge(
                            f"the zip unpacks to more than {quota} bytes, the most this pass folder's manifest allows"
                        )
                    out.write(chunk)
        except FileExistsError:
            raise UploadRefused(f"zip entry {_shown(info.filename)} appears twice") from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
            raise UploadRefused(f"zip entry {_shown(info.filename)} cannot be read: {exc}") from None
        except RuntimeError as exc:  # encrypted entries
            raise UploadRefused(f"zip entry {_shown(info.filename)} cannot be read: {exc}") from None
        except OSError as exc:  # a name the file system refuses (too long, a file where a folder must be, ...)
            raise UploadRefused(f"zip entry {_shown(info.filename)} cannot be unpacked: {exc.strerror or exc}") from None


def _find_pass_folder(dest: Path) -> Path:
    if (dest / MANIFEST_NAME).is_file():
        return dest
    children = [p for p in dest.iterdir() if not p.name.startswith("__MACOSX")]
    if len(children) == 1 and children[0].is_dir() and (children[0] / MANIFEST_NAME).is_file():
        return children[0]
    raise UploadRefused(f"the zip holds no {MANIFEST_NAME} at its top or inside one top-level folder")
