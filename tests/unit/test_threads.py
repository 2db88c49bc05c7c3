"""A blocking token loop in a worker thread: closing the stream must stop the loop before the next job runs
(wrapped in a second async generator, the close once reached the loop only at garbage collection, and
llama.cpp crashed on two overlapping generations)."""

from __future__ import annotations

import threading
import time
from contextlib import aclosing

from qwend.engine.base import Finished, ModelInfo, Piece, Prefill, Prompt
from qwend.engine.scheduler import Scheduler
from qwend.engine.threads import stream_from_thread
from qwend.types import SamplingParams


class ThreadedBackend:
    """Generates a token every 10 ms in a worker thread, as the local engines do; counts loops running."""

    info = ModelInfo(512, 512, 256, 1, 1, True)

    def __init__(self) -> None:
        self.running = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def _loop(self, stop: threading.Event):
        with self.lock:
            self.running += 1
            self.overlapped |= self.running > 1
        try:
            yield Prefill(0)
            for _ in range(200):
                if stop.is_set():
                    yield Finished("cancelled")
                    return
                time.sleep(0.01)
                yield Piece("x")
            yield Finished("length")
        finally:
            with self.lock:
                self.running -= 1

    def generate(self, prompt, params, constraint=None):
        return stream_from_thread(self._loop, "test")


async def test_leaving_a_stream_stops_its_worker_before_the_next_job():
    backend = ThreadedBackend()
    scheduler = Scheduler(backend, queue_size=4)
    for _ in range(3):
        async with aclosing(scheduler.run(Prompt((1, 2)), SamplingParams())) as job:
            async for item in job:
                if isinstance(item, Piece):
                    break  # a stop string matched, or the client left
        assert backend.running == 0  # stopped by the time the job is closed
    assert not backend.overlapped


def test_local_backends_hand_out_the_threaded_stream_itself():
    import importlib
    import inspect

    from qwend.engine.registry import BACKENDS

    for name in ("llama_cpp", "transformers", "mlx"):
        module, _, attr = BACKENDS[name].partition(":")
        generate = getattr(importlib.import_module(module), attr).generate
        assert not inspect.isasyncgenfunction(generate), f"{name}: generate must return stream_from_thread(...)"
