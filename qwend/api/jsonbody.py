"""JSON from clients, read so that every string in it can be stored, tokenized and sent back.

JSON may escape half of a UTF-16 surrogate pair (`"\\ud800"`); Python decodes that into a string that no
UTF-8 encoder takes, and it failed later, as a 500, in the tokenizer, SQLite or the answer. Clients send
such halves when they cut a string in the middle of an emoji, so like Go's encoding/json (Ollama) we read
a lone half as U+FFFD, the replacement character, and keep the rest of the text. Nesting too deep for
the decoder is a malformed body (400), not a RecursionError.

A body is read as JSON whatever its Content-Type says where the request has no Origin header: litellm's Ollama
providers send none, Ollama's own `curl -d` examples send a form type, and seed 003's clients any. A browser
sends Origin with every cross-site POST (and the guard refuses origins not allowed), so a page cannot use this
to slip a "simple" form or text/plain request past CORS; with an Origin, a body must say it is JSON (415).
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, ClassVar

from fastapi import Request, Response
from fastapi.routing import APIRoute

from qwend.api.wire.codec import DETAIL, ErrorShape

LARGE_BODY = 1 << 20  # bytes past which a body is decoded in a worker thread

# a valid pair (kept), a lone half (replaced), or any other escape (kept: it may be an escaped backslash
# before a literal "ud800"); backslashes appear only inside strings in JSON, so this sees every escape
_ESCAPES = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}|\\."
_ESCAPE_TEXT, _ESCAPE_BYTES = re.compile(_ESCAPES), re.compile(_ESCAPES.encode())
_LONE_TEXT, _LONE_BYTES = re.compile(r"\\u[dD][89a-fA-F]"), re.compile(rb"\\u[dD][89a-fA-F]")


# what a JSON body may be sent as without an Origin (a form or multipart upload keeps its own type)
_UNDECLARED = {"", "text/plain", "application/x-www-form-urlencoded", "application/octet-stream"}


def loads(raw: str | bytes) -> Any:
    """`json.loads`, with lone surrogate escapes read as U+FFFD; raises json.JSONDecodeError (or
    UnicodeDecodeError for bytes that are not UTF-8) for a malformed document."""
    if isinstance(raw, bytes):
        if _LONE_BYTES.search(raw):
            raw = _ESCAPE_BYTES.sub(lambda m: b"\\ufffd" if len(m[0]) == 6 else m[0], raw)
    elif _LONE_TEXT.search(raw):
        raw = _ESCAPE_TEXT.sub(lambda m: "\\ufffd" if len(m[0]) == 6 else m[0], raw)
    try:
        return json.loads(raw)
    except RecursionError:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        raise json.JSONDecodeError("nested too deeply", text[:100], 0) from None


class JsonRequest(Request):
    """A request whose JSON body is read with `loads`."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            # a large body takes a while to decode: off the event loop, which serves everyone else meanwhile
            self._json = await asyncio.to_thread(loads, body) if len(body) > LARGE_BODY else loads(body)
        return self._json


class JsonRoute(APIRoute):
    """The route class of every router: FastAPI reads bodies through the request's `json()`, and `codec`
    shapes the errors of the route's protocol (api/errors.py reads it off the route a request matched)."""

    codec: ClassVar[ErrorShape] = DETAIL

    @classmethod
    def answering(cls, codec: ErrorShape) -> type[JsonRoute]:
        """The route class of a protocol's router, whose errors take `codec`'s shape."""
        return type(cls.__name__, (cls,), {"codec": codec})

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return await handler(JsonRequest(_read_as_json(request), request.receive))

        return route


def _read_as_json(request: Request) -> dict[str, Any]:
    """The request's scope, its Content-Type set to JSON where it sent none of JSON's and no Origin (above)."""
    headers = request.headers
    declared = (headers.get("content-type") or "").split(";")[0].strip().lower()
    if "origin" in headers or declared not in _UNDECLARED:
        return request.scope
    raw = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    return {**request.scope, "headers": [*raw, (b"content-type", b"application/json")]}
