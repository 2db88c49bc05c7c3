"""`qwend bench scale`: conversations through several daemons sharing one PostgreSQL (docs/deploy.md).

(a) In front of one upstream server (llama-cpp-python's own, on the configured model): the conversations held
    by the client against the upstream directly, then as qwend sessions through one daemon, through two
    daemons with each session kept on one of them (affinity), and through two daemons taking turns.
(b) Two daemons with llama.cpp models of their own, where the KV cache lives in the daemon: a session's turns
    kept on its daemon (affinity) vs sent to the other one every turn (which reads the whole history again).
Every conversation opens with a long message, as in `bench sessions`; times are whole turns, greedy.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from qwend.cli.bench_serving import TOPICS, _history, stream_chat
from qwend.cli.local_server import free_port, llama_cpp_server, postgres_server
from qwend.settings import Settings

PROFILE = 'name = "bench"\ndescription = "No tools."\nsystem_prompt = "You are a helpful assistant."\n'
Route = Callable[[int, int], int]  # (conversation, turn) -> which daemon


@contextmanager
def qwend_process(workdir: Path, env: dict[str, str], store_dir: Path) -> Iterator[str]:
    """`qwend serve` as its own process with `env` added and a data folder of its own (logs, saved KV states)
    beside the pulled models in `store_dir`; yields its URL once its model is loaded."""
    port = free_port()
    data = workdir / f"daemon-{port}"
    data.mkdir()
    (data / "models").symlink_to(store_dir)
    log = data / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "qwend", "serve", "--port", str(port), "--log-level", "warning"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                env={**os.environ, "QWEND_PULL_MISSING": "false", "QWEND_DATA_DIR": str(data), **env})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not _healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"qwend serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return bool(httpx.get(f"{url}/health", timeout=2).json().get("model_loaded"))
    except (httpx.HTTPError, ValueError):
        return False


def run_scale_bench(settings: Settings, *, sessions: int, turns: int, history_words: int, max_tokens: int,
                    console: Console) -> None:
    model = _model_path(settings)
    table = Table(title=f"qwend bench scale ({sessions} conversations x {turns} turns, ~{history_words}-word "
                        f"openings, {max_tokens} tokens per answer)")
    for column in ("engine", "layout", "mean turn s", "later turns s", "aggregate tok/s", "vs first row"):
        table.add_column(column, justify="right")
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qwend-bench-scale-")))
        (workdir / "profiles").mkdir()
        (workdir / "profiles" / "bench.toml").write_text(PROFILE)
        database = stack.enter_context(postgres_server())
        shared = {"QWEND_DATABASE_URL": database, "QWEND_PROFILES_DIR": str(workdir / "profiles"),
                  "QWEND_MODEL": settings.model}
        console.print(f"PostgreSQL at {database}")
        daemon = partial(qwend_process, workdir, store_dir=settings.store_dir)

        with llama_cpp_server(model, alias=settings.model, console=console) as upstream:
            env = {**shared, "QWEND_BACKEND": "upstream", "QWEND_UPSTREAM_URL": f"{upstream}/v1"}
            with daemon(env) as a, daemon(env) as b:
                rows = [("upstream direct", _direct(upstream, settings.model, sessions, turns, history_words,
                                                    max_tokens, console))]
                for n, (layout, daemons, route) in enumerate(
                        (("1 daemon", [a], _same), ("2 daemons, affinity", [a, b], _affinity),
                         ("2 daemons, alternating", [a, b], _alternating)), start=1):
                    rows.append((layout, _sessions(daemons, route, sessions, turns, history_words, max_tokens,
                                                   console, layout, topics=n * sessions)))
                _add_rows(table, "upstream", rows)

        local = {**shared, "QWEND_BACKEND": "llama_cpp", "QWEND_PARALLEL": "2", "QWEND_CONTEXT_LENGTH": "8192"}
        with daemon(local) as a, daemon(local) as b:
            rows = [(layout, _sessions([a, b], route, sessions, turns, history_words, max_tokens, console, layout,
                                       topics=n * sessions, concurrent=False))
                    for n, (layout, route) in enumerate((("2 daemons, affinity", _affinity),
                                                         ("2 daemons, alternating", _alternating)))]
            _add_rows(table, "llama.cpp in each", rows)
    console.print(table)


def _model_path(settings: Settings) -> Path:
    from qwend.models.store import ModelStore

    model = ModelStore(settings.store_dir, settings.models_dir).resolve(settings.model)
    if not model.present:
        raise RuntimeError(f"{settings.model} is not on disk; run `qwend pull {settings.model}`")
    return model.path


def _same(conversation: int, turn: int) -> int:
    return 0


def _affinity(conversation: int, turn: int) -> int:
    return conversation % 2  # what a balancer hashing the session id does: one daemon per conversation


def _alternating(conversation: int, turn: int) -> int:
    return (conversation + turn) % 2


Turn = tuple[float, int, int]  # seconds, turn number (from 0), tokens answered


def _direct(upstream: str, model: str, sessions: int, turns: int, words: int, max_tokens: int,
            console: Console) -> tuple[list[Turn], float]:
    """The baseline: each conversation's client sends its whole history to the upstream every turn."""
    def conversation(i: int) -> list[Turn]:
        history, timed = [{"role": "user", "content": _history(TOPICS[i % len(TOPICS)], words)}], []
        for turn in range(turns):
            if turn:
                history.append({"role": "user", "content": _question(turn)})
            answer = stream_chat(upstream, model, history, max_tokens)
            history.append({"role": "assistant", "content": answer.text})
            timed.append((answer.seconds, turn, answer.tokens))
        console.print(f"  upstream direct, conversation {i + 1}: {[round(t[0], 2) for t in timed]} s")
        return timed

    return _all_at_once(conversation, sessions)


def _sessions(daemons: list[str], route: Route, sessions: int, turns: int, words: int, max_tokens: int,
              console: Console, layout: str, *, topics: int, concurrent: bool = True) -> tuple[list[Turn], float]:
    """Each conversation as a qwend session, every turn sent to the daemon `route` names. Conversations are on
    topics from `topics` on: none finds a layout before it in a cache."""
    def conversation(i: int) -> list[Turn]:
        sid = httpx.post(f"{daemons[0]}/v1/sessions", json={"profile_name": "bench"}).json()["session_id"]
        timed = []
        for turn in range(turns):
            message = _history(TOPICS[(topics + i) % len(TOPICS)], words) if turn == 0 else _question(turn)
            start = time.perf_counter()
            reply = httpx.post(f"{daemons[route(i, turn)]}/v1/sessions/{sid}/chat", timeout=1200,
                               json={"message": message, "temperature": 0, "max_tokens": max_tokens})
            reply.raise_for_status()
            timed.append((time.perf_counter() - start, turn, reply.json()["usage"]["completion_tokens"]))
        console.print(f"  {layout}, conversation {i + 1}: {[round(t[0], 2) for t in timed]} s")
        return timed

    for daemon in daemons:  # its first answer is not timed
        httpx.post(f"{daemon}/v1/chat", json={"message": "Hi", "profile": "bench", "max_tokens": 4}, timeout=600)
    if concurrent:
        return _all_at_once(conversation, sessions)
    start = time.perf_counter()
    timed = [t for i in range(sessions) for t in conversation(i)]
    return timed, time.perf_counter() - start


def _all_at_once(conversation: Callable[[int], list[Turn]], sessions: int) -> tuple[list[Turn], float]:
    start = time.perf_counter()
    with ThreadPoolExecutor(sessions) as pool:
        timed = [t for turns in pool.map(conversation, range(sessions)) for t in turns]
    return timed, time.perf_counter() - start


def _question(turn: int) -> str:
    return f"Question {turn}: on which day was note {turn} taken?"


def _add_rows(table: Table, engine: str, rows: list[tuple[str, tuple[list[Turn], float]]]) -> None:
    first = None
    for layout, (timed, wall) in rows:
        mean = statistics.mean(t[0] for t in timed)
        later = statistics.mean(t[0] for t in timed if t[1] > 0)
        rate = sum(t[2] for t in timed) / wall
        first = first or later
        table.add_row(engine, layout, f"{mean:.2f}", f"{later:.2f}", f"{rate:.1f}", f"{later / first:.2f}x")
