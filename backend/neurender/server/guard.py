"""ASGI middleware in front of every route: browser refusal, Host check, bearer token, request-size limits.

Everything it refuses is answered with a 4xx and ``{"detail": "<reason>", "error_kind": ...}`` before any route
code runs.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Awaitable, Callable, Optional

from starlette.exceptions import HTTPException

from neurender.contract import ERROR_STATUS, ErrorKind, error_body
from neurender.server.auth import bearer_matches

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/version", "/openapi.json")


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit; an HTTPException so that the framework's
    body parsing re-raises it as the 413 it is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


async def send_error(
    send: Send, kind: ErrorKind, detail: str, headers: Optional[list[tuple[bytes, bytes]]] = None
) -> None:
    body = json.dumps(error_body(kind, detail)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": ERROR_STATUS[kind],
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})


def _host_name(value: str) -> str:
    if value.startswith("["):
        return value[: value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class GuardMiddleware:
    """Refuse before routing: browser-origin requests, unknown Host on a loopback bind, missing/invalid token,
    bodies over the limit (``Content-Length`` up front, streamed bodies counted as they arrive)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: Optional[str],
        allowed_hosts: tuple[str, ...],
        max_body: Callable[[str], int],
    ) -> None:
        """``allowed_hosts``: the Host names answered to (``config.allowed_hosts``); empty: any (token-guarded)."""
        self.app = app
        self.token = token
        self.allowed_hosts = tuple(h.lower() for h in allowed_hosts)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        path = scope.get("path", "")
        if "origin" in headers:
            await send_error(send, ErrorKind.FORBIDDEN, "requests from web pages are refused; use the neurender add-on or CLI")
            return
        if self.allowed_hosts and _host_name(headers.get("host", self.allowed_hosts[0])).lower() not in self.allowed_hosts:
            await send_error(
                send, ErrorKind.WRONG_HOST, f"this server only answers requests addressed to {' or '.join(self.allowed_hosts)}"
            )
            return
        if self.token is not None and path not in PUBLIC_PATHS:
            if not bearer_matches(headers.get("authorization"), self.token):
                reason = "a token is required" if "authorization" not in headers else "the token is not valid"
                await send_error(
                    send, ErrorKind.TOKEN, f"{reason}: send 'Authorization: Bearer <token>'", [(b"www-authenticate", b"Bearer")]
                )
                return
        limit = self.max_body(path)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await send_error(send, ErrorKind.BAD_HEADER, "Content-Length is not a number")
                return
            if int(length) > limit:
                await send_error(send, ErrorKind.TOO_LARGE, f"request body of {length} bytes exceeds the limit of {limit} bytes")
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await send_error(send, ErrorKind.TOO_LARGE, f"request body exceeds the limit of {limit} bytes")
