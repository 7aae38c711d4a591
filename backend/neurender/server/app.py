"""The FastAPI application of ``neurender serve``: routes, validation, and error translation. No algorithm code.

Routes and JSON shapes follow the comment block in ``neurender.contract``. Every refusal is a 4xx with
``{"detail": "<reason>", "error_kind": ErrorKind}``: routes raise typed errors (``ContractError`` subclasses carrying
their ``ErrorKind``) and the exception handlers below turn them into answers, with the status from
``contract.ERROR_STATUS`` - the one place. The runner is injected (``neurender.runner.run_render`` by default).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Optional

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import neurender
from neurender.contract import (
    FRAME_FILE_PATTERN,
    JOB_FINAL_STATES,
    MANIFEST_NAME,
    MAX_FRAMES,
    MAX_RESOLUTION,
    PASS_SCHEMA_VERSION,
    PREVIEW_HEADER,
    PROTOCOL_VERSION,
    ROUTE_FREE,
    ROUTE_JOB,
    ROUTE_JOB_EVENTS,
    ROUTE_JOB_FRAME,
    ROUTE_JOB_PREVIEW,
    ROUTE_JOB_UPLOAD,
    ROUTE_JOBS,
    ROUTE_VERSION,
    ERROR_STATUS,
    ContractError,
    ErrorKind,
    PassManifest,
    RenderSettings,
    error_body,
    error_kind_of,
    parse_frame_range,
)
from neurender.engine.preview import PREVIEW_NAME
from neurender.errors import PassFolderError, ServiceRefusal
from neurender.server.auth import bearer_matches, load_or_create_token
from neurender.server.config import ServerConfig
from neurender.server.guard import GuardMiddleware
from neurender.server.paths import PathRefused, confine
from neurender.server.store import JobRecord, JobStore, new_job_id
from neurender.server.uploads import unpack_pass_zip
from neurender.runner import STATE_DIR
from neurender.server.worker import Runner, Worker, scan_frames_done

log = logging.getLogger(__name__)

MAX_ID_CHARS = 64


# ---- OpenAPI models (documentation of the shapes in neurender.contract) ----------------------------------------


class ProgressModel(BaseModel):
    frames_done: int
    frames_total: int
    step: int
    steps_total: int
    phase: str
    message: str
    preview_step: int = 0
    random_weights: bool = False
    device: str = ""
    dtype: str = ""


class JobModel(BaseModel):
    id: str
    state: str = Field(description="queued | running | done | failed | cancelled")
    progress: ProgressModel
    error: Optional[str]
    error_kind: Optional[str] = Field(description="ErrorKind of a failed or cancelled job (see neurender.contract)")
    created: float
    updated: float
    frames_done: list[int]
    frame_start: int
    frame_end: int
    out_dir: str
    settings: dict[str, Any]


class JobListModel(BaseModel):
    jobs: list[JobModel]


class VersionModel(BaseModel):
    backend_version: str
    protocol_version: int
    pass_schema_version: int
    device: str
    models: dict[str, Any]
    token_required: bool


class FreeModel(BaseModel):
    freed: bool
    detail: str = ""


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pass_dir: str = Field(description="absolute path of a pass folder inside one of the server's roots")
    settings: dict[str, Any] = Field(default_factory=dict, description="RenderSettings as JSON")
    out_dir: Optional[str] = Field(default=None, description="absolute output folder inside the roots (optional)")


class ErrorModel(BaseModel):
    detail: str
    error_kind: str = Field(description="one of neurender.contract.ErrorKind")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorModel} for code in sorted(set(ERROR_STATUS.values()))
}

_FRAMEWORK_KINDS = {404: ErrorKind.NOT_FOUND, 413: ErrorKind.TOO_LARGE}
"""ErrorKind of the framework's own HTTP errors (unknown route, body over the limit); any other is a bad request."""


# ---- helpers ---------------------------------------------------------------------------------------------------


def detect_device() -> str:
    """The best torch device of this machine (imports torch; call once at start-up, never at import)."""
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
    except Exception:  # torch missing or broken: the runner will say so per job
        log.warning("torch is not usable; reporting device 'cpu'")
    return "cpu"


def _validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def _job_frames(manifest: PassManifest, settings: RenderSettings, where: str) -> list[int]:
    frames = manifest.frame_numbers
    if settings.frames:
        a, b = parse_frame_range(settings.frames)
        frames = [f for f in frames if a <= f <= b]
        if not frames:
            raise ContractError(f"frames {settings.frames} select none of the frames in {where}", kind=ErrorKind.BAD_FRAMES)
    if len(frames) > MAX_FRAMES:
        raise ContractError(f"{len(frames)} frames exceed the limit of {MAX_FRAMES} per job", kind=ErrorKind.BAD_FRAMES)
    return sorted(frames)


def _read_manifest(pass_dir: Path) -> PassManifest:
    path = pass_dir / MANIFEST_NAME
    if not pass_dir.is_dir():
        raise PassFolderError(f"pass folder {pass_dir} does not exist or is not a folder")
    if not path.is_file():
        raise PassFolderError(f"pass folder {pass_dir} has no {MANIFEST_NAME}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PassFolderError(f"{path} cannot be read: {exc}") from None
    return PassManifest.from_json(text)


# ---- the application -------------------------------------------------------------------------------------------


class Service:
    """State shared by the routes: configuration, store, worker. Created once per app."""

    def __init__(self, config: ServerConfig, runner: Runner, pipelines: Any, token: Optional[str]) -> None:
        self.config = config
        self.token = token
        self.pipelines = pipelines
        self.store = JobStore(config.db_path)
        self.worker = Worker(self.store, runner, pipelines, progress_interval=config.progress_interval)
        self.device = detect_device() if config.device == "auto" else config.device
        self._submit_lock = threading.Lock()

    def settings_from(self, data: Any) -> RenderSettings:
        settings = RenderSettings.from_dict(data)
        model_roots = list(self.config.roots) + list(self.config.model_roots)
        paths = [("model", settings.model), ("reference_image", settings.reference_image)]
        paths += [(f"controlnet {u.kind} model", u.model) for u in settings.controlnets]
        paths += [("LoRA path", lora.path) for lora in settings.loras]
        paths += [("embedding", path) for path in settings.embeddings]
        for what, value in paths:
            if value:
                confine(value, model_roots, what)
        return settings

    def submit(self, job_id: str, pass_dir: Path, out_dir: Path, settings: RenderSettings, uploaded: bool) -> JobRecord:
        manifest = _read_manifest(pass_dir)
        width = settings.width or manifest.width // 8 * 8
        height = settings.height or manifest.height // 8 * 8
        if width > MAX_RESOLUTION or height > MAX_RESOLUTION:
            raise ContractError(
                f"the render size {width}x{height} exceeds {MAX_RESOLUTION}; set width/height in the settings"
            )
        frames = _job_frames(manifest, settings, str(pass_dir))
        if out_dir.exists() and not out_dir.is_dir():
            raise PathRefused(f"out_dir {out_dir} exists and is not a folder")
        with self._submit_lock:  # the checks and the insert are one step for concurrent clients
            if self.store.count_active() >= self.config.max_queued_jobs:
                raise ServiceRefusal(
                    f"the queue is full ({self.config.max_queued_jobs} jobs); retry later", kind=ErrorKind.QUEUE_FULL
                )
            other = self.store.active_job_writing_to(str(out_dir))
            if other is not None:
                raise ServiceRefusal(
                    f"out_dir {out_dir} is in use by job {other}; cancel it or choose another", kind=ErrorKind.BUSY
                )
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PathRefused(f"out_dir {out_dir} cannot be created: {exc.strerror}") from None
            record = self._add(job_id, pass_dir, out_dir, settings, frames, uploaded)
        log.info("job %s: queued (%d frames from %s)", job_id, len(frames), pass_dir)
        self.worker.notify()
        return record

    def _add(
        self, job_id: str, pass_dir: Path, out_dir: Path, settings: RenderSettings, frames: list[int], uploaded: bool
    ) -> JobRecord:
        wanted = set(frames)
        return self.store.add(
            job_id=job_id,
            settings=settings.to_dict(),
            pass_dir=str(pass_dir),
            out_dir=str(out_dir),
            frame_start=frames[0],
            frame_end=frames[-1],
            frames_total=len(frames),
            frames_done=[f for f in scan_frames_done(out_dir, frames[0], frames[-1]) if f in wanted],
            uploaded=uploaded,
        )

    def job_or_404(self, job_id: str) -> JobRecord:
        record = self.store.get(job_id) if len(job_id) <= MAX_ID_CHARS else None
        if record is None:
            raise ServiceRefusal(f"job {job_id[:MAX_ID_CHARS]!r} does not exist", kind=ErrorKind.NOT_FOUND)
        return record


def create_app(
    config: ServerConfig,
    runner: Optional[Runner] = None,
    pipelines: Any = None,
) -> FastAPI:
    """Build the app. ``runner`` defaults to ``neurender.runner.run_render``; ``pipelines`` is a PipelineCache
    (or anything with ``get/free/describe``) kept across jobs."""
    config = config.resolved()
    config.data_dir.mkdir(parents=True, exist_ok=True)
    config.jobs_dir.mkdir(parents=True, exist_ok=True)
    if runner is None:
        from neurender.runner import run_render

        runner = run_render
    token = load_or_create_token(config.token_file) if config.token_required else None  # type: ignore[arg-type]
    service = Service(config, runner, pipelines, token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.worker.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.worker.stop)
            service.store.close()

    app = FastAPI(
        title="neurender",
        version=neurender.__version__,
        description="Backend of the neurender Blender extension (see neurender.contract for the shapes).",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    def answer(kind: ErrorKind, detail: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
        return JSONResponse(error_body(kind, detail), status_code=ERROR_STATUS[kind], headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(ErrorKind.BAD_REQUEST, _validation_reason(exc))

    @app.exception_handler(ContractError)
    async def _on_contract(request: Request, exc: ContractError) -> JSONResponse:
        return answer(exc.kind, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return answer(_FRAMEWORK_KINDS.get(exc.status_code, ErrorKind.BAD_REQUEST), str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _on_internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return answer(error_kind_of(exc), f"internal error: {exc.__class__.__name__}")

    # ---- routes --------------------------------------------------------------------------------------------

    @app.get(ROUTE_VERSION, response_model=VersionModel)
    def version(request: Request) -> dict[str, Any]:
        authorised = service.token is None or _authorised(request, service.token)
        models: dict[str, Any] = {}
        if authorised and service.pipelines is not None:
            try:
                models = dict(service.pipelines.describe())
            except Exception:
                log.exception("describing the loaded models failed")
        return {
            "backend_version": neurender.__version__,
            "protocol_version": PROTOCOL_VERSION,
            "pass_schema_version": PASS_SCHEMA_VERSION,
            "device": service.device,
            "models": models,
            "token_required": service.token is not None,
        }

    @app.post(ROUTE_JOBS, response_model=JobModel, status_code=201, responses=ERRORS)
    def submit_job(body: JobRequest) -> dict[str, Any]:
        settings = service.settings_from(body.settings)
        pass_dir = confine(body.pass_dir, config.roots, "pass_dir")
        job_id = new_job_id()
        if body.out_dir is not None:
            out_dir = confine(body.out_dir, config.roots, "out_dir")
        else:
            out_dir = config.jobs_dir / job_id / "frames"
        return service.submit(job_id, pass_dir, out_dir, settings, uploaded=False).to_api()

    @app.post(ROUTE_JOB_UPLOAD, response_model=JobModel, status_code=201, responses=ERRORS)
    def upload_job(
        file: UploadFile = File(description="zip of a pass folder (manifest.json at its top or in one folder)"),
        settings: str = Form("{}", description="RenderSettings as JSON text"),
    ) -> dict[str, Any]:
        try:
            data = json.loads(settings)
        except (json.JSONDecodeError, RecursionError):
            raise ContractError("settings must be JSON text of a RenderSettings object") from None
        render_settings = service.settings_from(data)
        job_id = new_job_id()
        job_dir = config.jobs_dir / job_id
        try:
            pass_dir = unpack_pass_zip(
                file.file,
                job_dir / "passes",
                max_files=config.max_upload_files,
                max_unpacked_bytes=config.max_unpacked_bytes,
            )
            return service.submit(job_id, pass_dir, job_dir / "frames", render_settings, uploaded=True).to_api()
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)
            raise

    @app.get(ROUTE_JOBS, response_model=JobListModel, responses=ERRORS)
    def list_jobs() -> dict[str, Any]:
        return {"jobs": [r.to_api() for r in service.store.list()]}

    @app.get(ROUTE_JOB, response_model=JobModel, responses=ERRORS)
    def get_job(job_id: str) -> dict[str, Any]:
        return service.job_or_404(job_id).to_api()

    @app.delete(ROUTE_JOB, response_model=JobModel, responses=ERRORS)
    def cancel_job(job_id: str) -> dict[str, Any]:
        record = service.job_or_404(job_id)
        if record.state in JOB_FINAL_STATES:
            return record.to_api()
        updated = service.worker.cancel(job_id)
        assert updated is not None
        return updated.to_api()

    @app.get(
        ROUTE_JOB_FRAME,
        responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the finished frame"}},
        response_class=FileResponse,
    )
    def get_frame(job_id: str, frame: int) -> FileResponse:
        record = service.job_or_404(job_id)
        if not (record.frame_start <= frame <= record.frame_end):
            raise ServiceRefusal(
                f"frame {frame} is outside job {job_id}'s range {record.frame_start}-{record.frame_end}",
                kind=ErrorKind.NOT_FOUND,
            )
        out_dir = os.path.realpath(record.out_dir)
        path = os.path.realpath(os.path.join(out_dir, FRAME_FILE_PATTERN.format(frame=frame)))
        if os.path.dirname(path) != out_dir or not os.path.isfile(path):
            raise ServiceRefusal(f"frame {frame} of job {job_id} is not finished yet", kind=ErrorKind.NOT_FOUND)
        return FileResponse(path, media_type="image/png")

    @app.get(
        ROUTE_JOB_PREVIEW,
        responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "the latest live preview"}},
        response_class=Response,
    )
    def get_preview(job_id: str) -> Response:
        record = service.job_or_404(job_id)
        path = Path(record.out_dir) / STATE_DIR / PREVIEW_NAME
        try:
            data = path.read_bytes()  # one read: the file is replaced atomically at every step
        except OSError:
            raise ServiceRefusal(f"job {job_id} has no preview yet", kind=ErrorKind.NOT_FOUND) from None
        step = int((record.progress or {}).get("preview_step", 0))
        return Response(data, media_type="image/png", headers={PREVIEW_HEADER: str(step), "Cache-Control": "no-store"})

    @app.get(
        ROUTE_JOB_EVENTS,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Job snapshots"}},
        response_class=StreamingResponse,
    )
    def job_events(job_id: str, request: Request) -> StreamingResponse:
        service.job_or_404(job_id)

        async def stream() -> AsyncIterator[bytes]:
            last: Optional[str] = None
            deadline = time.monotonic() + config.sse_max_seconds
            keepalive = time.monotonic()
            while time.monotonic() < deadline:
                record = await run_in_threadpool(service.store.get, job_id)
                if record is None:
                    return
                snapshot = json.dumps(record.to_api())
                if snapshot != last:
                    last = snapshot
                    keepalive = time.monotonic()
                    yield f"event: job\ndata: {snapshot}\n\n".encode()
                if record.state in JOB_FINAL_STATES:
                    return
                if time.monotonic() - keepalive > 15:
                    keepalive = time.monotonic()
                    yield b": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(config.sse_poll_seconds)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post(ROUTE_FREE, response_model=FreeModel, responses=ERRORS)
    def free_models() -> dict[str, Any]:
        if service.worker.free_models():
            return {"freed": True, "detail": "models released"}
        return {"freed": False, "detail": "a job is running; the models are released when it ends"}

    def max_body(path: str) -> int:
        return config.max_upload_bytes if path == ROUTE_JOB_UPLOAD else config.max_json_bytes

    app.add_middleware(
        GuardMiddleware,
        token=token,
        allowed_hosts=config.allowed_hosts if token is None else (),
        max_body=max_body,
    )
    return app


def _authorised(request: Request, token: str) -> bool:
    return bearer_matches(request.headers.get("authorization"), token)
