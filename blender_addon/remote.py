"""A backend on another computer: the pass folder goes up as a zip, the finished frames come back over HTTP.

When Blender and the backend share a disk the add-on sends the pass folder's path (``POST /jobs``). Otherwise it
zips the folder (``zip_pass_folder``), uploads it (``POST /jobs/upload``, see ``client.Client.submit_upload``)
and, while the job runs, copies every finished frame (``GET /jobs/{id}/frames/{n}``) into the scene's own
output folder (``FrameDownloader``), so the sequencer strip is built from local files.

Standard library only and no bpy: everything here runs on the worker thread and is tested without Blender.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import tempfile
import urllib.parse
import zipfile
from typing import Callable, Optional

from . import neurender_contract as contract

log = logging.getLogger(__name__)

SHARED_AUTO = "AUTO"
SHARED_YES = "YES"
SHARED_NO = "NO"

LEDGER_NAME = ".neurender-download.json"
"""Per output folder: which job the downloaded frames belong to, so a restart skips frames already copied."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Progress = Callable[[int, int], None]


def is_loopback_url(url: str) -> bool:
    """True when ``url`` names this computer (127.0.0.0/8, ::1, ``localhost``)."""
    host = (urllib.parse.urlsplit(url if "//" in url else "//" + url).hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shares_disk(mode: str, url: str, started_local: bool) -> bool:
    """Whether the backend can read this computer's pass folder by path.

    ``mode`` is the preference: ``YES``/``NO`` decide; ``AUTO`` says yes for a backend the add-on started itself
    or one at a loopback URL, and no for any other host.
    """
    if mode == SHARED_YES:
        return True
    if mode == SHARED_NO:
        return False
    return started_local or is_loopback_url(url)


# -- upload ------------------------------------------------------------------------------------------------------

def pass_files(folder: str) -> list[str]:
    """The files a pass folder consists of: ``manifest.json`` and every EXR it lists (names relative to ``folder``)."""
    path = os.path.join(folder, contract.MANIFEST_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = contract.PassManifest.from_dict(json.load(f))
    except OSError as exc:
        raise contract.ContractError(f"the pass folder {folder} has no readable {contract.MANIFEST_NAME} "
                                     f"({exc.strerror}); render passes first") from None
    except ValueError as exc:  # JSON errors; ContractError is a ValueError too
        raise contract.ContractError(f"{path} is not a valid pass-folder manifest: {exc}") from None
    names = [contract.MANIFEST_NAME]
    for entry in manifest.frames:
        rel = os.path.normpath(entry.file)
        if os.path.isabs(rel) or rel.startswith(".."):
            raise contract.ContractError(f"{path}: frame {entry.frame} names {entry.file!r}, which is not inside "
                                         "the pass folder")
        if not os.path.isfile(os.path.join(folder, rel)):
            raise contract.ContractError(f"{path}: the pass file {entry.file} of frame {entry.frame} is missing")
        names.append(rel)
    return names


def zip_pass_folder(folder: str, dest: str, progress: Optional[Progress] = None) -> int:
    """Write the pass folder as a zip to ``dest`` (atomically: temp file + rename); returns its size in bytes.

    Only the manifest and the files it lists go in, at the top of the archive. The EXRs are already compressed,
    so they are stored as they are (compressing them again costs time and saves ~nothing).
    """
    names = pass_files(folder)
    total = sum(os.path.getsize(os.path.join(folder, n)) for n in names)
    done = 0
    out_dir = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=".neurender-zip-", suffix=".part", dir=out_dir)
    try:
        with os.fdopen(fd, "wb") as raw, zipfile.ZipFile(raw, "w", allowZip64=True) as zf:
            for name in names:
                method = zipfile.ZIP_STORED if name.lower().endswith(".exr") else zipfile.ZIP_DEFLATED
                zf.write(os.path.join(folder, name), arcname=name.replace(os.sep, "/"), compress_type=method)
                done += os.path.getsize(os.path.join(folder, name))
                if progress is not None:
                    progress(done, total)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    size = os.path.getsize(dest)
    log.info("zipped pass folder %s: %d files, %d bytes", folder, len(names), size)
    return size


# -- download ----------------------------------------------------------------------------------------------------

def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename: never a partial file."""
    folder = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".neurender-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


class FrameDownloader:
    """Copies a remote job's finished frames into ``out_dir`` as they appear.

    ``poll()`` fetches the job, downloads every frame in its ``frames_done`` that is not here yet, and returns the
    job snapshot rewritten for this computer: ``out_dir`` is the local folder (the server's is kept as
    ``server_out_dir``) and ``frames_downloaded`` lists the local frames. A ledger file in ``out_dir`` records
    which job the frames came from, so polling again (or after a restart of Blender) skips frames already copied,
    while frames left by an earlier job are downloaded again.
    """

    def __init__(self, client, job_id: str, out_dir: str):
        self.client = client
        self.job_id = job_id
        self.out_dir = out_dir
        self.downloaded: set[int] = set()
        self.fetched = 0
        """How many frames this object actually transferred (the rest were skipped)."""
        self._load_ledger()

    @property
    def ledger_path(self) -> str:
        return os.path.join(self.out_dir, LEDGER_NAME)

    def frame_path(self, frame: int) -> str:
        return os.path.join(self.out_dir, contract.FRAME_FILE_PATTERN.format(frame=frame))

    def _load_ledger(self) -> None:
        try:
            with open(self.ledger_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return
        if isinstance(data, dict) and data.get("job") == self.job_id:
            self.downloaded = {int(f) for f in data.get("frames", []) if isinstance(f, int)
                               and os.path.isfile(self.frame_path(f))}

    def _save_ledger(self) -> None:
        text = json.dumps({"job": self.job_id, "frames": sorted(self.downloaded)})
        write_atomic(self.ledger_path, text.encode("utf-8"))

    def sync(self, job: dict) -> list[int]:
        """Download the job's finished frames that are not here yet; returns the frames fetched now."""
        wanted = sorted(int(f) for f in job.get("frames_done") or [] if int(f) not in self.downloaded)
        if not wanted:
            return []
        os.makedirs(self.out_dir, exist_ok=True)
        fetched = []
        try:
            for frame in wanted:
                data = self.client.frame_png(self.job_id, frame)
                if not data.startswith(PNG_SIGNATURE):
                    raise contract.ContractError(f"frame {frame} of job {self.job_id} from the backend is not a PNG")
                write_atomic(self.frame_path(frame), data)
                self.downloaded.add(frame)
                fetched.append(frame)
        finally:
            if fetched:
                self.fetched += len(fetched)
                self._save_ledger()
                log.info("downloaded frames %s of job %s into %s", fetched, self.job_id, self.out_dir)
        return fetched

    def localize(self, job: dict) -> dict:
        return dict(job, out_dir=self.out_dir, server_out_dir=job.get("out_dir", ""),
                    frames_downloaded=sorted(self.downloaded))

    def poll(self) -> dict:
        """``GET /jobs/{id}``, then download what is new; the snapshot returned describes the local copies."""
        job = self.client.job(self.job_id)
        self.sync(job)
        return self.localize(job)
