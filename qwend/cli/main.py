"""The `qwend` command: serve, pull, rm, models, keys, bench, eval, chat."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn, TimeRemainingColumn
from rich.table import Table

from qwend.errors import QwendError
from qwend.engine.registry import model_source
from qwend.models.facts import read_all_facts
from qwend.models.store import LocalModel, ModelStore
from qwend.settings import Settings

app = typer.Typer(help="qwend: a local daemon for Qwen models.", no_args_is_help=True, add_completion=False)
console = Console(stderr=True)  # progress and errors; results go to stdout

DataDir = Annotated[Optional[Path], typer.Option("--data-dir", help="Where models and state live.")]
BackendOption = Annotated[
    Optional[str], typer.Option("--backend", help="llama_cpp (default), transformers, mlx or upstream.")
]


def _settings(**overrides) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def fail(exc: QwendError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc.message}")
    return typer.Exit(1)


def pull_with_progress(store: ModelStore, name: str) -> LocalModel:
    """Pull `name` if it is missing, drawing a progress bar (an interrupted download resumes where it was)."""
    model = store.resolve(name)
    if model.present:
        return model
    if getattr(store, "folders", False) and model.entry is not None:  # (an upstream's store has none)
        console.print(f"{model.name}: converting its GGUF into a Hugging Face folder (once; about 90 s and 3 GB "
                      "of memory for the default model)")
    columns = ("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
               TransferSpeedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"pulling {model.name}", total=None)
        return store.pull(name, on_progress=lambda done, total: progress.update(task, completed=done, total=total))


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 5997).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "--model_name", help="Model to load at start.")] = None,
    log_level: Annotated[Optional[str], typer.Option("--log-level", help="debug, info, warning or error.")] = None,
    backend: BackendOption = None,
    upstream_url: Annotated[Optional[str], typer.Option(
        "--upstream-url", help="The upstream server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Serve the HTTP API, fetching the start model first if it is missing."""
    import uvicorn
    from sse_starlette.sse import AppStatus

    from qwend.access import ApiKeys, exposure_problem
    from qwend.app import create_app
    from qwend.logs import configure_logging

    settings = _settings(host=host, port=port, model=model, log_level=log_level, data_dir=data_dir, backend=backend,
                         upstream_url=upstream_url)
    configure_logging(settings)
    problem = exposure_problem(settings, ApiKeys.load(settings))
    if problem:
        console.print(f"[red]error:[/red] {problem}")
        raise typer.Exit(2)
    if settings.pull_missing and settings.backend != "upstream":
        try:
            pull_with_progress(model_source(settings), settings.model)
        except QwendError as exc:
            raise fail(exc) from None
    # on SIGTERM uvicorn stops accepting and lets running requests finish for shutdown_timeout seconds, then
    # cancels them; sse-starlette would instead cut every SSE stream at once, so it leaves that to uvicorn
    AppStatus.disable_automatic_graceful_drain()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=None, access_log=False, timeout_graceful_shutdown=settings.shutdown_timeout)


@app.command()
def pull(
    name: Annotated[Optional[str], typer.Argument(help="Catalog name, hf:OWNER/REPO[:FILE] or a .gguf name.")] = None,
    backend: BackendOption = None,
    data_dir: DataDir = None,
) -> None:
    """Fetch a model into the store (verified by sha256 for catalog models). For transformers and mlx, a
    catalog model is converted once from its GGUF into a Hugging Face folder."""
    settings = _settings(data_dir=data_dir, backend=backend)
    try:
        model = pull_with_progress(model_source(settings), name or settings.model)
    except QwendError as exc:
        raise fail(exc) from None
    print(f"{model.name}: {model.path} ({model.size:,} bytes)")


@app.command()
def rm(
    name: Annotated[str, typer.Argument(help="The model to delete from the store or the models folder.")],
    backend: BackendOption = None,
    data_dir: DataDir = None,
) -> None:
    """Delete a model from disk (for transformers and mlx, its Hugging Face folder)."""
    settings = _settings(data_dir=data_dir, backend=backend)
    try:
        model = model_source(settings).remove(name)
    except QwendError as exc:
        raise fail(exc) from None
    print(f"deleted {model.name} ({model.path})")


@app.command()
def models(backend: BackendOption = None, data_dir: DataDir = None) -> None:
    """List the models on disk, what each can do, and which ones a running daemon has loaded."""
    settings = _settings(data_dir=data_dir, backend=backend)
    store = model_source(settings)
    loaded, daemon = set(), "not running"
    try:
        reply = httpx.get(f"http://{settings.host}:{settings.port}/v1/models", timeout=2)
        loaded = {m["id"] for m in reply.json()["data"] if m.get("loaded")}
        daemon = f"running on {settings.host}:{settings.port}"
    except (httpx.HTTPError, ValueError, KeyError):
        pass
    table = Table(title=f"{settings.backend} models (daemon {daemon})")
    table.add_column("name", no_wrap=True)
    for column in ("size", "context", "quantization", "capabilities", "loaded"):
        table.add_column(column)
    table.add_column("path", overflow="fold")
    for facts in read_all_facts(store.list()):
        what = f"[red]error: {escape(facts.error)}[/red]" if facts.error else ", ".join(facts.capabilities)
        table.add_row(facts.name, f"{facts.size / 1e6:,.0f} MB", f"{facts.context_length or ''}",
                      facts.quantization or "", what, "yes" if facts.name in loaded else "", str(facts.path or ""))
    Console().print(table)


keys_app = typer.Typer(help="API keys: with any, every request but /health must carry one (docs/security.md).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(name: Annotated[str, typer.Argument(help="What the key is for, e.g. laptop or ci.")],
                operator: Annotated[bool, typer.Option(
                    "--operator", help="An operator's key: it reaches every key's sessions and stored "
                    "responses (other keys reach only their own).")] = False,
                data_dir: DataDir = None) -> None:
    """Make a new key and print it, the only time it is shown (only its sha256 is kept). A running daemon
    reads keys at start: restart it."""
    from qwend.access import create_key

    try:
        print(create_key(_settings(data_dir=data_dir).api_keys_file, name, operator=operator))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """The names of the keys (the keys themselves are not kept), and which are operators'."""
    from qwend.access import read_key_file

    for key in read_key_file(_settings(data_dir=data_dir).api_keys_file):
        print(f"{key.name}\tsha256:{key.sha256[:12]}…" + ("\toperator" if key.operator else ""))


@keys_app.command("remove")
def keys_remove(name: Annotated[str, typer.Argument(help="The key's name.")], data_dir: DataDir = None) -> None:
    """Delete a key (takes effect when the daemon restarts)."""
    from qwend.access import remove_key

    try:
        remove_key(_settings(data_dir=data_dir).api_keys_file, name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    print(f"removed {name}")


bench_app = typer.Typer(help="Benchmarks that print figures measured side by side in one run.")
app.add_typer(bench_app, name="bench")


@bench_app.command("stream")
def bench_stream(
    model: Annotated[Optional[str], typer.Option(help="Model to measure (default: the configured one).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens generated per run.")] = 128,
    rounds: Annotated[int, typer.Option(help="Runs per path; paths alternate each round.")] = 3,
    backend: BackendOption = None,
    upstream_url: Annotated[Optional[str], typer.Option(
        "--upstream-url", help="With --backend upstream: the server to measure (default: start llama-cpp-python's "
        "server on the model).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Time to first token and decode tokens/s: the streaming HTTP API vs its engine called directly."""
    from qwend.cli.bench import run_stream_bench

    settings = _settings(model=model, data_dir=data_dir, backend=backend, upstream_url=upstream_url)
    run_stream_bench(settings, max_tokens=max_tokens, rounds=rounds, console=Console())


@bench_app.command("peers")
def bench_peers(
    model: Annotated[Optional[str], typer.Option(help="Model to measure (default: the configured one).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads, the same for both servers.")] = os.cpu_count() or 1,
    data_dir: DataDir = None,
) -> None:
    """qwend vs llama.cpp's own llama-server (built once, cached), plain and with n-gram speculation: decode,
    8 streams, prefill, cached conversations, a code edit, a short request behind a long prompt."""
    from qwend.cli.bench_peers import run_peers_bench

    run_peers_bench(_settings(model=model, data_dir=data_dir), threads=threads, console=Console())


@bench_app.command("drafts")
def bench_drafts(
    model: Annotated[str, typer.Option(help="Model to speed up.")] = "qwen2.5-coder:1.5b",
    draft: Annotated[Optional[str], typer.Option(help="Its draft model (default: the catalog's pairing).")] = None,
    threads: Annotated[int, typer.Option(help="CPU threads, the same for every server.")] = os.cpu_count() or 1,
    data_dir: DataDir = None,
) -> None:
    """Speculation on a model and its draft model, qwend vs llama-server: each without speculation, with n-gram
    drafts and with the draft model, on a code edit and an open-ended answer."""
    from qwend.cli.bench_drafts import run_drafts_bench

    run_drafts_bench(_settings(model=model, data_dir=data_dir), draft=draft, threads=threads, console=Console())


@bench_app.command("concurrent")
def bench_concurrent(
    model: Annotated[Optional[str], typer.Option(help="Model to measure (default: the configured one).")] = None,
    streams: Annotated[list[int], typer.Option(help="Clients at once (repeatable).")] = [1, 2, 4, 8],  # noqa: B006
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 64,
    baseline: Annotated[bool, typer.Option(help="Also measure llama-cpp-python's own server.")] = True,
    data_dir: DataDir = None,
) -> None:
    """Several clients at once: aggregate tokens/s and time to first token, qwend vs llama_cpp.server."""
    from qwend.cli.bench_serving import run_concurrency_bench

    run_concurrency_bench(_settings(model=model, data_dir=data_dir), streams=sorted(streams),
                          max_tokens=max_tokens, baseline=baseline, console=Console())


@bench_app.command("sessions")
def bench_sessions(
    model: Annotated[Optional[str], typer.Option(help="Model to measure (default: the configured one).")] = None,
    sessions: Annotated[int, typer.Option(help="Conversations, taking turns.")] = 4,
    turns: Annotated[int, typer.Option(help="Turns per conversation.")] = 8,
    history_words: Annotated[int, typer.Option(help="Words in each conversation's first message.")] = 1000,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 16,
    baseline: Annotated[bool, typer.Option(help="Also measure llama-cpp-python's own server.")] = True,
    context_length: Annotated[Optional[int], typer.Option(help="qwend's context window (smaller: conversations "
                                                          "go through the saved KV tiers).")] = None,
    kv_ram_mb: Annotated[Optional[int], typer.Option(help="RAM tier for saved KV states (smaller: more go to "
                                                     "disk).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Interleaved conversations with long histories: time to first token per turn, with and without the cache."""
    from qwend.cli.bench_serving import run_sessions_bench

    settings = _settings(model=model, data_dir=data_dir, context_length=context_length, kv_ram_mb=kv_ram_mb)
    run_sessions_bench(settings, sessions=sessions, turns=turns, history_words=history_words, max_tokens=max_tokens,
                       baseline=baseline, console=Console())


@bench_app.command("restart")
def bench_restart(
    model: Annotated[Optional[str], typer.Option(help="Model to measure (default: the configured one).")] = None,
    sessions: Annotated[int, typer.Option(help="Conversations.")] = 4,
    history_words: Annotated[int, typer.Option(help="Words in each conversation's first message.")] = 1000,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 16,
    data_dir: DataDir = None,
) -> None:
    """A conversation's next turn after the daemon restarted (KV state from disk) vs reading it all again."""
    from qwend.cli.bench_serving import run_restart_bench

    run_restart_bench(_settings(model=model, data_dir=data_dir), sessions=sessions, history_words=history_words,
                      max_tokens=max_tokens, console=Console())


@bench_app.command("scale")
def bench_scale(
    model: Annotated[Optional[str], typer.Option(help="Model to serve (default: the configured one).")] = None,
    sessions: Annotated[int, typer.Option(help="Conversations at once.")] = 2,
    turns: Annotated[int, typer.Option(help="Turns per conversation.")] = 3,
    history_words: Annotated[int, typer.Option(help="Words in each conversation's first message.")] = 200,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 16,
    data_dir: DataDir = None,
) -> None:
    """Sessions through one and two daemons sharing PostgreSQL, in front of one upstream and on their own models."""
    from qwend.cli.bench_scale import run_scale_bench

    run_scale_bench(_settings(model=model, data_dir=data_dir), sessions=sessions, turns=turns,
                    history_words=history_words, max_tokens=max_tokens, console=Console())


eval_app = typer.Typer(help="Accuracy evaluations that print tables.")
app.add_typer(eval_app, name="eval")


@eval_app.command("tools")
def eval_tools(
    model: Annotated[Optional[str], typer.Option(help="Model to evaluate (default: the configured one).")] = None,
    limit: Annotated[Optional[int], typer.Option(help="At most this many cases per category.")] = None,
    baseline: Annotated[bool, typer.Option(help="Also run llama-cpp-python's own server.")] = True,
    category: Annotated[Optional[list[str]], typer.Option(help="Only these categories (repeatable).")] = None,
    temperature: Annotated[str, typer.Option(
        help="Sampling temperature: 0 is greedy; 'default' sends none (the server's default, 0.8 in qwend).")] = "0",
    repeats: Annotated[int, typer.Option(min=1, help="Run each case this many times (with a temperature > 0).")] = 1,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write the figures to this JSON file.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Tool-calling accuracy per category: qwend with and without grammar, and llama_cpp.server."""
    from qwend.cli.evals.tools import CATEGORIES, run_tools_eval

    unknown = set(category or ()) - set(CATEGORIES)
    if unknown:
        raise typer.BadParameter(f"unknown categories {sorted(unknown)}; known: {', '.join(CATEGORIES)}")
    if temperature.strip().lower() == "default":
        temp: Optional[float] = None
    else:
        try:
            temp = float(temperature)
        except ValueError:
            raise typer.BadParameter(f"--temperature takes a number or 'default', not {temperature!r}") from None
        if temp < 0:
            raise typer.BadParameter("--temperature must not be negative")
    if repeats > 1 and temp == 0:
        raise typer.BadParameter("--repeats needs a temperature above 0 (greedy answers repeat themselves)")
    run_tools_eval(_settings(model=model, data_dir=data_dir), limit=limit, baseline=baseline, console=Console(),
                   categories=tuple(category or CATEGORIES), temperature=temp, repeats=repeats, json_path=json_path)


@app.command()
def chat(
    url: Annotated[Optional[str], typer.Option(
        help="The daemon's base URL (default http://HOST:PORT from the settings, 127.0.0.1:5997).")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="QWEND_API_KEY", help="A key for a daemon that requires one (sent as Bearer).")] = None,
    in_process: Annotated[bool, typer.Option(
        "--in-process", help="Start a daemon in this process (also done when nothing answers at a loopback URL).")
    ] = False,
    profile: Annotated[str, typer.Option(help="The profile of new sessions.")] = "general",
    model: Annotated[Optional[str], typer.Option(help="The model for turns (default: the profile's).")] = None,
    session: Annotated[Optional[str], typer.Option(help="Resume this session (an id or its start).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Chat in the terminal through a daemon's session API: streamed answers, tool calls, slash commands."""
    from qwend.cli.terminal_chat import run_chat

    settings = _settings(data_dir=data_dir, model=model)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host

    def pull_start_model() -> None:
        if settings.pull_missing and settings.backend != "upstream":
            try:
                pull_with_progress(model_source(settings), settings.model)
            except QwendError as exc:
                raise fail(exc) from None

    status = run_chat(Console(highlight=False), url=url or f"http://{host}:{settings.port}", api_key=api_key,
                      in_process=in_process, settings=settings, profile=profile, model=model, session_id=session,
                      before_start=pull_start_model)
    raise typer.Exit(status)


def main() -> None:
    app()
