"""Per-model scheduler: a bounded FIFO of jobs in front of the backend, with queue positions and cancellation.

One job generates at a time (`slots=1`). Admission is the only shared state, so raising `slots` later lets
a batching backend run several sequences together without changing callers.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio

from qwend.engine.base import Backend, Generated, Prompt
from qwend.errors import Busy
from qwend.types import OutputConstraint, SamplingParams


@dataclass(frozen=True)
class Waiting:
    """Yielded while the job waits; `position` counts the jobs ahead of it, running ones included."""

    position: int


@dataclass(frozen=True)
class Admitted:
    pass


@dataclass(eq=False)
class _Ticket:
    moved: asyncio.Event = field(default_factory=asyncio.Event)
    admitted: bool = False


class Scheduler:
    def __init__(self, backend: Backend, *, queue_size: int, slots: int = 1) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self.slots = slots
        self._waiting: deque[_Ticket] = deque()
        self._running = 0
        self._mean_job_s = 5.0  # moving average of job durations, for Retry-After
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_active = time.time()  # when a job last started or ended (the model's idle clock)

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._running and not self._waiting

    async def drained(self) -> None:
        """Return once no job is running or waiting (an unload waits for this before freeing the model)."""
        await self._idle.wait()

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely to free up."""
        return max(1, math.ceil(self._mean_job_s))

    async def run(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Waiting | Admitted | Generated]:
        """Queue a job and stream it. Raises Busy on the first step when the queue is full.

        Closing this iterator at any point (client gone, stop matched) leaves the queue or stops the
        backend, and admits the next job.
        """
        if self._running >= self.slots and len(self._waiting) >= self.queue_size:
            raise Busy(
                f"the model is busy: {self._running} running and {len(self._waiting)} waiting "
                f"(queue size {self.queue_size}); retry later",
                retry_after=self.retry_after(),
            )
        ticket = _Ticket()
        self._waiting.append(ticket)
        self._idle.clear()
        self._admit()
        try:
            while not ticket.admitted:
                ticket.moved.clear()  # before the yield: a move while the consumer holds the event is kept
                yield Waiting(self._running + self._waiting.index(ticket))
                await ticket.moved.wait()
            yield Admitted()
            started = time.monotonic()
            generation = self.backend.generate(prompt, params, constraint)
            try:
                async for item in generation:
                    yield item
            finally:
                # the backend must have stopped touching the model before the next job is admitted,
                # even while this task is being cancelled
                with anyio.CancelScope(shield=True):
                    await generation.aclose()
                self._mean_job_s = 0.8 * self._mean_job_s + 0.2 * (time.monotonic() - started)
        finally:
            if ticket.admitted:
                self._running -= 1
            else:
                self._waiting.remove(ticket)
            self.last_active = time.time()
            self._admit()

    def _admit(self) -> None:
        while self._running < self.slots and self._waiting:
            ticket = self._waiting.popleft()
            ticket.admitted = True
            ticket.moved.set()
            self._running += 1
        for ticket in self._waiting:  # everyone behind moved up
            ticket.moved.set()
        if not self._running and not self._waiting:
            self._idle.set()
