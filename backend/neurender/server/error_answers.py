"""Errors translated once at the HTTP boundary: every refusal is ``{"detail", "error_kind"}`` with the status from
``contract.ERROR_STATUS`` (routes raise typed errors; these handlers answer them)."""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from neurender.contract import ERROR_STATUS, ContractError, ErrorKind, error_body, error_kind_of

log = logging.getLogger(__name__)

_FRAMEWORK_KINDS = {404: ErrorKind.NOT_FOUND, 405: ErrorKind.METHOD_NOT_ALLOWED, 413: ErrorKind.TOO_LARGE}
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
    headers, detail = exc.headers, str(exc.detail)
    if exc.status_code == 405:  # the router names the first matching route's methods only
        methods = allowed_methods(request)
        headers = {**(headers or {}), "Allow": ", ".join(methods)}
        detail = f"{request.method[:16]} is not offered for this path; it answers {' and '.join(methods)}"
    return answer(_FRAMEWORK_KINDS.get(exc.status_code, ErrorKind.BAD_REQUEST), detail, headers)


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers for this request's path (sorted)."""
    methods: set[str] = set()

    def walk(routes: Any) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None) or getattr(route, "router", None)
            if inner is not None and hasattr(inner, "routes"):  # an included router (FastAPI wraps it)
                walk(inner.routes)
            elif route.matches(request.scope)[0] is not Match.NONE:  # PARTIAL: the path matches, the method not
                methods.update(getattr(route, "methods", None) or ())

    walk(request.app.router.routes)
    return sorted(methods)


async def _on_internal(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return answer(error_kind_of(exc), f"internal error: {exc.__class__.__name__}")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(ContractError, _on_contract)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Exception, _on_internal)
