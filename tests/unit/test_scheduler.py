import asyncio
from contextlib import aclosing

import pytest

from qwend.engine.base import Finished, Piece, Prefill
from qwend.engine.scheduler import Admitted, Scheduler, Waiting
from qwend.errors import Busy
from qwend.types import SamplingParams
from tests.fakes import FakeBackend

PARAMS = SamplingParams()


async def drain(job, trace):
    async with aclosing(job):
        async for item in job:
            trace.append(item)


async def test_one_job_generates_at_a_time_and_positions_are_reported():
    backend = FakeBackend("a b c", delay=0.01)
    scheduler = Scheduler(backend, queue_size=8)
    traces = [[] for _ in range(3)]
    await asyncio.gather(*(drain(scheduler.run([1], PARAMS), t) for t in traces))
    assert backend.max_active == 1
    assert [type(i) for i in traces[0]] == [Admitted, Prefill, Piece, Piece, Piece, Finished]
    assert traces[1][0] == Waiting(1)
    assert traces[2][0] == Waiting(2) and Waiting(1) in traces[2]
    assert all(isinstance(t[-1], Finished) for t in traces)
    assert scheduler.running == 0 and scheduler.waiting == 0


async def test_full_queue_raises_busy_with_retry_after():
    backend = FakeBackend("a b c d e f", delay=0.05)
    scheduler = Scheduler(backend, queue_size=1)
    running = asyncio.create_task(drain(scheduler.run([1], PARAMS), []))
    await asyncio.sleep(0.01)
    waiting = asyncio.create_task(drain(scheduler.run([1], PARAMS), []))
    await asyncio.sleep(0.01)
    with pytest.raises(Busy) as caught:
        await anext(scheduler.run([1], PARAMS))
    assert caught.value.retry_after >= 1 and "busy" in caught.value.message
    await asyncio.gather(running, waiting)


async def test_closing_a_running_job_stops_the_backend_and_admits_the_next():
    backend = FakeBackend("w " * 100, delay=0.01)
    scheduler = Scheduler(backend, queue_size=4)
    first = scheduler.run([1], PARAMS)
    assert isinstance(await anext(first), Admitted)
    second_trace = []
    second = asyncio.create_task(drain(scheduler.run([1], PARAMS), second_trace))
    await anext(first)
    await first.aclose()
    await asyncio.wait_for(second, 5)
    assert backend.stopped_early == 1
    assert isinstance(second_trace[-1], Finished)
    assert scheduler.running == 0


async def test_cancelling_a_waiting_job_leaves_the_queue():
    backend = FakeBackend("w " * 20, delay=0.01)
    scheduler = Scheduler(backend, queue_size=4)
    running = asyncio.create_task(drain(scheduler.run([1], PARAMS), []))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(drain(scheduler.run([1], PARAMS), []))
    await asyncio.sleep(0.01)
    assert scheduler.waiting == 1
    waiter.cancel()
    await asyncio.sleep(0)
    assert scheduler.waiting == 0
    await running
    assert scheduler.running == 0
