"""HTTP client of ``neurender serve`` (urllib, standard library only).

Every failure is translated here, once, into a ``BackendError`` whose message is meant for the artist:
the backend cannot be reached, speaks another protocol, misses a model, refuses the settings, and so on.
The routes and JSON shapes come from the wire contract.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Optional

from . import messages
from . import neurender_contract as contract

log = logging.getLogger(__name__)


class BackendError(Exception):
    """A failure talking to the backend; ``str(err)`` is one sentence for the artist (``messages.word``).

    ``kind`` is the contract's ``ErrorKind`` value (or one of the add-on's own kinds in ``messages``); ``detail``
    is the backend's full reason, for "Copy Message" and the log."""

    def __init__(self, message: str, kind: str = "internal", status: int = 0, detail: str = ""):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.detail = detail or message


def error(kind: str, detail: str = "", status: int = 0, full: str = "") -> BackendError:
    """The ``BackendError`` of ``kind``, worded once in ``messages``; ``full`` (default ``detail``) is kept for
    Copy Message and the log."""
    return BackendError(messages.word(kind, detail), kind, status, full or detail)


UNREACHABLE = messages.UNREACHABLE
VERSION_MISMATCH = messages.VERSION_MISMATCH
NOT_NEURENDER = messages.NOT_NEURENDER
BAD_URL = messages.BAD_URL
SERVER = messages.SERVER
MODEL_MISSING = "model_missing"
BAD_SETTINGS = "bad_settings"
UNAUTHORIZED = "token"
NOT_FOUND = "not_found"


class Client:
    """One backend at ``base_url``; ``token`` is sent as ``Authorization: Bearer`` when given."""

    def __init__(self, base_url: str, token: str = "", timeout: float = 10.0):
        if not base_url:
            raise error(BAD_URL, "", full="no Backend URL is set in the preferences")
        parsed = urllib.parse.urlsplit(base_url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise error(BAD_URL, repr(base_url.strip()))
        self.base_url = base_url.strip().rstrip("/")
        self.token = token
        self.timeout = timeout

    # -- transport ------------------------------------------------------------------------------------------
    def _request(self, method: str, route: str, body: Optional[dict] = None, *, raw: bool = False,
                 stream: Optional["_MultipartBody"] = None, timeout: Optional[float] = None) -> Any:
        url = self.base_url + route
        req = urllib.request.Request(url, method=method)
        req.add_header("Accept", "application/json")
        if stream is not None:
            req.data = stream
            req.add_header("Content-Type", stream.content_type)
            req.add_header("Content-Length", str(stream.length))
        elif body is not None:
            req.data = json.dumps(body).encode("utf-8")
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header(contract.TOKEN_HEADER, f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            detail, kind = _detail(exc)
            raise error(kind, detail, exc.code) from None
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise error(UNREACHABLE, f"at {self.base_url}", full=f"{self.base_url}: {reason}") from None
        if raw:
            return payload
        try:
            return json.loads(payload.decode("utf-8")) if payload else {}
        except ValueError:
            raise error(NOT_NEURENDER, f"{self.base_url} did not answer JSON") from None

    # -- API ------------------------------------------------------------------------------------------------
    def version(self) -> dict:
        return self._request("GET", contract.ROUTE_VERSION)

    def check_version(self, force: bool = False) -> dict:
        """``GET /version`` and refuse a backend speaking another protocol (unless ``force``)."""
        info = self.version()
        proto = info.get("protocol_version")
        if not isinstance(proto, int) or not contract.compatible_protocol(proto):
            detail = f"the backend speaks protocol {proto}, this add-on speaks {contract.PROTOCOL_VERSION}"
            if "protocol_version" not in info:
                raise error(NOT_NEURENDER, f"{self.base_url}{contract.ROUTE_VERSION} has no protocol_version")
            if not force:
                raise error(VERSION_MISMATCH, detail)
            log.warning("%s (forced)", detail)
        return info

    def submit(self, pass_dir: str, settings: dict, out_dir: str = "") -> dict:
        body: dict[str, Any] = {"pass_dir": pass_dir, "settings": settings}
        if out_dir:
            body["out_dir"] = out_dir
        return self._request("POST", contract.ROUTE_JOBS, body)

    def submit_upload(self, zip_path: str, settings: dict, progress=None, timeout: float = 600.0) -> dict:
        """``POST /jobs/upload``: the zipped pass folder as multipart ``file`` and the settings as ``settings``.

        The zip is streamed from disk, never held in memory; ``progress(sent, total)`` is called as bytes go out.
        ``timeout`` bounds each socket operation (the server unpacks the zip before it answers).
        """
        with _MultipartBody(zip_path, {"settings": json.dumps(settings)}, progress) as stream:
            try:
                return self._request("POST", contract.ROUTE_JOB_UPLOAD, stream=stream, timeout=timeout)
            except BackendError as exc:
                if exc.kind != UNREACHABLE or stream.sent == 0:
                    raise
                # The server answered early (e.g. 401, 413) and closed the connection while the body was still
                # going out; that answer is lost, so ask an authenticated route why.
                self.check_access()
                raise error(messages.UPLOAD_BROKEN, f"at {self.base_url}",
                            full=f"the upload to {self.base_url} broke off after {stream.sent} of {stream.length} "
                            "bytes; the backend may refuse uploads this large, or went away") from None

    def check_access(self) -> None:
        """Raise ``BackendError`` (``UNAUTHORIZED``, ``UNREACHABLE``) unless an authenticated request goes through."""
        self._request("GET", contract.ROUTE_JOBS)

    def job(self, job_id: str) -> dict:
        return self._request("GET", contract.ROUTE_JOB.format(job_id=urllib.parse.quote(job_id, safe="")))

    def jobs(self) -> list:
        return list(self._request("GET", contract.ROUTE_JOBS).get("jobs", []))

    def cancel(self, job_id: str) -> dict:
        return self._request("DELETE", contract.ROUTE_JOB.format(job_id=urllib.parse.quote(job_id, safe="")))

    def frame_png(self, job_id: str, frame: int) -> bytes:
        route = contract.ROUTE_JOB_FRAME.format(job_id=urllib.parse.quote(job_id, safe=""), frame=int(frame))
        return self._request("GET", route, raw=True)

    def free_models(self) -> dict:
        return self._request("POST", contract.ROUTE_FREE, {})

    def control_png(self, job_id: str, kind: str, frame: int) -> bytes:
        """``GET /jobs/{id}/controls/{kind}/{frame}``: a control image the job derived (``not_found`` if none)."""
        route = contract.ROUTE_JOB_CONTROL.format(job_id=urllib.parse.quote(job_id, safe=""),
                                                  kind=urllib.parse.quote(kind, safe=""), frame=int(frame))
        return self._request("GET", route, raw=True)

    def preview_png(self, job_id: str) -> tuple[int, bytes]:
        """``GET /jobs/{id}/preview``: (the denoising step it shows, PNG bytes); ``not_found`` before the first."""
        route = contract.ROUTE_JOB_PREVIEW.format(job_id=urllib.parse.quote(job_id, safe=""))
        req = urllib.request.Request(self.base_url + route, method="GET")
        if self.token:
            req.add_header(contract.TOKEN_HEADER, f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                step = int(resp.headers.get(contract.PREVIEW_HEADER) or 0)
                return step, resp.read()
        except urllib.error.HTTPError as exc:
            detail, kind = _detail(exc)
            raise error(kind, detail, exc.code) from None
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError, ValueError) as exc:
            raise error(UNREACHABLE, f"at {self.base_url}",
                        full=f"{self.base_url}: {getattr(exc, 'reason', exc)}") from None


class _MultipartBody:
    """A ``multipart/form-data`` request body (RFC 7578) read piece by piece: text fields, then one file field
    ``file`` streamed from disk. ``urllib`` sends it in blocks because it has ``read`` and a known length."""

    def __init__(self, path: str, fields: dict, progress=None, field: str = "file"):
        self.boundary = "neurender-" + uuid.uuid4().hex
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'
            f"Content-Type: text/plain; charset=utf-8\r\n\r\n".encode("utf-8") + value.encode("utf-8") + b"\r\n"
            for name, value in fields.items())
        filename = os.path.basename(path).replace('"', "")
        head += (f'--{self.boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                 "Content-Type: application/zip\r\n\r\n").encode("utf-8")
        self._pieces = [head, None, f"\r\n--{self.boundary}--\r\n".encode("ascii")]
        self._file = open(path, "rb")
        self.length = len(head) + os.fstat(self._file.fileno()).st_size + len(self._pieces[2])
        self.sent = 0
        self._progress = progress
        self._index = 0
        self._offset = 0

    def read(self, size: int = -1) -> bytes:
        size = self.length if size is None or size < 0 else size
        out = bytearray()
        while len(out) < size and self._index < len(self._pieces):
            piece = self._pieces[self._index]
            if piece is None:
                chunk = self._file.read(size - len(out))
                if not chunk:
                    self._index += 1
                    continue
            else:
                chunk = piece[self._offset:self._offset + size - len(out)]
                self._offset += len(chunk)
                if self._offset >= len(piece):
                    self._index, self._offset = self._index + 1, 0
            out += chunk
        self.sent += len(out)
        if self._progress is not None and out:
            self._progress(self.sent, self.length)
        return bytes(out)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "_MultipartBody":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _detail(exc: urllib.error.HTTPError) -> tuple[str, str]:
    """(the backend's reason, the error kind) of an error answer; a page that is not neurender's is not shown."""
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only for the message
        body = ""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict) or "detail" not in data:  # e.g. another web server's HTML 404 page: not shown
        return f"HTTP {exc.code} {exc.reason} from {exc.url}", NOT_NEURENDER if exc.code < 500 else SERVER
    detail = data.get("detail")
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or exc.reason), messages.kind_of(data.get("error_kind"), exc.code)


def job_failure_message(job: dict) -> str:
    """The artist-facing sentence for a job that ended in ``failed`` (by the job's ``error_kind``)."""
    kind = job.get("error_kind") or "internal"
    return messages.word(messages.kind_of(kind, 500), str(job.get("error") or "no reason given"))
