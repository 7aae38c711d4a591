"""What a job produces, over HTTP: finished frames, the live preview, the server-sent event stream of snapshots."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Annotated, AsyncIterator, Optional

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response, StreamingResponse

from neurender.contract import (
    CONTROL_FILE_PATTERN,
    CONTROL_KINDS,
    CONTROLS_DIR,
    FRAME_FILE_PATTERN,
    JOB_FINAL_STATES,
    PREVIEW_HEADER,
    ROUTE_JOB_CONTROL,
    ROUTE_JOB_EVENTS,
    ROUTE_JOB_FRAME,
    ROUTE_JOB_PREVIEW,
    ErrorKind,
)
from neurender.engine.preview import PREVIEW_NAME
from neurender.errors import ServiceRefusal
from neurender.runner import STATE_DIR
from neurender.server.schemas import ERRORS, png_answer
from neurender.server.service import Service, service_of

router = APIRouter()
ServiceDep = Annotated[Service, Depends(service_of)]
KEEPALIVE_SECONDS = 15


@router.get(ROUTE_JOB_FRAME, responses=png_answer("the finished frame"), response_class=FileResponse)
def get_frame(job_id: str, frame: int, service: ServiceDep) -> FileResponse:
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


@router.get(ROUTE_JOB_PREVIEW, responses=png_answer("the latest live preview"), response_class=Response)
def get_preview(job_id: str, service: ServiceDep) -> Response:
    record = service.job_or_404(job_id)
    path = Path(record.out_dir) / STATE_DIR / PREVIEW_NAME
    try:
        data = path.read_bytes()  # one read: the file is replaced atomically at every step
    except OSError:
        raise ServiceRefusal(f"job {job_id} has no preview yet", kind=ErrorKind.NOT_FOUND) from None
    step = int((record.progress or {}).get("preview_step", 0))
    return Response(data, media_type="image/png", headers={PREVIEW_HEADER: str(step), "Cache-Control": "no-store"})


@router.get(ROUTE_JOB_CONTROL, responses=png_answer("a control image the job derived from the passes"),
            response_class=FileResponse)
def get_control(job_id: str, kind: str, frame: int, service: ServiceDep) -> FileResponse:
    """The control image (depth, normal, edges) a job derived for one frame: what its ControlNets saw."""
    record = service.job_or_404(job_id)
    if kind not in CONTROL_KINDS:
        raise ServiceRefusal(f"{kind!r} is not a control kind ({', '.join(CONTROL_KINDS)})", kind=ErrorKind.NOT_FOUND)
    folder = os.path.realpath(os.path.join(record.out_dir, *CONTROLS_DIR.split("/")))
    path = os.path.realpath(os.path.join(folder, CONTROL_FILE_PATTERN.format(kind=kind, frame=frame)))
    if os.path.dirname(path) != folder or not os.path.isfile(path):
        raise ServiceRefusal(f"job {job_id} has no {kind} control image for frame {frame}", kind=ErrorKind.NOT_FOUND)
    return FileResponse(path, media_type="image/png")


@router.get(
    ROUTE_JOB_EVENTS,
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}, "description": "Job snapshots"}},
    response_class=StreamingResponse,
)
def job_events(job_id: str, request: Request, service: ServiceDep) -> StreamingResponse:
    service.job_or_404(job_id)
    return StreamingResponse(_snapshots(service, job_id, request), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})


async def _snapshots(service: Service, job_id: str, request: Request) -> AsyncIterator[bytes]:
    """One ``job`` event per changed snapshot until the job ends, the client leaves or ``sse_max_seconds`` pass."""
    config = service.config
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
        if time.monotonic() - keepalive > KEEPALIVE_SECONDS:
            keepalive = time.monotonic()
            yield b": keep-alive\n\n"
        if await request.is_disconnected():
            return
        await asyncio.sleep(config.sse_poll_seconds)
