"""Per-model scheduler: a bounded queue of jobs in front of the backend, admitted fairly, with queue positions
and cancellation.

`slots` jobs run at once (the backend's `info.parallel`: llama.cpp decodes several answers in one batch).
When a slot frees, the next job is chosen by, in turn:
1. priority: interactive jobs before batch jobs;
2. fairness between clients (the requester a job came from): the one with the fewest jobs running now, ties
   to the one admitted least recently, then to the one whose job came first; so a client that queued one
   job takes turns with a client that queued ten, instead of waiting for all ten;
3. arrival, within one client.
A job without a client is a client of its own. `Waiting(position)` is a job's place in that order (the
running jobs counted ahead of it), sent again whenever it changes: a later interactive job, or a job from a
client with less running, can move a job back.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from qwend.engine.base import Backend, Generated, Prompt
from qwend.errors import Busy
from qwend.types import OutputConstraint, Priority, SamplingParams

T = TypeVar("T")


@dataclass(frozen=True)
class Waiting:
    """Yielded while the job waits; `position` counts the jobs ahead of it, running ones included."""

    position: int


@dataclass(frozen=True)
class Admitted:
    pass


@dataclass(eq=False)
class _Job:
    client: Hashable  # the requester, or a fresh object() for an anonymous job (a client of its own)
    batch: bool
    arrival: int
    position: int = -1  # the last one reported
    admitted: bool = False
    moved: asyncio.Event = field(default_factory=asyncio.Event)  # admitted, or its position changed


class Scheduler:
    def __init__(self, backend: Backend, *, queue_size: int, slots: int = 1) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self.slots = slots
        self._waiting: list[_Job] = []  # in arrival order
        self._running_by_client: Counter[Hashable] = Counter()
        self._admitted_at: dict[Hashable, int] = {}  # client -> the admission count when it last had a job admitted
        self._admissions = 0
        self._arrivals = itertools.count()
        self._mean_job_s = 5.0  # moving average of job durations, for Retry-After
        self._idle = asyncio.Event()
        self._idle.set()
        self.last_active = time.time()  # when a job last started or ended (the model's idle clock)

    @property
    def running(self) -> int:
        return self._running_by_client.total()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self.running and not self._waiting

    async def drained(self) -> None:
        """Return once no job is running or waiting (an unload waits for this before freeing the model)."""
        await self._idle.wait()

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely to free up."""
        return max(1, math.ceil(self._mean_job_s))

    def run(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None, *,
        client: str | None = None, priority: Priority = "interactive",
    ) -> AsyncIterator[Waiting | Admitted | Generated]:
        """Queue a generation for `client` and stream it (see `run_work`)."""
        return self.run_work(lambda: self.backend.generate(prompt, params, constraint), client=client,
                             priority=priority)

    async def run_work(
        self, start: Callable[[], AsyncIterator[T]], *, client: str | None = None, priority: Priority = "interactive",
    ) -> AsyncIterator[Waiting | Admitted | T]:
        """Queue a job for `client`; once admitted, stream what `start()` yields (a generation, or another use
        of the model such as embeddings). Raises Busy on the first step when the queue is full.

        Closing this iterator at any point (client gone, stop matched) leaves the queue or stops the
        backend, and admits the next job.
        """
        if self.running >= self.slots and len(self._waiting) >= self.queue_size:
            raise Busy(
                f"the model is busy: {self.running} running and {len(self._waiting)} waiting "
                f"(queue size {self.queue_size}); retry later",
                retry_after=self.retry_after(),
            )
        job = _Job(object() if client is None else client, priority == "batch", next(self._arrivals))
        self._waiting.append(job)
        self._idle.clear()
        self._admit()
        try:
            reported = None
            while not job.admitted:
                job.moved.clear()  # before the yield: a move while the consumer holds the event is kept
                if job.position != reported:  # it may have moved and come back before this ran
                    reported = job.position
                    yield Waiting(reported)
                await job.moved.wait()
            yield Admitted()
            started = time.monotonic()
            generation = start()
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
            if job.admitted:
                self._running_by_client[job.client] -= 1
            else:
                self._waiting.remove(job)
            if not self._running_by_client[job.client] and all(j.client != job.client for j in self._waiting):
                # forget a client with nothing here: the tables hold only the clients of now
                del self._running_by_client[job.client]
                self._admitted_at.pop(job.client, None)
            self.last_active = time.time()
            self._admit()

    def _admit(self) -> None:
        """Fill the free slots in admission order, and tell the jobs left waiting where they now stand."""
        order = self._admission_order()
        free = max(0, self.slots - self.running)
        for job in order[:free]:
            self._waiting.remove(job)
            self._running_by_client[job.client] += 1
            self._admissions += 1
            self._admitted_at[job.client] = self._admissions
            job.admitted = True
            job.moved.set()
        for ahead, job in enumerate(order[free:], start=self.running):
            if job.position != ahead:
                job.position = ahead
                job.moved.set()
        if self.idle:
            self._idle.set()

    def _admission_order(self) -> list[_Job]:
        """The waiting jobs in the order they would be admitted if no job arrived or finished meanwhile:
        each pick counts as running for its client from then on, as it will once admitted."""
        queues: dict[tuple[bool, Hashable], deque[_Job]] = {}
        for job in self._waiting:  # arrival order, so each queue is FIFO
            queues.setdefault((job.batch, job.client), deque()).append(job)
        running, admitted_at, admissions = Counter(self._running_by_client), dict(self._admitted_at), self._admissions

        def rank(key: tuple[bool, Hashable]) -> tuple[bool, int, int, int]:
            batch, client = key
            return batch, running[client], admitted_at.get(client, -1), queues[key][0].arrival

        order = []
        while queues:
            key = min(queues, key=rank)
            job = queues[key].popleft()
            if not queues[key]:
                del queues[key]
            order.append(job)
            admissions += 1
            running[job.client] += 1
            admitted_at[job.client] = admissions
        return order
