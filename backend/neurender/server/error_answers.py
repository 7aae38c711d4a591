"""Errors translated once at the HTTP boundary: every refusal is ``{"detail", "error_kind"}`` with the status from
``contract.ERROR_STATUS`` (routes raise typed errors; these handlers answer them)."""

from __future__ import annotations

import logging
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from neurender.contract import ERROR_STATUS, ContractError, ErrorKind, error_body, error_kind_of

log = logging.getLogger(__name__)

_FRAMEWORK_KINDS = {404: ErrorKind.NOT_FOUND, 413: ErrorKind.TOO_LARGE}
"""ErrorKind of the framework's own HTTP errors (unknown route, body over the limit); any other is a bad request."""


def answer(kind: ErrorKind, detail: str, headers: Optional[dict[str, str]] = None) -> JSONResponse:
    return JSONResponse(error_body(kind, detail), status_code=ERROR_STATUS[kind], headers=headers)


def validation_reason(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",)) or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    return answer(ErrorKind.BAD_REQUEST, validation_reason(exc))


async def _on_contract(request: Request, exc: ContractError) -> JSONResponse:
    return answer(exc.kind, str(exc))


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return answer(_FRAMEWORK_KINDS.get(exc.status_code, ErrorKind.BAD_REQUEST), str(exc.detail), exc.headers)


async def _on_internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return answer(error_kind_of(exc), f"internal error: {exc.__class__.__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ContractError, _on_contract)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_internal)
