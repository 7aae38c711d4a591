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

from . import neurender_contract as contract

log = logging.getLogger(__name__)


class BackendError(Exception):
    """A failure talking to the backend; ``str(err)`` is one sentence for the artist. ``kind`` names the class."""

    def __init__(self, message: str, kind: str = "error", status: int = 0):
        super().__init__(message)
        self.kind = kind
        self.status = status


UNREACHABLE = "unreachable"
VERSION_MISMATCH = "version_mismatch"
MODEL_MISSING = "model_missing"
BAD_SETTINGS = "bad_settings"
UNAUTHORIZED = "unauthorized"
NOT_FOUND = "not_found"
SERVER = "server"


def _classify_4xx(status: int, detail: str) -> BackendError:
    low = detail.lower()
    if status in (401, 403):
        return BackendError(f"The backend refused the access token: {detail}", UNAUTHORIZED, status)
    if status == 404:  # an unknown job, a frame not finished yet, or a URL that is not a neurender route
        return BackendError(f"Not found on the backend: {detail}", NOT_FOUND, status)
    if _mentions_missing_model(low):
        return BackendError(f"A model could not be loaded: {detail}", MODEL_MISSING, status)
    if status in (409, 413, 429):  # output folder busy, upload too large, queue full: not the settings' fault
        return BackendError(f"The backend refused the request: {detail}", BAD_SETTINGS, status)
    return BackendError(f"The backend refused the render settings: {detail}", BAD_SETTINGS, status)


class Client:
    """One backend at ``base_url``; ``token`` is sent as ``Authorization: Bearer`` when given."""

    def __init__(self, base_url: str, token: str = "", timeout: float = 10.0):
        if not base_url:
            raise BackendError("No backend URL is set in the neurender preferences.", BAD_SETTINGS)
        self.base_url = base_url.rstrip("/")
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
            detail = _detail(exc)
            if 400 <= exc.code < 500:
                raise _classify_4xx(exc.code, detail) from None
            raise BackendError(f"The backend failed ({exc.code}): {detail}", SERVER, exc.code) from None
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(
                f"The neurender backend at {self.base_url} cannot be reached ({reason}). "
                "Start it, or enable 'Start a local backend' in the preferences.",
                UNREACHABLE,
            ) from None
        if raw:
            return payload
        try:
            return json.loads(payload.decode("utf-8")) if payload else {}
        except ValueError:
            raise BackendError(f"The server at {self.base_url} did not answer JSON; is it neurender?", SERVER) from None

    # -- API ------------------------------------------------------------------------------------------------
    def version(self) -> dict:
        return self._request("GET", contract.ROUTE_VERSION)

    def check_version(self, force: bool = False) -> dict:
        """``GET /version`` and refuse a backend speaking another protocol (unless ``force``)."""
        info = self.version()
        proto = info.get("protocol_version")
        if not isinstance(proto, int) or not contract.compatible_protocol(proto):
            msg = (
                f"The backend speaks protocol {proto} but this add-on speaks {contract.PROTOCOL_VERSION}; "
                "update the add-on or the backend so both match."
            )
            if not force:
                raise BackendError(msg, VERSION_MISMATCH)
            log.warning("%s (forced)", msg)
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
                raise BackendError(
                    f"The upload to {self.base_url} broke off after {stream.sent} of {stream.length} bytes; the "
                    "backend may refuse uploads this large (neurender serve --max-upload-mb) or went away.",
                    UNREACHABLE) from None

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


def _mentions_missing_model(low: str) -> bool:
    about_model = any(w in low for w in ("model", "checkpoint", "safetensors", "controlnet"))
    missing = any(w in low for w in ("missing", "not found", "no such", "does not exist", "could not", "cannot load"))
    return about_model and missing


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only for the message
        return exc.reason or str(exc.code)
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):  # FastAPI validation errors
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    return str(detail or body.strip() or exc.reason)


def job_failure_message(job: dict) -> str:
    """The artist-facing sentence for a job that ended in ``failed``."""
    error = str(job.get("error") or "unknown error")
    low = error.lower()
    if _mentions_missing_model(low):
        return f"A model could not be loaded: {error}"
    return f"The neural render failed: {error}"
