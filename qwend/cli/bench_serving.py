"""`qwend bench concurrent`, `sessions` and `restart`: many clients at once, and conversations that come back
(also after the daemon restarted).

Both drive the OpenAI streaming API with greedy requests, as a chat client would, against qwend and (unless
`--no-baseline`) llama-cpp-python's own server on the same model, one after the other in one run.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from qwend.cli.local_server import llama_cpp_server, serve_in_thread
from qwend.runtime import Runtime
from qwend.settings import Settings

TOPICS = ["a lighthouse", "a mountain village", "a desert caravan", "a space station", "an old library",
          "a river delta", "a night market", "a glacier", "a coral reef", "a steam train", "a vineyard",
          "a monastery", "a harbour town", "a rainforest", "a jazz club", "an observatory"]


BASELINE_SESSIONS = 4  # conversations a baseline (cache off, another server) runs in `bench sessions`


@dataclass(frozen=True)
class Answer:
    ttft_s: float
    last_s: float  # from the request to the last text
    seconds: float
    tokens: int
    prompt_tokens: int | None
    cached_tokens: int | None
    text: str


def stream_chat(base: str, model: str, messages: list[dict], max_tokens: int, extra: dict | None = None) -> Answer:
    """One greedy streamed chat completion, timed from the request to the first text and to the end."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, **(extra or {})}
    start = time.perf_counter()
    first = last = None
    pieces, usage = [], {}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=1200) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or []:
                if text := choice["delta"].get("content"):
                    last = time.perf_counter()
                    first = first or last
                    pieces.append(text)
            usage = chunk.get("usage") or usage
    end = time.perf_counter()
    details = usage.get("prompt_tokens_details") or {}
    return Answer((first or end) - start, (last or end) - start, end - start,
                  usage.get("completion_tokens", len(pieces)),
                  usage.get("prompt_tokens"), details.get("cached_tokens"), "".join(pieces))


@contextmanager
def servers(settings: Settings, baseline: bool, console: Console, **overrides) -> Iterator[list[tuple[str, str]]]:
    """(name, base URL) of qwend serving `settings` (with `overrides`), then llama-cpp-python's server."""
    with ExitStack() as stack:
        runtime = Runtime.create(settings.model_copy(update=overrides))
        stack.callback(runtime.models.close)
        model = runtime.store.find(settings.model)
        found = [("qwend", stack.enter_context(serve_in_thread(runtime, console)))]
        if baseline:
            found.append(("llama_cpp.server", stack.enter_context(llama_cpp_server(
                model.path, alias=model.name, context_length=settings.context_length or 8192, console=console))))
        console.print(f"model {model.name}; " + ", ".join(f"{name} at {base}" for name, base in found))
        yield found


def warm_up(base: str, model: str) -> None:
    """One short answer: the model is loaded and its first steps taken before anything is timed."""
    stream_chat(base, model, [{"role": "user", "content": "Hi"}], 4)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_concurrency_bench(settings: Settings, *, streams: list[int], max_tokens: int, baseline: bool,
                          console: Console) -> None:
    """(b) and (d): N clients at once, each its own question; aggregate tokens/s and time to first token."""
    table = Table(title=f"qwend bench concurrent ({max_tokens} tokens per answer)")
    for column in ("server", "streams", "aggregate tok/s", "vs 1 stream", "TTFT p50 s", "TTFT p95 s", "complete"):
        table.add_column(column, justify="right")
    with servers(settings, baseline, console, parallel=max(streams)) as found:
        for name, base in found:
            single = None
            warm_up(base, settings.model)
            for n in streams:
                questions = [[{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]
                             for i in range(n)]
                start = time.perf_counter()
                with ThreadPoolExecutor(n) as pool:
                    answers = list(pool.map(lambda m: stream_chat(base, settings.model, m, max_tokens), questions))
                wall = time.perf_counter() - start
                rate = sum(a.tokens for a in answers) / wall
                single = single or rate
                ttfts = [a.ttft_s for a in answers]
                complete = sum(a.tokens >= max_tokens for a in answers)
                table.add_row(name, str(n), f"{rate:.1f}", f"{rate / single:.2f}x", f"{percentile(ttfts, .5):.2f}",
                              f"{percentile(ttfts, .95):.2f}", f"{complete}/{n}")
                console.print(f"  {name} {n} streams: {rate:.1f} tok/s, ttft p50 {percentile(ttfts, .5):.2f} s")
    console.print(table)


def _history(topic: str, words: int) -> str:
    """A long, distinct first message: about `words` words of notes on `topic`."""
    lines, i = [], 0
    while sum(len(line.split()) for line in lines) < words:
        i += 1
        weather = ["fair", "wet", "windy"][i % 3]
        lines.append(f"Note {i} on {topic}: entry {i} records that the {topic} was visited on day {i * 7 % 31 + 1}, "
                     f"that {i * 13 % 97} people were there, and that the weather was {weather}.")
    return "Here are my notes.\n" + "\n".join(lines) + "\nRead them; I will ask questions."


def run_sessions_bench(settings: Settings, *, sessions: int, turns: int, history_words: int, max_tokens: int,
                       baseline: bool, console: Console) -> None:
    """(c), (d), (f): interleaved conversations with long histories; each turn's time to first token, with the
    prompt cache and without it (every prompt re-read), and on llama-cpp-python's server. Saved KV states start
    empty (a folder of their own). Without a cache, re-reading a turn's history costs the same in every
    conversation, so those runs take at most BASELINE_SESSIONS of them."""
    runs: dict[str, list[list[Answer]]] = {}
    with tempfile.TemporaryDirectory(prefix="qwend-bench-kv-") as kv_dir:
        for label, cache in (("qwend", True), ("qwend, cache off", False)):
            with servers(settings, baseline and cache, console, prompt_cache=cache, kv_cache_dir=Path(kv_dir)) as found:
                for name, base in found:
                    name = label if name == "qwend" else name
                    count = sessions if name == "qwend" else min(sessions, BASELINE_SESSIONS)
                    runs[name] = _conversations(base, settings.model, count, turns, history_words, max_tokens,
                                                console, name)
    table = Table(title=f"qwend bench sessions: {sessions} interleaved conversations, median TTFT per turn (s)",
                  caption=f"baselines run {min(sessions, BASELINE_SESSIONS)} of the conversations")
    table.add_column("turn", justify="right")
    for name in runs:
        table.add_column(name, justify="right")
    table.add_column("cached / prompt (qwend)", justify="right")
    table.add_column("qwend / cache off", justify="right")
    for turn in range(turns):
        medians = {name: statistics.median(a[turn].ttft_s for a in convs) for name, convs in runs.items()}
        qwend = [conv[turn] for conv in runs["qwend"]]
        share = statistics.median((a.cached_tokens or 0) / a.prompt_tokens for a in qwend if a.prompt_tokens)
        table.add_row(str(turn + 1), *(f"{m:.2f}" for m in medians.values()), f"{share:.0%}",
                      f"{medians['qwend'] / medians['qwend, cache off']:.2f}")
    console.print(table)


def run_restart_bench(settings: Settings, *, sessions: int, history_words: int, max_tokens: int,
                      console: Console) -> None:
    """(e): conversations' next turn after the daemon restarted (their KV state on disk) vs the same turn with
    the whole history read again."""
    histories = _first_messages(sessions, history_words)
    with tempfile.TemporaryDirectory(prefix="qwend-bench-kv-") as kv_dir:
        with servers(settings, False, console, kv_cache_dir=Path(kv_dir)) as [(_, base)]:
            _turn(base, settings.model, histories, 0, max_tokens, console, "qwend before the restart")
        runs = {}
        for name, cache in (("after restart", True), ("cache off", False)):
            with servers(settings, False, console, kv_cache_dir=Path(kv_dir), prompt_cache=cache) as [(_, base)]:
                warm_up(base, settings.model)
                runs[name] = _turn(base, settings.model, [list(h) for h in histories], 1, max_tokens, console, name)
    table = Table(title=f"qwend bench restart: turn 2 of {sessions} conversations after a restart")
    for column in ("conversation", "prompt tokens", "cached", "TTFT after restart s", "TTFT cache off s", "ratio"):
        table.add_column(column, justify="right")
    for i, (warm, cold) in enumerate(zip(runs["after restart"], runs["cache off"])):
        table.add_row(str(i + 1), str(warm.prompt_tokens), str(warm.cached_tokens), f"{warm.ttft_s:.2f}",
                      f"{cold.ttft_s:.2f}", f"{warm.ttft_s / cold.ttft_s:.3f}")
    console.print(table)


def _first_messages(sessions: int, history_words: int) -> list[list[dict]]:
    return [[{"role": "user", "content": _history(TOPICS[i % len(TOPICS)], history_words)}] for i in range(sessions)]


def _conversations(base: str, model: str, sessions: int, turns: int, history_words: int, max_tokens: int,
                   console: Console, name: str) -> list[list[Answer]]:
    """Turn 1 of every conversation, then turn 2 of each, ...: every turn finds the others' in between."""
    warm_up(base, model)
    histories = _first_messages(sessions, history_words)
    turns_answered = [_turn(base, model, histories, turn, max_tokens, console, name) for turn in range(turns)]
    return [list(answers) for answers in zip(*turns_answered)]


def _turn(base: str, model: str, histories: list[list[dict]], turn: int, max_tokens: int, console: Console,
          name: str) -> list[Answer]:
    """Turn `turn` (from 0) of each conversation in order, its answer added to its history."""
    answers = []
    for i, history in enumerate(histories):
        if turn:
            history.append({"role": "user", "content": f"Question {turn}: on which day was note {turn} taken?"})
        answer = stream_chat(base, model, history, max_tokens)
        history.append({"role": "assistant", "content": answer.text})
        answers.append(answer)
        console.print(f"  {name} conversation {i + 1} turn {turn + 1}: ttft {answer.ttft_s:.2f} s, "
                      f"prompt {answer.prompt_tokens} cached {answer.cached_tokens}")
    return answers
