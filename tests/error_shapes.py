"""Each protocol's error body, checked from the outside (the mapping itself is qwend/api/errors.py)."""

from __future__ import annotations

from typing import Any

OLLAMA = frozenset(f"/api/{name}" for name in ("chat", "generate", "embed", "tags", "ps", "show", "pull", "delete",
                                                     "embeddings", "version"))
NATIVE_V1 = ("/v1/sessions", "/v1/tools", "/v1/profiles")  # with /v1/chat: seed 000, FastAPI's {"detail"}


def protocol_of(path: str) -> str:
    """openai, anthropic, ollama or detail: the error shape a path answers with."""
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path in OLLAMA:
        return "ollama"
    native = path == "/v1/chat" or path.startswith(NATIVE_V1)
    if (path.startswith("/v1/") and not native) or path == "/chat/completions":
        return "openai"
    return "detail"


def error_shape_problem(protocol: str, body: Any) -> str | None:
    """Why `body` is not `protocol`'s error body (None: it is)."""
    if protocol == "openai":
        error = body.get("error") if isinstance(body, dict) else None
        ok = isinstance(error, dict) and set(error) == {"message", "type", "param", "code"} and _text(error["message"])
        return None if ok else 'not {"error": {"message", "type", "param", "code"}}'
    if protocol == "anthropic":
        error = body.get("error") if isinstance(body, dict) else None
        ok = (isinstance(body, dict) and body.get("type") == "error" and isinstance(error, dict)
              and _text(error.get("type")) and _text(error.get("message")))
        return None if ok else 'not {"type": "error", "error": {"type", "message"}}'
    if protocol == "ollama":
        ok = isinstance(body, dict) and set(body) == {"error"} and _text(body["error"])
        return None if ok else 'not {"error": "..."}'
    ok = isinstance(body, dict) and _text(body.get("detail"))
    return None if ok else 'not {"detail": "..."}'


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
