"""How a protocol answers, as data: a `Codec` says how its stream's items go on the wire (SSE events or NDJSON
lines, its media type) and how an error looks, before a stream (a JSON body sent with the HTTP status) and
inside one that has started (its last item). Each protocol's wire module holds its codec; api/answer.py
answers with one, and the route class of each router carries one for api/errors.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.responses import Response, StreamingResponse

F = TypeVar("F")  # what a protocol's translator yields: one frame of its stream


class Failure(Protocol):
    """What an error shows a client: a QwendError has all of it, and so has a `Refusal`."""

    status: int
    message: str
    type: str
    code: str | None
    param: str | None


@dataclass(frozen=True)
class Refusal:
    """A failure the exception tree does not name: FastAPI's own (a malformed body, a 404), the guard's."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None


class ErrorShape(Protocol):
    def error_body(self, failure: Failure) -> dict[str, Any]: ...


@dataclass(frozen=True)
class DetailErrors:
    """FastAPI's own shape, `{"detail": message}`: the seeds' clients read it, and paths no protocol serves
    get it."""

    def error_body(self, failure: Failure) -> dict[str, Any]:
        return {"detail": failure.message}


DETAIL = DetailErrors()


@dataclass(frozen=True)
class Codec(Generic[F]):
    response: Callable[[AsyncIterator[Any]], Response]  # the streaming response: its media type and framing
    encode: Callable[[F], Any]  # one frame as `response` sends it
    error_body: Callable[[Failure], dict[str, Any]]  # an error before the stream: the body sent with its status
    stream_error: Callable[[Failure], Any]  # an error after the 200 has gone out: the stream's last item
    last: tuple[Any, ...] = ()  # sent after every stream, failed or not (OpenAI's `[DONE]`)


class _ClosesItsIterator:
    """A streaming response that closes its iterator however it ends: a client that leaves while a frame is
    being sent, or the daemon cancelling the request as it stops, would otherwise leave the work behind it
    running (and a stopped session turn unstored) until the iterator is garbage-collected."""

    body_iterator: AsyncIterator[Any]

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class _EventSource(_ClosesItsIterator, EventSourceResponse):
    pass


def sse(items: AsyncIterator[Any], ping: Callable[[], ServerSentEvent] | None = None) -> EventSourceResponse:
    """Server-sent events, with a keep-alive every 15 s (sse-starlette's comment line unless `ping`)."""
    return _EventSource(items, sep="\n", ping=15, ping_message_factory=ping)


def sse_event(name: str, payload: Any, *, ensure_ascii: bool = True) -> dict[str, str]:
    return {"event": name, "data": json.dumps(payload, ensure_ascii=ensure_ascii)}


class NdjsonResponse(_ClosesItsIterator, StreamingResponse):
    media_type = "application/x-ndjson"
