"""Safe unpacking of an uploaded pass-folder zip.

Refused: absolute names, drive letters, ``..`` components, backslashes, symlinks and other non-regular entries,
more entries than allowed, more uncompressed bytes than allowed (counted while extracting, so a zip that lies
about its sizes is caught too). Files are created exclusively inside a fresh directory; nothing is ever written
outside it.
"""

from __future__ import annotations

import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from neurender.contract import MANIFEST_NAME, ErrorKind
from neurender.errors import InputError

CHUNK = 1024 * 1024


class UploadRefused(InputError):
    """An uploaded archive that is not a safe, bounded zip of one pass folder."""

    kind = ErrorKind.BAD_UPLOAD


class UploadTooLarge(UploadRefused):
    kind = ErrorKind.TOO_LARGE


def _safe_member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    name = info.filename
    if not name or "\\" in name or "\x00" in name:
        raise UploadRefused(f"zip entry {name!r} has an invalid name")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UploadRefused(f"zip entry {name!r} has an absolute name")
    parts = PurePosixPath(name).parts
    if any(p in ("..", "") for p in parts):
        raise UploadRefused(f"zip entry {name!r} must not contain '..'")
    mode = info.external_attr >> 16
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UploadRefused(f"zip entry {name!r} is a link or special file; only plain files are accepted")
    return PurePosixPath(*parts)


def unpack_pass_zip(
    source: BinaryIO, dest: Path, *, max_files: int, max_unpacked_bytes: int
) -> Path:
    """Unpack the zip in ``source`` into the new directory ``dest``; return the folder holding the manifest.

    The manifest may sit at the top of the archive or inside one top-level folder.
    """
    dest = Path(dest)
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UploadRefused(f"the uploaded file is not a valid zip archive ({exc})") from None
    dest.mkdir(parents=True, exist_ok=False)
    try:
        with archive:
            infos = archive.infolist()
            if len(infos) > max_files:
                raise UploadTooLarge(f"the zip holds {len(infos)} entries; at most {max_files} are accepted")
            declared = sum(i.file_size for i in infos)
            if declared > max_unpacked_bytes:
                raise UploadTooLarge(
                    f"the zip unpacks to {declared} bytes; at most {max_unpacked_bytes} are accepted"
                )
            members = [(info, _safe_member_path(info)) for info in infos]
            written = 0
            root = dest.resolve()
            for info, rel in members:
                target = dest.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(root):
                    raise UploadRefused(f"zip entry {info.filename!r} would be written outside the upload folder")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with archive.open(info) as src, open(target, "xb") as out:
                        while True:
                            chunk = src.read(CHUNK)
                            if not chunk:
                                break
                            written += len(chunk)
                            if written > max_unpacked_bytes:
                                raise UploadTooLarge(
                                    f"the zip unpacks to more than {max_unpacked_bytes} bytes"
                                )
                            out.write(chunk)
                except FileExistsError:
                    raise UploadRefused(f"zip entry {info.filename!r} appears twice") from None
                except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
                    raise UploadRefused(f"zip entry {info.filename!r} cannot be read: {exc}") from None
                except RuntimeError as exc:  # encrypted entries
                    raise UploadRefused(f"zip entry {info.filename!r} cannot be read: {exc}") from None
        return _find_pass_folder(dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _find_pass_folder(dest: Path) -> Path:
    if (dest / MANIFEST_NAME).is_file():
        return dest
    children = [p for p in dest.iterdir() if not p.name.startswith("__MACOSX")]
    if len(children) == 1 and children[0].is_dir() and (children[0] / MANIFEST_NAME).is_file():
        return children[0]
    raise UploadRefused(f"the zip holds no {MANIFEST_NAME} at its top or inside one top-level folder")
