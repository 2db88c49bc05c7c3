"""`qwend chat` in a real terminal (tmux) against a real `qwend serve` with the default model: a tool call and
its answer, text that grows while it streams, Ctrl-C stopping an answer (kept, marked stopped), and /history."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.conftest import ARTIFACTS, Daemon

PRODUCT = "121932631112635269"  # 123456789 * 987654321
FOOTER = re.compile(r"^\[(?:cut off at max_tokens; )?\d+ tokens?, \d+ steps?, [\d.]+ s\]$", re.M)


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    daemon = Daemon(tmp_path_factory.mktemp("terminal-chat")).start()
    yield daemon
    daemon.stop()


class Terminal:
    """A tmux session of its own (its own server socket, so no user configuration or other sessions)."""

    def __init__(self, command: str) -> None:
        self.socket = f"qwend-test-{os.getpid()}-{time.monotonic_ns()}"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "chat", "-x", "160", "-y", "50", command)
        self.socket_path = self.tmux("display-message", "-p", "#{socket_path}").strip()

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-u", "-L", self.socket, *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "chat", *keys)

    def type(self, line: str) -> None:
        self.send("-l", line)  # literally: "/..." and "*" are not key names
        self.send("Enter")

    def text(self) -> str:
        """The whole pane, scrollback included, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-3000", "-t", "chat")

    def wait(self, check: Callable[[str], object], timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text()
            if check(text):
                return text
            time.sleep(0.5)
        raise AssertionError(f"no {what} within {timeout} s; the pane:\n{self.text()}")

    def enter(self, line: str, done: Callable[[str], object], timeout: float, what: str) -> str:
        """Type `line`, then wait until what follows its echo satisfies `done`; returns that part of the pane."""
        echo = f"you> {line}"
        seen = self.text().count(echo)
        self.type(line)
        text = self.wait(lambda t: t.count(echo) > seen and done(t.rsplit(echo, 1)[1]), timeout, what)
        return text.rsplit(echo, 1)[1]

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        if os.path.exists(self.socket_path):  # tmux leaves its socket file behind
            os.unlink(self.socket_path)


def prompt_is_back(part: str) -> bool:
    return part.rstrip().endswith("you>")


def turn_done(part: str) -> bool:
    return bool(FOOTER.search(part)) and prompt_is_back(part)


def test_chat_in_a_terminal(server):
    ARTIFACTS.mkdir(exist_ok=True)
    # without COLUMNS/LINES that the test process may carry: rich would take them over the pane's real size
    terminal = Terminal(f"cd {ARTIFACTS.parent} && env -u COLUMNS -u LINES {sys.executable} -m qwend chat "
                        f"--url {server.url}")
    try:
        terminal.wait(lambda t: "qwend chat with" in t and prompt_is_back(t), 60, "greeting")
        part = terminal.enter("/profile code_runner", prompt_is_back, 30, "profile")
        assert "profile code_runner: your next message starts a new session" in part

        # the 0.5B model sometimes runs the bare expression without print() (no output) and then guesses; it is
        # asked again in a new session, the second time to print
        questions = ["Use python to compute 123456789 * 987654321", "Use python to print 123456789 * 987654321",
                     "Use python to print 123456789 * 987654321"]
        for question in questions:
            turn = terminal.enter(question, turn_done, 300, "tool answer")
            if PRODUCT in turn:
                break
            print(f"no {PRODUCT} after {question!r}:{turn.rstrip()}")
            terminal.enter("/new", prompt_is_back, 30, "/new")
        tool = re.search(r"^tool (python_repl|calculator) \{.*\}$", turn, re.M)
        assert tool, turn
        assert re.search(rf"^  -> .*{PRODUCT}", turn, re.M), turn  # the tool's result
        answer = re.split(r"^  -> .*$", turn, flags=re.M)[-1]  # after the last result line
        answer = answer[: FOOTER.search(answer).start()].strip()
        assert answer, turn
        print(f"asked {question!r}; tool: {tool.group(1)}; answer: {answer!r}")

        # a long answer in a session of the general profile: it streams, and Ctrl-C stops it
        part = terminal.enter("/profile general", prompt_is_back, 30, "profile")
        assert "profile general: your next message starts a new session" in part
        long_question = ("Without using any tools, explain in detail how Python's list comprehensions, generators and "
                 "decorators work, with an example of each.")
        for _ in range(3):  # sampled at the profile's temperature: now and then a short answer, so asked again
            first = terminal.enter(long_question, lambda p: len(p.strip()) > 80 or turn_done(p), 300, "streamed text")
            time.sleep(3)
            later = after(terminal.text(), f"you> {long_question}")
            if not FOOTER.search(later):
                break
        assert not FOOTER.search(later), f"the answer ended before Ctrl-C; ask for a longer one:{later}"
        assert len(later.strip()) > len(first.strip()), "the text did not grow while it streamed"
        terminal.send("C-c")
        terminal.wait(lambda t: "[stopped: kept as far as it came]" in after(t, f"you> {long_question}")
                      and prompt_is_back(t), 60, "prompt after Ctrl-C")

        follow_up = "What is the capital of France? Answer in one word."
        reply = terminal.enter(follow_up, turn_done, 300, "answer")
        assert reply[: FOOTER.search(reply).start()].strip(), reply
        history = terminal.enter("/history", prompt_is_back, 30, "history")
        # the stopped turn is kept as far as it came, marked, then the next one
        assert history.lstrip().startswith(f"you> {long_question}\n"), history
        assert history.index("[stopped]") < history.index(f"you> {follow_up}\n"), history

        # back to the first session: /session lists both, /session ID switches, /history shows the tool turn
        listing = terminal.enter("/session", prompt_is_back, 30, "session list")
        first_session = re.search(r"^\s+([0-9a-f]{12})\s+code_runner\s", listing, re.M)
        assert first_session and re.search(r"^ \*\s+[0-9a-f]{12}\s+general\s", listing, re.M), listing
        part = terminal.enter(f"/session {first_session.group(1)}", prompt_is_back, 30, "switch")
        assert f"session {first_session.group(1)} (profile code_runner, " in part, part
        history = terminal.enter("/history", prompt_is_back, 30, "history")
        assert f"you> {question}" in history and follow_up not in history
        assert re.search(r"^tool (python_repl|calculator) ", history, re.M) and PRODUCT in history
        (ARTIFACTS / "terminal-chat.txt").write_text(terminal.text())

        terminal.type("/quit")
    finally:
        terminal.close()


def after(text: str, marker: str) -> str:
    """What the pane shows after the last `marker`."""
    return text.rsplit(marker, 1)[1] if marker in text else ""
