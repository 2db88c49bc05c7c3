"""KV affinity: what a load balancer in front of several daemons routes a conversation by, so that its next
turn lands where its KV cache is (docs/deploy.md). A request lands elsewhere and still works, only slower:
the other daemon reads the history from the shared database and the prompt again.

The affinity key of a request is, in order: its `X-Qwend-Affinity` header (any stable id a client picks for
a conversation); the session id in its path (`/v1/sessions/{id}/...`, seed 003's `/ws/{id}`); else none, and
any daemon will do. Only the path and headers count, so a balancer can route on it without reading bodies.
Every answer names the daemon that gave it (`X-Qwend-Instance`) and echoes the key it was routed by; the
pipeline passes the key on to an upstream server, whose own balancer can route replicas by it.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

AFFINITY_HEADER = "x-qwend-affinity"
INSTANCE_HEADER = "x-qwend-instance"
SANE_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # anything else is ignored: it would land in headers and logs
SESSION_PATH = re.compile(r"/(?:v1/sessions|ws)/([A-Za-z0-9._:-]{1,128})(?:/|$)")


def affinity_key(path: str, headers: Headers) -> str | None:
    """The request's affinity key (see the module's docstring), or None."""
    given = headers.get(AFFINITY_HEADER, "").strip()
    if SANE_KEY.fullmatch(given):
        return given
    session = SESSION_PATH.match(path)
    return session.group(1) if session else None


class Affinity:
    """Pure ASGI: adds `X-Qwend-Instance` (and `X-Qwend-Affinity`, when the request has a key) to every
    answer, streamed ones and WebSocket upgrades included."""

    def __init__(self, app: ASGIApp, *, instance: str) -> None:
        self.app = app
        self.instance = instance.encode("latin-1", "replace")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        extra = [(INSTANCE_HEADER.encode(), self.instance)]
        if key := affinity_key(scope["path"], Headers(scope=scope)):
            extra.append((AFFINITY_HEADER.encode(), key.encode()))

        async def send_with_headers(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
