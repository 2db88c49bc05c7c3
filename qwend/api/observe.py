"""Every request gets an id (the client's `X-Request-ID` when it is a sane one, else a new one), echoed in the
response's `X-Request-ID` header and carried by every log line written for it; when it ends, one access log
line and the request metrics (by route template, method and status). Pure ASGI: streaming passes through."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwend.logs import request_id

log = logging.getLogger("qwend.access")

SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # anything else could forge log lines or bloat them


class RequestLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        rid = given if SANE_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept"):
                status = message.get("status", 101)
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            elif kind == "websocket.close" and status == 500:  # closed before it was accepted: refused
                status = 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "WEBSOCKET")
            log.info("%s %s %d %.0f ms", method, scope["path"], status, seconds * 1000,
                     extra={"method": method, "path": scope["path"], "status": status,
                            "duration_ms": round(seconds * 1000, 1),
                            "client": scope["client"][0] if scope.get("client") else None})
            runtime = getattr(scope["app"].state, "runtime", None) if "app" in scope else None
            if runtime is not None:  # (not yet during start-up)
                runtime.metrics.observe_request(route, method, status, seconds)
            request_id.reset(token)
