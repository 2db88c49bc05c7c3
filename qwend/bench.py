"""`qwend bench stream`: the streaming HTTP API against llama-cpp-python called directly, side by side.

Both paths use the same loaded model and prompt, greedy decoding and the same token budget. The KV cache is
reset before every run so neither path gains from the other's prefix. Rounds alternate the order.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.table import Table

from qwend.local_server import serve_in_thread
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Message

PROMPT = "Write a long story, at least 500 words, about a lighthouse keeper who finds a message in a bottle."


@dataclass(frozen=True)
class Run:
    ttft_s: float
    decode_tps: float
    tokens: int


def _api_run(base: str, model: str, max_tokens: int) -> Run:
    body = {
        "model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }
    first = last = None
    tokens = 0
    start = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=600) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return Run(first - start, (tokens - 1) / (last - first), tokens)


def _direct_run(llama, prompt: str, max_tokens: int) -> Run:
    first = last = None
    tokens = 0
    start = time.perf_counter()
    for chunk in llama.create_completion(prompt, max_tokens=max_tokens, temperature=0, stream=True):
        choice = chunk["choices"][0]
        if choice["finish_reason"] is None:  # the closing chunk carries no token
            tokens += 1
        if choice["text"]:
            last = time.perf_counter()
            first = first or last
    return Run(first - start, (tokens - 1) / (last - first), tokens)


def run_stream_bench(settings: Settings, *, max_tokens: int, rounds: int, console: Console) -> None:
    runtime = Runtime.create(settings)
    model = runtime.store.find(settings.model)
    runs: dict[str, list[Run]] = {"api": [], "direct": []}
    try:
        with serve_in_thread(runtime) as base:
            backend = runtime.models.loaded[model.name].backend
            llama = backend.llama
            prompt = backend.render([Message("user", PROMPT)])
            console.print(f"model {model.name}, prompt {len(backend.tokenize(prompt))} tokens, "
                          f"{max_tokens} tokens per run, {rounds} rounds, KV cache reset before each run")
            for i in range(rounds):
                order = ("api", "direct") if i % 2 == 0 else ("direct", "api")
                for path in order:
                    llama.reset()
                    if path == "api":
                        run = _api_run(base, model.name, max_tokens)
                    else:
                        run = _direct_run(llama, prompt, max_tokens)
                    runs[path].append(run)
                    console.print(f"  round {i + 1} {path:6} ttft {run.ttft_s * 1000:7.0f} ms  "
                                  f"decode {run.decode_tps:6.2f} tok/s  ({run.tokens} tokens)")
    finally:
        runtime.models.close()

    def med(path: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs[path])

    table = Table(title="qwend bench stream (medians)")
    for column in ("path", "TTFT ms", "decode tok/s"):
        table.add_column(column, justify="right")
    table.add_row("HTTP API (SSE)", f"{med('api', 'ttft_s') * 1000:.0f}", f"{med('api', 'decode_tps'):.2f}")
    table.add_row("llama-cpp-python direct", f"{med('direct', 'ttft_s') * 1000:.0f}", f"{med('direct', 'decode_tps'):.2f}")
    console.print(table)
    console.print(f"decode ratio API/direct: {med('api', 'decode_tps') / med('direct', 'decode_tps'):.3f}   "
                  f"TTFT ratio API/direct: {med('api', 'ttft_s') / med('direct', 'ttft_s'):.3f}")
