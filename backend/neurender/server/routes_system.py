"""Service routes of ``neurender serve``: version/handshake and releasing the loaded models."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

import neurender
from neurender.contract import PASS_SCHEMA_VERSION, PROTOCOL_VERSION, ROUTE_FREE, ROUTE_VERSION
from neurender.server.auth import bearer_matches
from neurender.server.schemas import ERRORS, FreeModel, VersionModel
from neurender.server.service import Service, service_of

log = logging.getLogger(__name__)
router = APIRouter()
ServiceDep = Annotated[Service, Depends(service_of)]


@router.get(ROUTE_VERSION, response_model=VersionModel)
def version(request: Request, service: ServiceDep) -> dict[str, Any]:
    authorised = service.token is None or bearer_matches(request.headers.get("authorization"), service.token)
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


@router.post(ROUTE_FREE, response_model=FreeModel, responses=ERRORS)
def free_models(service: ServiceDep) -> dict[str, Any]:
    if service.worker.free_models():
        return {"freed": True, "detail": "models released"}
    return {"freed": False, "detail": "a job is running; the models are released when it ends"}
