"""Job routes of ``neurender serve``: submit (path or zip upload), list, get, cancel."""

from __future__ import annotations

import json
import shutil
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile

from neurender.contract import JOB_FINAL_STATES, ROUTE_JOB, ROUTE_JOB_UPLOAD, ROUTE_JOBS, ContractError, ErrorKind
from neurender.errors import ServiceRefusal
from neurender.server import retention
from neurender.server.paths import PathRefused, confine, inside
from neurender.server.schemas import ERRORS, JobListModel, JobModel, JobRequest
from neurender.server.service import Service, service_of
from neurender.server.store import new_job_id
from neurender.server.uploads import unpack_pass_zip

router = APIRouter()
ServiceDep = Annotated[Service, Depends(service_of)]


@router.post(ROUTE_JOBS, response_model=JobModel, status_code=201, responses=ERRORS)
def submit_job(body: JobRequest, service: ServiceDep) -> dict[str, Any]:
    config = service.config
    settings = service.settings_from(body.settings)
    pass_dir = confine(body.pass_dir, config.roots, "pass_dir")
    job_id = new_job_id()
    if body.out_dir is not None:
        out_dir = confine(body.out_dir, config.roots, "out_dir")
        if inside(out_dir, [config.data_dir]):  # the job database, the token, other jobs' uploads and frames
            raise PathRefused(f"out_dir {body.out_dir!r} lies in the server's own data folder; choose another")
    else:
        out_dir = config.jobs_dir / job_id / "frames"
    return service.submit(job_id, pass_dir, out_dir, settings, uploaded=False).to_api()


@router.post(ROUTE_JOB_UPLOAD, response_model=JobModel, status_code=201, responses=ERRORS)
def upload_job(
    service: ServiceDep,
    file: UploadFile = File(description="zip of a pass folder (manifest.json at its top or in one folder)"),
    settings: str = Form("{}", description="RenderSettings as JSON text"),
) -> dict[str, Any]:
    config = service.config
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


@router.get(ROUTE_JOBS, response_model=JobListModel, responses=ERRORS)
def list_jobs(service: ServiceDep) -> dict[str, Any]:
    return {"jobs": [r.to_api() for r in service.store.list()]}


@router.get(ROUTE_JOB, response_model=JobModel, responses=ERRORS)
def get_job(job_id: str, service: ServiceDep) -> dict[str, Any]:
    return service.job_or_404(job_id).to_api()


@router.delete(ROUTE_JOB, response_model=JobModel, responses=ERRORS)
def cancel_job(
    job_id: str,
    service: ServiceDep,
    purge: bool = Query(False, description="remove a finished job: its record, uploaded passes and frames in the "
                        "server's data folder (an out_dir chosen by the client is never touched)"),
) -> dict[str, Any]:
    record = service.job_or_404(job_id)
    if purge:
        if record.state not in JOB_FINAL_STATES:
            raise ServiceRefusal(f"job {job_id} is {record.state}; cancel it first, then purge it once it has stopped",
                                 kind=ErrorKind.BUSY)
        if not retention.purge(service.store, service.config.jobs_dir, record):
            raise ServiceRefusal(f"job {job_id} does not exist", kind=ErrorKind.NOT_FOUND)  # purged meanwhile
        return record.to_api()
    if record.state in JOB_FINAL_STATES:
        return record.to_api()
    updated = service.worker.cancel(job_id)
    if updated is None:  # it ended and another client purged it meanwhile
        raise ServiceRefusal(f"job {job_id} does not exist", kind=ErrorKind.NOT_FOUND)
    return updated.to_api()
