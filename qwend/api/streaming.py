"""Helpers every adapter shares: start a chat stream so early errors keep their HTTP status, and stop
work when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse

from qwend.types import ChatEvent

T = TypeVar("T")


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


async def open_stream(events: AsyncIterator[ChatEvent]) -> AsyncIterator[ChatEvent]:
    """Run the stream up to its first event, raising what a request can fail with before any byte is sent,
    and return an iterator that replays that event first."""
    first = await anext(events)  # an exception here has already finalized `events`

    async def replay() -> AsyncIterator[ChatEvent]:
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()

    return replay()


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client disconnects first (a non-streaming request's cancel)."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await task
    except asyncio.CancelledError:
        if watcher.done():
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()


class NdjsonResponse(StreamingResponse):
    """Closes its iterator however the response ends: a client that leaves while a line is being sent
    would otherwise leave the generation running until the iterator is garbage-collected."""

    media_type = "application/x-ndjson"

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
