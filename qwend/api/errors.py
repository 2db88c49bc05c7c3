"""Maps the exception tree (and FastAPI's own errors) to each protocol's error shape, once, by path:

- OpenAI (`/v1/...`, seed 004's `/chat/completions`): `{"error": {"message", "type", "param", "code"}}`
- Anthropic (`/v1/messages`): `{"type": "error", "error": {"type", "message"}}`
- Ollama (`/api/chat`, `/api/generate`, ...): `{"error": message}`
- seed 000's own `/v1` routes and every other path: the FastAPI-style `{"detail": message}` seed clients read.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from qwend.api.streaming import ClientGone
from qwend.api.wire.openai import error_body
from qwend.errors import Busy, QwendError

log = logging.getLogger(__name__)


def error_response(
    request: Request, status: int, message: str, *, type_: str = "invalid_request_error",
    code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None,
) -> JSONResponse:
    path = request.url.path
    if path.startswith("/v1/messages"):
        body = {"type": "error", "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    elif path in OLLAMA_PATHS:
        body = {"error": message}
    elif _is_openai_path(path):
        body = error_body(message, type_, code, param)
    else:
        body = {"detail": message}
    return JSONResponse(body, status_code=status, headers=headers)


OLLAMA_PATHS = frozenset(f"/api/{name}" for name in ("chat", "generate", "embed", "tags", "ps", "show", "pull",
                                                      "delete"))
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                   404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error",
                   429: "rate_limit_error", 503: "overloaded_error"}


def _is_openai_path(path: str) -> bool:
    native = path == "/v1/chat" or path.startswith(("/v1/sessions", "/v1/tools", "/v1/profiles"))
    return (path.startswith("/v1/") and not native) or path == "/chat/completions"


def _not_json(exc: RequestValidationError) -> bool:
    """FastAPI hands a body whose Content-Type is not JSON to validation as raw bytes. Such bodies stay
    refused: text/plain, form and type-less POSTs are what a hostile web page can send without a preflight."""
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
        return error_response(
            request, exc.status, exc.message, type_=exc.type, code=exc.code, param=exc.param, headers=headers
        )

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

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return error_response(request, exc.status_code, str(exc.detail), type_=type_, headers=exc.headers)
