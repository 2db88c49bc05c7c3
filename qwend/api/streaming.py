"""Helpers every adapter shares: start a chat stream so early errors keep their HTTP status, and stop
work when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import aclosing
from typing import TypeVar

from starlette.requests import Request

from qwend.chat.service import Completion, CompletionBuilder, chat
from qwend.runtime import Runtime
from qwend.types import ChatEvent, ChatRequest

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


async def open_streams(runtime: Runtime, requests: Sequence[ChatRequest]) -> list[AsyncIterator[ChatEvent]]:
    """The chat streams of a request's choices, each opened (`open_stream`); when one fails, the others
    already opened are closed, so their jobs leave the queue."""
    streams: list[AsyncIterator[ChatEvent]] = []
    try:
        for request in requests:
            streams.append(await open_stream(chat(runtime, request)))
    except BaseException:
        for stream in streams:
            await stream.aclose()
        raise
    return streams


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


async def merged(streams: Sequence[AsyncIterator[T]]) -> AsyncIterator[tuple[int, T]]:
    """The items of several streams as they come, each with its stream's index (several choices of one
    request). An error in one ends them all; closing this closes every stream."""
    if len(streams) == 1:  # the common case: read in place, no task and queue per token
        async with aclosing(streams[0]) as only:
            async for item in only:
                yield 0, item
        return
    queue: asyncio.Queue[tuple[int, T] | BaseException | None] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[T]) -> None:
        try:
            async for item in stream:
                await queue.put((index, item))
            await queue.put(None)
        except Exception as exc:  # handed to the reader, who raises it
            await queue.put(exc)
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def fold_choices(pairs: AsyncIterator[tuple[int, ChatEvent]], n: int) -> list[Completion]:
    """The answers of a request's `n` choices, folded from their `merged` events."""
    builders = [CompletionBuilder() for _ in range(n)]
    async with aclosing(pairs):
        async for index, event in pairs:
            builders[index].add(event)
    return [builder.completion() for builder in builders]
