"""`qwend bench peers`: qwend against llama.cpp's own llama-server, on the same GGUF and threads, in one run.

llama-server is built once from the llama.cpp that the pinned llama-cpp-python vendors, with qwend's CPU flags
(scripts/build-llama-server), and run as the guide's speed anchor: `-c 32768 -np 8 --kv-unified --jinja`, and
a second time with `--spec-type ngram-simple` for its n-gram speculation. Both servers are separate processes
driven through the OpenAI streaming API with greedy requests; every figure prints with its ratio.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from qwend.cli.bench_serving import TOPICS, Answer, _history, stream_chat
from qwend.cli.local_server import free_port
from qwend.settings import Settings

CONTEXT = 32768
OPEN = "Write a long story about {topic}, at least 400 words."
# A code edit whose answer copies its input (a rename in a 35-line file): the workload speculation is for
EDIT_CODE = """import json
import time
from pathlib import Path


class Inventory:
    def __init__(self, path):
        self.path = Path(path)
        self.items = {}
        self.loaded_at = None

    def load(self):
        if self.path.exists():
            self.items = json.loads(self.path.read_text())
        self.loaded_at = time.time()
        return len(self.items)

    def add(self, name, quantity=1):
        current = self.items.get(name, 0)
        self.items[name] = current + quantity
        return self.items[name]

    def remove(self, name, quantity=1):
        current = self.items.get(name, 0)
        if quantity > current:
            raise ValueError(f"only {current} of {name} left")
        self.items[name] = current - quantity
        return self.items[name]

    def save(self):
        self.path.write_text(json.dumps(self.items, indent=2, sort_keys=True))

    def report(self):
        lines = [f"{name}: {count}" for name, count in sorted(self.items.items())]
        return "\\n".join(lines)
"""
EDIT = ("Rename the method `report` to `summary` in this Python file. Reply with the whole file only."
        f"\n\n```python\n{EDIT_CODE}```")


@dataclass(frozen=True)
class Server:
    name: str
    command: list[str]
    env: dict[str, str] | None = None


@dataclass(frozen=True)
class Peer:
    """A running server: where it is, and the model name its requests carry."""

    base: str
    model: str

    extra: dict | None = None  # more fields for each request

    def chat(self, messages: list[dict], max_tokens: int) -> Answer:
        return stream_chat(self.base, self.model, messages, max_tokens, self.extra)

    def ask(self, content: str, max_tokens: int) -> Answer:
        return self.chat([{"role": "user", "content": content}], max_tokens)


@dataclass
class Figures:
    """One server's results, by workload (None: not run on it)."""

    decode: float | None = None  # tok/s, one stream
    aggregate: float | None = None  # tok/s, 8 streams
    prefill: float | None = None  # prompt tok/s of a first turn
    first_turns: float | None = None  # s, median TTFT of 16 first turns one after another
    later_turns: float | None = None  # s, median TTFT of their second turns
    edit: float | None = None  # tok/s of the code edit
    decode_plain: float | None = None  # qwend without drafts: decode, and the code edit
    edit_plain: float | None = None
    short_wait: float | None = None  # s, TTFT of a short request sent 1 s after a long prompt


def run_peers_bench(settings: Settings, *, threads: int, console: Console) -> None:
    model = _model_path(settings)
    binary = _llama_server_binary(console)
    common = ["-m", str(model), "-c", str(CONTEXT), "-np", "8", "--kv-unified", "--jinja", "-t", str(threads),
              "--host", "127.0.0.1"]
    kv = tempfile.mkdtemp(prefix="qwend-bench-kv-")  # no KV state saved by an earlier run
    settings_env = {"QWEND_THREADS": str(threads), "QWEND_CONTEXT_LENGTH": str(CONTEXT), "QWEND_KV_CACHE_DIR": kv}
    servers = [
        Server("qwend", [sys.executable, "-m", "qwend", "serve", "--model", settings.model, "--host", "127.0.0.1"],
               {**os.environ, **settings_env}),
        Server("llama-server", [str(binary), *common]),
        Server("llama-server ngram", [str(binary), *common, "--spec-type", "ngram-simple"]),
    ]
    results: dict[str, Figures] = {}
    try:
        for server in servers:
            with _running(server, settings.model, console) as peer:
                if server.name == "llama-server ngram":  # only what speculation changes
                    results[server.name] = Figures(decode=_decode(peer), edit=_edit(peer))
                else:
                    results[server.name] = _all(peer)
                if server.name == "qwend":  # the same, speculation off
                    plain = Peer(peer.base, peer.model, {"draft_max": 0})
                    results[server.name].decode_plain, results[server.name].edit_plain = _decode(plain), _edit(plain)
                console.print(f"  {server.name}: {results[server.name]}")
    finally:
        shutil.rmtree(kv, ignore_errors=True)
    _table(results, console)


def _all(peer: Peer) -> Figures:
    figures = Figures(decode=_decode(peer), edit=_edit(peer))
    figures.aggregate = _aggregate(peer)
    figures.prefill = _prefill(peer)
    figures.first_turns, figures.later_turns = _conversations(peer)
    figures.short_wait = _short_behind_long(peer)
    return figures


def _rate(answer: Answer) -> float:
    return (answer.tokens - 1) / max(answer.last_s - answer.ttft_s, 1e-9)


def _decode(peer: Peer) -> float:
    """One stream's decode rate on an open-ended answer (the median of 3)."""
    return statistics.median(_rate(peer.ask(OPEN.format(topic=TOPICS[i]), 256)) for i in range(3))


def _edit(peer: Peer) -> float:
    """The code edit's decode rate (the median of 3)."""
    return statistics.median(_rate(peer.ask(EDIT, 512)) for _ in range(3))


def _aggregate(peer: Peer, streams: int = 8, max_tokens: int = 128) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        answers = list(pool.map(lambda i: peer.ask(OPEN.format(topic=TOPICS[i + 3]), max_tokens), range(streams)))
    return sum(a.tokens for a in answers) / (time.perf_counter() - start)


def _prefill(peer: Peer) -> float:
    """Prompt tokens per second of a first turn of about 1,400 tokens (a prompt nothing else shares; the
    median of 3: one such turn moved by 25% between runs)."""
    answers = [peer.chat([{"role": "user", "content": _history(topic, 900)}], 1)
               for topic in ("a lighthouse", "a glacier", "a bakery")]
    return statistics.median((answer.prompt_tokens or 0) / answer.ttft_s for answer in answers)


def _conversations(peer: Peer, count: int = 16) -> tuple[float, float]:
    """Median TTFT of the first turns of `count` conversations (about 560 tokens each) one after another, and
    of their second turns."""
    histories = [[{"role": "user", "content": _history(TOPICS[i % len(TOPICS)] + f" {i}", 330)}]
                 for i in range(count)]
    medians = []
    for turn in range(2):
        waits = []
        for history in histories:
            if turn:
                history.append({"role": "user", "content": "On which day was note 3 taken?"})
            answer = peer.chat(history, 16)
            history.append({"role": "assistant", "content": answer.text})
            waits.append(answer.ttft_s)
        medians.append(statistics.median(waits))
    return medians[0], medians[1]


def _short_behind_long(peer: Peer) -> float:
    """TTFT of a short request sent 1 s after a prompt of about 3,000 tokens started."""
    long = threading.Thread(target=peer.chat, args=([
        {"role": "user", "content": _history("a harbour town", 2000)}], 8))
    long.start()
    time.sleep(1)
    wait = peer.ask("Say hi.", 4).ttft_s
    long.join()
    return wait


def _table(results: dict[str, Figures], console: Console) -> None:
    qwend, peer, ngram = (results[name] for name in ("qwend", "llama-server", "llama-server ngram"))
    table = Table(title="qwend bench peers: greedy, same GGUF and threads (ratio > 1: qwend better)")
    for column in ("workload", "qwend", "llama-server", "ratio"):
        table.add_column(column, justify="right")
    rows: list[tuple[str, float | None, float | None, Callable[[float, float], float], str]] = [
        ("decode, one stream (tok/s)", qwend.decode, peer.decode, lambda a, b: a / b, ".1f"),
        ("8 streams, aggregate (tok/s)", qwend.aggregate, peer.aggregate, lambda a, b: a / b, ".1f"),
        ("prefill, ~1,400-token first turn (tok/s)", qwend.prefill, peer.prefill, lambda a, b: a / b, ".0f"),
        ("16 first turns, ~560 tokens: median TTFT (s)", qwend.first_turns, peer.first_turns, lambda a, b: b / a, ".2f"),
        ("their second turns: median TTFT (s)", qwend.later_turns, peer.later_turns, lambda a, b: b / a, ".2f"),
        ("code edit vs llama-server ngram (tok/s)", qwend.edit, ngram.edit, lambda a, b: a / b, ".1f"),
        ("code edit vs llama-server plain (tok/s)", qwend.edit, peer.edit, lambda a, b: a / b, ".1f"),
        ("open-ended vs llama-server ngram (tok/s)", qwend.decode, ngram.decode, lambda a, b: a / b, ".1f"),
        ("qwend code edit: drafts on vs off (tok/s)", qwend.edit, qwend.edit_plain, lambda a, b: a / b, ".1f"),
        ("qwend open-ended: drafts on vs off (tok/s)", qwend.decode, qwend.decode_plain, lambda a, b: a / b, ".1f"),
        ("short request 1 s behind ~3,000 tokens: TTFT (s)", qwend.short_wait, peer.short_wait, lambda a, b: b / a,
         ".2f"),
    ]
    for label, ours, theirs, ratio, fmt in rows:
        if ours is not None and theirs is not None:
            table.add_row(label, format(ours, fmt), format(theirs, fmt), f"{ratio(ours, theirs):.2f}")
    console.print(table)


@contextmanager
def _running(server: Server, model: str, console: Console) -> Iterator[Peer]:
    """`server` on a free loopback port until it answers /health; its log goes to a temporary file."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen([*server.command, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, text=True,
                            env=server.env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        with console.status(f"starting {server.name}"):
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"{server.name} exited: {log.read()[-2000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{server.name} did not start in 300 s")
                time.sleep(0.5)
        peer = Peer(base, model)
        peer.ask("Hi", 4)  # loaded and warm before anything is timed
        yield peer
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def _model_path(settings: Settings) -> Path:
    from qwend.models.store import ModelStore

    return ModelStore(settings.store_dir, settings.models_dir).resolve(settings.model).path


def _llama_server_binary(console: Console) -> Path:
    script = Path(__file__).resolve().parents[2] / "scripts" / "build-llama-server"
    with console.status("llama-server: built once per machine (about 10 minutes the first time)"):
        built = subprocess.run([str(script)], capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"building llama-server failed: {built.stderr[-2000:]}")
    return Path(built.stdout.strip().splitlines()[-1])
