"""Blocking generation loops in a worker thread, streamed to the event loop item by item.

The loop gets a stop flag to check between tokens: closing the async iterator sets it, and waits (shielded
from cancellation) until the thread has let go of the model, so the next job never overlaps. A backend returns
this iterator itself from `generate`: wrapped in another async generator, closing the wrapper would leave
this one to the garbage collector, and the next job would start on a model still generating.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor

import anyio

from qwend.engine.base import Generated
from qwend.errors import BackendError

_END = object()


async def stream_from_thread(
    produce: Callable[[threading.Event], Iterator[Generated]], engine: str, executor: Executor | None = None
) -> AsyncIterator[Generated]:
    """Run `produce(stop)` in `executor` (the default one when None) and yield what it yields."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            for item in produce(stop):
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except Exception as exc:  # surfaced to the consumer below
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    worker = loop.run_in_executor(executor, run)
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise BackendError(f"{engine} generation failed: {item}") from item
            yield item
    finally:
        stop.set()
        # the model must be idle before the next job starts, even while this task is being cancelled
        with anyio.CancelScope(shield=True):
            await worker
