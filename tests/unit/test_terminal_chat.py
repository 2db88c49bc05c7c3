"""`qwend chat`: its SSE reading, how it draws events, and its slash commands, against the daemon's app served
on loopback over a scripted backend (the real model in a terminal: tests/real/test_terminal_chat.py)."""

from __future__ import annotations

import io
import json
import re
import time
from contextlib import contextmanager

import pytest
from rich.console import Console
from typer.testing import CliRunner

from qwend.cli import terminal_chat
from qwend.cli.local_server import free_port, serve_in_thread
from qwend.cli.main import app
from qwend.cli.terminal_chat import ChatRepl, DaemonClient, in_process_daemon, run_chat, sse_events
from qwend.cli.terminal_view import TurnView
from qwend.engine import manager
from tests.conftest import fake_runtime
from tests.fakes import FakeBackend


def call(name: str, **arguments) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


def console(terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=150, force_terminal=terminal, color_system=None, highlight=False), out


@contextmanager
def daemon(tmp_path, *replies, delay=0.0, **settings):
    """The daemon's app on loopback over a FakeBackend; yields (base URL, backend, runtime)."""
    backend = FakeBackend(replies=list(replies) or ["Hello there, friend."], delay=delay, context_length=8192)
    runtime = fake_runtime(tmp_path, backend, **settings)
    with serve_in_thread(runtime) as url:
        yield url, backend, runtime


def without_spinners(text: str) -> str:
    """Terminal output less its control sequences and the (transient) spinner lines."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\r", "", text)
    return "".join(line for line in text.splitlines(keepends=True) if not line.startswith("⠋"))


def repl_for(url: str, lines: list[str], **kwargs) -> tuple[ChatRepl, io.StringIO]:
    out_console, out = console()
    feed = iter(lines)

    def read() -> str:
        try:
            line = next(feed)
        except StopIteration:
            raise EOFError from None
        out_console.print(f"you> {line}")
        return line

    return ChatRepl(DaemonClient(url), out_console, read=read, **kwargs), out


def test_sse_events_are_read_by_name_and_pings_skipped():
    lines = ["event: queued", 'data: {"position": 2}', "", ": ping - 2026-01-01", "", "event: token",
             'data: {"text": "a b"}', "", "event: done", 'data: {"finish_reason": "stop"}']
    assert list(sse_events(lines)) == [("queued", {"position": 2}), ("token", {"text": "a b"}),
                                       ("done", {"finish_reason": "stop"})]


def test_a_turn_is_drawn_as_its_events_arrive():
    out_console, out = console(terminal=True)
    view = TurnView(out_console)
    events = [("queued", {"position": 0, "loading": "other.gguf"}), ("started", {"model": "m", "prompt_tokens": 5}),
              ("reasoning", {"text": "Let me think."}), ("token", {"text": "I will"}), ("token", {"text": " compute."}),
              ("tool_call", {"id": "c1", "name": "python_repl", "arguments": '{"code": "print(6 * 7)"}'}),
              ("tool_result", {"id": "c1", "name": "python_repl", "success": True, "result": "42\n", "error": None}),
              ("tool_call", {"id": "c2", "name": "calculator", "arguments": '{"expression": "' + "9" * 400 + '"}'}),
              ("tool_result", {"id": "c2", "name": "calculator", "success": False, "result": None, "error": "boom"}),
              ("token", {"text": "It is [b]42[/b]."}), ("mystery", {}),
              ("usage", {"completion_tokens": 12, "steps": 3}), ("done", {"finish_reason": "length", "response": "x"})]
    for name, data in events:
        view.show(name, data)
    assert "⠋ loading other.gguf…" in out.getvalue()  # the spinner while the model loads
    text = without_spinners(out.getvalue())
    assert "Let me think.\nI will compute.\ntool python_repl {\"code\": \"print(6 * 7)\"}\n  -> 42\n" in text
    assert "tool calculator" in text and "9" * 400 not in text and "…" in text  # long arguments are cut
    assert "  -> error: boom\nIt is [b]42[/b].\n" in text  # answer text is not read as markup
    assert "[cut off at max_tokens; 12 tokens, 3 steps," in text and view.finished


def test_an_answer_that_arrives_only_whole_is_shown_and_errors_in_red():
    out_console, out = console()
    view = TurnView(out_console)
    view.show("done", {"finish_reason": "stop", "response": "Only whole."})
    view.show("error", {"detail": "the model crashed", "code": "backend_error"})
    assert out.getvalue() == "Only whole.\nerror: the model crashed\n"


def test_commands_and_turns_against_the_daemon(tmp_path):
    with daemon(tmp_path, call("calculator", expression="2**10"), "2 to the 10th is 1024.") as (url, _, _):
        repl, out = repl_for(url, ["/help", "/history", "/profile", "/profile nope", "/profile code_runner",
                                   "What is 2**10?", "/history", "/model", "/model nope", "/model fake.gguf",
                                   "/bogus", "/session", "/new", "/quit", "never read"])
        repl.run()
    text = out.getvalue()
    assert "/session [ID]" in text and "(no session yet" in text
    assert "code_runner" in text and "python_repl, calculator" in text  # the profile list
    assert "no profile 'nope'" in text and "profile code_runner: your next message starts a new session" in text
    assert 'tool calculator {"expression": "2**10"}\n  -> 1024\n2 to the 10th is 1024.\n' in text
    history = text.split("you> /history")[2]
    assert history.startswith("\nyou> What is 2**10?\ntool calculator")
    assert "  -> calculator: 1024" in history and "2 to the 10th is 1024." in history
    assert "fake.gguf" in text and "no model 'nope'" in text and "model fake.gguf for the next turns" in text
    assert "unknown command /bogus" in text
    listed = text.split("you> /session")[1].split("you> /new")[0]
    assert re.search(r"\* +[0-9a-f]{12} +code_runner +What is 2\*\*10\?", listed), listed
    assert "never read" not in text and repl.session_id is None  # /new, then /quit left
    assert repl.profile == "code_runner" and repl.model == "fake.gguf"


def test_switching_sessions_by_the_start_of_the_id(tmp_path):
    with daemon(tmp_path, "First answer.") as (url, _, _):
        first, _ = repl_for(url, ["hi"])
        first.run()
        repl, out = repl_for(url, [f"/session {first.session_id[:6]}", "/history", "/session zzz"])
        repl.run()
    text = out.getvalue()
    assert repl.session_id == first.session_id and "profile general, 2 messages" in text
    assert "you> hi\nFirst answer." in text and "no session starts with 'zzz'" in text


class InterruptingFile(io.StringIO):
    """A terminal whose user presses Ctrl-C once `trigger` has been shown."""

    def __init__(self, trigger: str) -> None:
        super().__init__()
        self.trigger, self.fired = trigger, False

    def write(self, text: str) -> int:
        written = super().write(text)
        if not self.fired and self.trigger in self.getvalue():
            self.fired = True
            raise KeyboardInterrupt
        return written


def test_ctrl_c_stops_the_answer_and_the_next_question_is_answered(tmp_path):
    long = " ".join(f"word{i}" for i in range(200))
    with daemon(tmp_path, long, "Short answer.", delay=0.02) as (url, backend, runtime):
        out = InterruptingFile("word3")
        lines = iter(["tell me a long story", "and now?", "/history"])
        repl = ChatRepl(DaemonClient(url), Console(file=out, width=150, color_system=None),
                        read=lambda: next(lines))
        with pytest.raises(StopIteration):
            repl.run()
        deadline = time.monotonic() + 5
        while backend.stopped_early == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert backend.stopped_early == 1  # closing the stream cancelled the generation
    text = out.getvalue()
    assert "[stopped: kept as far as it came]" in text and "word150" not in text
    answer, history = text.split("[stopped: kept as far as it came]\n")[1].split("Short answer.\n", 1)
    assert history.startswith("[")  # the turn's footer, then the history: the stopped turn as far as it came
    stopped_turn, rest = history.split("]\n", 1)[1].split("[stopped]\n")
    assert stopped_turn.startswith("you> tell me a long story\nword0 word1") and "word150" not in stopped_turn
    assert rest == "you> and now?\nShort answer.\n"


def test_a_model_that_loads_shows_a_spinner(tmp_path, monkeypatch):
    loader = lambda model, settings: FakeBackend("Loaded.", context_length=8192)  # noqa: E731
    monkeypatch.setattr(manager, "backend_loader", lambda name: loader)
    with daemon(tmp_path) as (url, _, runtime):
        (runtime.settings.models_dir / "other.gguf").write_bytes(b"GGUF" + bytes(100))
        out_console, out = console(terminal=True)
        lines = iter(["/model other.gguf", "hi"])
        ChatRepl(DaemonClient(url), out_console, read=lambda: next(lines, "/quit")).run()
    assert "loading other.gguf…" in out.getvalue() and "Loaded." in out.getvalue()


def test_a_keyed_daemon_needs_the_key(tmp_path):
    with daemon(tmp_path, "Keyed answer.", api_keys=["s3cret"]) as (url, _, runtime):
        out_console, out = console()
        status = run_chat(out_console, url=url, api_key="wrong", in_process=False, settings=runtime.settings,
                          profile="general", model=None, session_id=None)
        assert status == 1 and "401" in out.getvalue() and "--api-key or set QWEND_API_KEY" in out.getvalue()
        result = CliRunner().invoke(app, ["chat", "--url", url], input="hello\n/quit\n",
                                    env={"QWEND_API_KEY": "s3cret"})
    assert result.exit_code == 0, result.output
    assert "Keyed answer." in result.output


def test_with_nothing_at_a_loopback_url_it_starts_a_daemon_in_process(tmp_path, monkeypatch):
    with daemon(tmp_path, "In-process answer.") as (url, _, runtime):
        started = []

        @contextmanager
        def fake_in_process(settings):
            started.append(settings)
            yield url

        monkeypatch.setattr(terminal_chat, "in_process_daemon", fake_in_process)
        out_console, out = console()
        lines = iter(["hi", "/quit"])
        monkeypatch.setattr("builtins.input", lambda prompt: next(lines))
        status = run_chat(out_console, url=f"http://127.0.0.1:{free_port()}", api_key=None, in_process=False,
                          settings=runtime.settings, profile="general", model=None, session_id=None)
    assert status == 0 and started
    assert "starting one in this process" in out.getvalue() and "In-process answer." in out.getvalue()


def test_the_in_process_daemon_answers_and_stops(tmp_path):
    settings = fake_runtime(tmp_path, FakeBackend()).settings.model_copy(update={"model": "missing.gguf"})
    with in_process_daemon(settings) as url:
        client = DaemonClient(url)
        assert "code_runner" in {p["name"] for p in client.profiles()}
        client.close()
    assert not DaemonClient(url).reachable()
