"""`qwend bench stream`: the streaming HTTP API against its engine called directly, side by side.

Both paths use the same loaded model, greedy decoding and the same token budget. Every run's prompt starts
differently, so neither path gains from the other's KV cache. Rounds alternate the order.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from qwend.cli.bench_serving import stream_chat
from qwend.cli.local_server import llama_cpp_server, serve_in_thread
from qwend.models.store import ModelStore
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Message

PROMPT = "Write a long story, at least 500 words, about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True)
class Run:
    ttft_s: float
    decode_tps: float
    tokens: int


class Clock:
    """Times one streamed answer: the first piece of text, the last, and how many tokens came."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.first = self.last = None
        self.tokens = 0

    def token(self, text: str = "x") -> None:
        self.tokens += 1
        if text:
            self.last = time.perf_counter()
            self.first = self.first or self.last

    def run(self) -> Run:
        return Run(self.first - self.start, (self.tokens - 1) / (self.last - self.first), self.tokens)


def _api_run(base: str, model: str, content: str, max_tokens: int) -> Run:
    answer = stream_chat(base, model, [{"role": "user", "content": content}], max_tokens)
    return Run(answer.ttft_s, (answer.tokens - 1) / (answer.last_s - answer.ttft_s), answer.tokens)


def _llama_cpp_direct(llama, prompt: str, content: str, max_tokens: int, clock: Clock) -> None:
    for chunk in llama.create_completion(prompt, max_tokens=max_tokens, temperature=0, stream=True):
        choice = chunk["choices"][0]
        if choice["finish_reason"] is None:  # the closing chunk carries no token
            clock.token(choice["text"])


def _transformers_direct(backend, prompt: str, content: str, max_tokens: int, clock: Clock) -> None:
    from transformers.generation.streamers import BaseStreamer

    class Ticks(BaseStreamer):
        prompt_seen = False

        def put(self, value) -> None:  # first the prompt's ids, then each new token
            if self.prompt_seen:
                clock.token()
            self.prompt_seen = True

        def end(self) -> None:
            pass

    inputs = backend.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(backend.model.device)
    backend.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, streamer=Ticks())


def _mlx_direct(backend, prompt: str, content: str, max_tokens: int, clock: Clock) -> None:
    import mlx_lm

    def run() -> None:  # on the backend's own thread: MLX state belongs to the thread that made it
        for response in mlx_lm.stream_generate(backend.model, backend.tokenizer, prompt, max_tokens=max_tokens):
            clock.token(response.text)

    backend.executor.submit(run).result()


def _upstream_direct(backend, prompt: str, content: str, max_tokens: int, clock: Clock) -> None:
    body = {"model": backend.name, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{backend.url}/chat/completions", json=body, timeout=600) as reply:
        for line in reply.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    if choice["delta"].get("content"):
                        clock.token(choice["delta"]["content"])


DIRECT = {  # each engine called directly, the way its own documentation shows: the baseline
    "llama_cpp": ("llama-cpp-python direct", _llama_cpp_direct),
    "transformers": ("transformers generate()", _transformers_direct),
    "mlx": ("mlx_lm.stream_generate", _mlx_direct),
    "upstream": ("the upstream server direct", _upstream_direct),
}


def run_stream_bench(settings: Settings, *, max_tokens: int, rounds: int, console: Console) -> None:
    with ExitStack() as stack:
        if settings.backend == "upstream" and "upstream_url" not in settings.model_fields_set:
            model_path = ModelStore(settings.store_dir, settings.models_dir).find(settings.model).path
            base = stack.enter_context(llama_cpp_server(model_path, alias=settings.model, console=console))
            settings = settings.model_copy(update={"upstream_url": f"{base}/v1"})
            console.print(f"upstream: llama-cpp-python's server on {base}")
        runtime = Runtime.create(settings)
        stack.callback(runtime.models.close)
        model = runtime.store.find(settings.model)
        base = stack.enter_context(serve_in_thread(runtime, console))
        backend = runtime.models.loaded[model.name].backend
        direct = backend
        if settings.backend == "llama_cpp":  # its own Llama, as a user would load it (the weights are shared)
            from llama_cpp import Llama

            threads = settings.threads or os.cpu_count()
            direct = Llama(str(model.path), n_ctx=backend.info.context_length, n_threads=threads,
                           n_batch=settings.batch_size, n_gpu_layers=settings.gpu_layers, flash_attn=True,
                           verbose=False)  # flash attention: as qwend, which keeps llama.cpp's default (auto)
            stack.callback(direct.close)
        runs = _measure(base, model.name, backend, direct, settings.backend, max_tokens, rounds, console)
    _report(runs, DIRECT[settings.backend][0], console)


def _measure(base: str, model: str, backend, target, engine: str, max_tokens: int, rounds: int,
             console: Console):
    """`target`: what the engine's direct path calls (the backend itself but for llama.cpp)."""
    direct = DIRECT[engine][1]
    runs: dict[str, list[Run]] = {"api": [], "direct": []}
    length = backend.prompt([Message("user", PROMPT)]).length
    console.print(f"model {model} on {engine}, prompt {length} tokens, {max_tokens} tokens per run, {rounds} rounds")
    for i in range(rounds):
        for path in ("api", "direct") if i % 2 == 0 else ("direct", "api"):
            # a fresh prompt each run, so neither path reuses the other's KV cache beyond the template's start
            content = f"Run {i}{path}. {PROMPT}"
            if path == "api":
                run = _api_run(base, model, content, max_tokens)
            else:
                clock = Clock()
                direct(target, backend.prompt([Message("user", content)]).text, content, max_tokens, clock)
                run = clock.run()
            runs[path].append(run)
            console.print(f"  round {i + 1} {path:6} ttft {run.ttft_s * 1000:7.0f} ms  "
                          f"decode {run.decode_tps:6.2f} tok/s  ({run.tokens} tokens)")
    return runs


def _report(runs: dict[str, list[Run]], direct_name: str, console: Console) -> None:
    def med(path: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[path])

    table = Table(title="qwend bench stream (medians)")
    for column in ("path", "TTFT ms", "decode tok/s"):
        table.add_column(column, justify="right")
    table.add_row("HTTP API (SSE)", f"{med('api', 'ttft_s') * 1000:.0f}", f"{med('api', 'decode_tps'):.2f}")
    table.add_row(direct_name, f"{med('direct', 'ttft_s') * 1000:.0f}", f"{med('direct', 'decode_tps'):.2f}")
    console.print(table)
    console.print(f"decode ratio API/direct: {med('api', 'decode_tps') / med('direct', 'decode_tps'):.3f}   "
                  f"TTFT ratio API/direct: {med('api', 'ttft_s') / med('direct', 'ttft_s'):.3f}")
