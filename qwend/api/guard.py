"""Who may call the daemon, and how much: one pure ASGI middleware in front of every route, HTTP and
WebSocket alike (CORS middleware never sees a WebSocket upgrade, and browsers do not apply the same-origin
policy to WebSockets). In order, a request is refused when:

1. its Host header names a host that is not this machine's (403): DNS rebinding turns a hostile page's own
   name into 127.0.0.1, and only the Host header still shows the page's name (Ollama's CVE-2024-28224);
2. it comes from a browser page of an origin not allowed (403): CORS keeps such a page from reading answers,
   not from sending a POST that runs a tool, nor from opening a WebSocket;
3. its body is larger than `max_body_mb` (413), by Content-Length or as it is read;
4. API keys are configured and it carries none of them (401; health checks and the UI's static files are
   open); a key it carries decides whose sessions and stored responses it reaches (`Caller`);
5. its key (or, without keys, its address) made `rate_limit_per_minute` requests in the last minute (429).
"""

from __future__ import annotations

import ipaddress
import math
import re
import socket
import time
from urllib.parse import parse_qs, urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwend.access import ApiKeys, is_loopback, presented_key
from qwend.api.errors import error_response
from qwend.sessions.store import Caller
from qwend.settings import Settings

# pages served from this machine: allowed by default (seed 001's ALLOWED_ORIGINS default is localhost:3000)
LOCAL_ORIGIN = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"
OPEN_PATHS = frozenset({"/health", "/api/health"})  # liveness probes: no key, no rate limit
UI_PREFIX = "/ui"  # the browser UI's static files hold nothing secret; the page asks for a key itself


class HostRule:
    """localhost and *.localhost, this machine's names, any IP address, and `allowed_hosts`."""

    def __init__(self, settings: Settings) -> None:
        listed = {h.lower().rstrip(".") for h in settings.allowed_hosts}
        self.any = "*" in listed
        self.names = listed | {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        if not is_loopback(settings.host):
            self.names.add(settings.host.lower())

    def allows(self, host_header: str | None) -> bool:
        if self.any or not host_header:  # HTTP/1.0 clients send none; every browser does
            return True
        host = host_header.lower()
        host = host[1:host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        host = host.rstrip(".")
        if host in self.names or host.endswith(".localhost"):
            return True
        try:  # an IP address cannot be rebound: the page's origin is that address
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return False


class OriginRule:
    """A request without an Origin header is not from a web page (or is a page's own same-origin GET)."""

    def __init__(self, configured: list[str]) -> None:
        self.any = "*" in configured
        self.listed = {o.rstrip("/").lower() for o in configured}
        self.local = re.compile(LOCAL_ORIGIN)

    def allows(self, origin: str | None, host_header: str | None) -> bool:
        if origin is None or self.any:
            return True
        origin = origin.rstrip("/").lower()
        if origin in self.listed or self.local.fullmatch(origin):
            return True
        return urlsplit(origin).netloc == (host_header or "").lower()  # the page is one this daemon serves


class RateLimit:
    """A token bucket per caller: `per_minute` requests at once, refilled evenly over the minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when counted)

    def wait(self, caller: str) -> float:
        """0 and a request counted, or the seconds until `caller` may make one."""
        if not self.per_minute:
            return 0.0
        now = time.monotonic()
        if len(self.buckets) > 10_000:  # forget callers whose bucket is full again (idle a minute)
            self.buckets = {c: b for c, b in self.buckets.items() if now - b[1] < 60}
        tokens, then = self.buckets.get(caller, (self.per_minute, now))
        tokens = min(self.per_minute, tokens + (now - then) * self.per_minute / 60)
        if tokens < 1:
            self.buckets[caller] = (tokens, now)
            return (1 - tokens) * 60 / self.per_minute
        self.buckets[caller] = (tokens - 1, now)
        return 0.0


class Refused(Exception):
    def __init__(self, status: int, message: str, type_: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.headers = status, message, type_, code, headers


class AccessGuard:
    def __init__(self, app: ASGIApp, settings: Settings, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys
        self.hosts = HostRule(settings)
        self.origins = OriginRule(settings.cors_origins)
        self.max_body = int(settings.max_body_mb * 2**20)
        self.rate = RateLimit(settings.rate_limit_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            self._check(scope)
        except Refused as refused:
            await self._refuse(scope, receive, send, refused)
            return
        if scope["type"] == "http":
            receive = self._bounded(receive)
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> None:
        headers = Headers(scope=scope)
        host = headers.get("host")
        if not self.hosts.allows(host):
            raise Refused(403, f"the Host header {host!r} is not this machine's name (a DNS-rebinding guard); "
                          "add the name to QWEND_ALLOWED_HOSTS to serve it", "permission_error", "host_not_allowed")
        origin = headers.get("origin")
        if not self.origins.allows(origin, host):
            raise Refused(403, f"pages from {origin} may not call this daemon; add the origin to "
                          "QWEND_CORS_ORIGINS to allow them", "permission_error", "origin_not_allowed")
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise self._too_large()
        path = scope["path"]
        if path in OPEN_PATHS or path == UI_PREFIX or path.startswith(UI_PREFIX + "/"):
            return
        caller = scope["client"][0] if scope.get("client") else "unknown"
        if self.keys:
            key = self.keys.identify(_presented_key(scope, headers))
            if key is None:
                raise Refused(401, "a valid API key is required: send it as `Authorization: Bearer <key>` or "
                              "`x-api-key: <key>`", "authentication_error", "invalid_api_key",
                              {"WWW-Authenticate": "Bearer"})
            state = scope.setdefault("state", {})
            state["api_key"] = key.name
            state["caller"] = Caller(key.owner, key.operator)  # whose sessions it reaches (api.deps.caller)
            caller = "key " + key.name
        wait = self.rate.wait(caller)
        if wait:
            raise Refused(429, f"rate limit: at most {self.rate.per_minute} requests a minute; retry in "
                          f"{math.ceil(wait)} s", "rate_limit_error", "rate_limited",
                          {"Retry-After": str(math.ceil(wait))})

    def _too_large(self) -> Refused:
        return Refused(413, f"the body is larger than {self.max_body:,} bytes (QWEND_MAX_BODY_MB)",
                       "invalid_request_error", "request_too_large")

    def _bounded(self, receive: Receive) -> Receive:
        """`receive` that stops a body sent without (or with a false) Content-Length once it is too large."""
        read = 0

        async def bounded() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self.max_body:  # raised into the route's body read; mapped like any HTTP error
                    raise HTTPException(413, self._too_large().message)
            return message

        return bounded

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refused: Refused) -> None:
        if scope["type"] == "websocket":  # closing before accepting answers the upgrade with 403
            await send({"type": "websocket.close", "code": 1008, "reason": refused.message[:120]})
            return
        response = error_response(Request(scope), refused.status, refused.message, type_=refused.type,
                                  code=refused.code, headers=refused.headers)
        await response(scope, receive, send)


def _presented_key(scope: Scope, headers: Headers) -> str | None:
    key = presented_key(headers)
    if key is None and scope["type"] == "websocket":  # a browser cannot set headers on a WebSocket; its URL
        return (parse_qs(scope.get("query_string", b"").decode()).get("api_key") or [None])[0]
    return key
