"""Maps the exception tree (and FastAPI's own errors) to an error body, once: the route a request matched
shapes it, by the codec its router's route class carries (api/jsonbody.py's `JsonRoute`), so each protocol's
clients read their own shape:

- OpenAI (`/v1/chat/completions`, `/v1/completions`, `/v1/responses`, ..., seed 004's `/chat/completions`):
  `{"error": {"message", "type", "param", "code"}}`
- Anthropic (`/v1/messages`): `{"type": "error", "error": {"type", "message"}}`
- Ollama (`/api/chat`, `/api/generate`, ...): `{"error": message}`
- the seeds' own routes, and every other path: the FastAPI-style `{"detail": message}` seed clients read.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute
from starlette.types import Scope

from qwend.api.streaming import ClientGone
from qwend.api.wire.anthropic import ANTHROPIC
from qwend.api.wire.codec import DETAIL, ErrorShape, Failure, Refusal
from qwend.api.wire.openai import OPENAI
from qwend.errors import Busy, QwendError

log = logging.getLogger(__name__)


def error_response(
    request: Request, status: int, message: str, *, type_: str = "invalid_request_error",
    code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:
    return _failure_response(request.scope, Refusal(status, message, type_, code, param), headers)


def _failure_response(scope: Scope, failure: Failure, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(_shape(scope).error_body(failure), status_code=failure.status, headers=headers)


def _shape(scope: Scope) -> ErrorShape:
    route = scope.get("route") or _route_for(scope)
    if route is not None:
        return getattr(route, "codec", DETAIL)  # FastAPI's documentation, the UI's files, WebSockets: DETAIL
    # No route takes the path (a 404). An SDK pointed at /v1 reads its own shape for a path it got wrong, as
    # OpenAI and Anthropic answer paths they do not serve; seed 000's own /v1 families keep FastAPI's.
    path = scope["path"]
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/v1/") and not path.startswith(("/v1/sessions", "/v1/tools", "/v1/profiles")):
        return OPENAI
    return DETAIL


def _route_for(scope: Scope) -> BaseRoute | None:
    """The route the router picks for a request (the first that takes its path and method, else the first that
    takes its path: a 405): the router sets `scope["route"]` only once it ran, and the guard refuses before."""
    app = scope.get("app")
    if app is None:
        return None
    by_path = [c for c in iter_route_contexts(app.routes)
               if (regex := getattr(c, "path_regex", None)) is not None and regex.match(scope["path"])]
    for context in by_path:
        if not context.methods or scope.get("method") in context.methods:
            return context.original_route
    return by_path[0].original_route if by_path else None


def _not_json(exc: RequestValidationError) -> bool:
    """FastAPI hands a body whose Content-Type is not JSON to validation as raw bytes. From a page (it sent
    Origin, api/jsonbody.py) such bodies stay refused: text/plain, form and type-less POSTs are what a hostile
    web page can send without a preflight."""
    first = exc.errors()[0]
    return tuple(first.get("loc", ())) == ("body",) and isinstance(first.get("input"), bytes)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return f"the body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return "the body is empty: send a JSON object", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    where = f" ({param})" if param else ""
    return f"invalid request{where}: {first.get('msg')}", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QwendError)
    async def qwend_error(request: Request, exc: QwendError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, Busy) else None
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return _failure_response(request.scope, exc, headers)

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it, the log shows it

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        if _not_json(exc):
            content_type = request.headers.get("content-type") or "none"
            message = f"the body must be JSON, sent with Content-Type: application/json (not {content_type})"
            return error_response(request, 415, message, code="unsupported_media_type")
        message, param = _validation_message(exc)
        return error_response(request, 400, message, code="invalid_request", param=param)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a fault of qwend's or of a library under it: still the protocol's shape (clients parse it), and the
        # traceback in the log (Starlette logs what this handler was called for)
        return error_response(request, 500, f"internal error: {type(exc).__name__}: {exc}"[:500],
                              type_="server_error", code="internal_error")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(request, exc.status_code, str(exc.detail), type_=type_, headers=exc.headers)
