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


async def admitted_in_order(scheduler, jobs):
    """Hold the one slot with a job, queue `jobs` (name, client, priority) in that order, then free the slot.
    Returns the names in the order they were admitted, and each job's trace."""
    holder = scheduler.run([1], PARAMS)
    assert isinstance(await anext(holder), Admitted)
    order, traces = [], {}

    async def follow(name, client, priority):
        trace = traces[name] = []
        async with aclosing(scheduler.run([1], PARAMS, client=client, priority=priority)) as job:
            async for item in job:
                trace.append(item)
                if isinstance(item, Admitted):
                    order.append(name)

    tasks = []
    for spec in jobs:
        tasks.append(asyncio.create_task(follow(*spec)))
        await asyncio.sleep(0)  # queued before the next one
    await asyncio.sleep(0.01)  # every job has seen its place
    await holder.aclose()
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert scheduler.running == 0 and scheduler.waiting == 0
    return order, traces


def waits(trace):
    return [item.position for item in trace if isinstance(item, Waiting)]


async def test_interactive_jobs_are_admitted_before_batch_jobs():
    scheduler = Scheduler(FakeBackend("a b", delay=0.005), queue_size=8)
    order, traces = await admitted_in_order(scheduler, [
        ("batch 1", "x", "batch"), ("batch 2", "y", "batch"), ("interactive", "z", "interactive"),
    ])
    assert order == ["interactive", "batch 1", "batch 2"]
    assert waits(traces["interactive"])[0] == 1
    assert waits(traces["batch 1"])[:2] == [1, 2]  # moved back when the interactive job came


async def test_clients_take_turns_instead_of_waiting_for_each_others_backlog():
    scheduler = Scheduler(FakeBackend("a b", delay=0.005), queue_size=8)
    jobs = [("a1", "A", "interactive"), ("a2", "A", "interactive"), ("a3", "A", "interactive"),
            ("b1", "B", "interactive")]
    order, _ = await admitted_in_order(scheduler, jobs)
    assert order == ["a1", "b1", "a2", "a3"]  # B goes second, not fourth


async def test_one_clients_jobs_and_anonymous_jobs_are_first_in_first_out():
    scheduler = Scheduler(FakeBackend("a b", delay=0.005), queue_size=8)
    order, _ = await admitted_in_order(scheduler, [(f"a{i}", "A", "batch") for i in range(4)])
    assert order == ["a0", "a1", "a2", "a3"]
    order, _ = await admitted_in_order(scheduler, [(f"n{i}", None, "interactive") for i in range(3)])
    assert order == ["n0", "n1", "n2"]


async def test_positions_follow_the_admission_order_and_are_resent_when_they_change():
    scheduler = Scheduler(FakeBackend("a b", delay=0.005), queue_size=8)
    jobs = [("a1", "A", "interactive"), ("a2", "A", "interactive"), ("a3", "A", "interactive"),
            ("b1", "B", "interactive")]
    _, traces = await admitted_in_order(scheduler, jobs)
    # the holder runs (1 ahead); a1 a2 a3 queue as 1 2 3; b1 comes in second (2) and moves a2, a3 back
    assert waits(traces["a1"]) == [1]
    assert waits(traces["a2"]) == [2, 3, 2, 1]
    assert waits(traces["a3"]) == [3, 4, 3, 2, 1]
    assert waits(traces["b1"]) == [2, 1]


async def test_two_slots_go_to_the_client_with_fewer_jobs_running():
    scheduler = Scheduler(FakeBackend("w " * 50, delay=0.01), queue_size=8, slots=2)
    order = []

    async def follow(name, client):
        async with aclosing(scheduler.run([1], PARAMS, client=client)) as job:
            async for item in job:
                if isinstance(item, Admitted):
                    order.append(name)

    tasks = []
    for name, client in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B")]:
        tasks.append(asyncio.create_task(follow(name, client)))
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    # a1 and a2 take the free slots at once; when one ends, B (nothing running) goes before A (one running)
    assert order == ["a1", "a2", "b1", "a3"]
