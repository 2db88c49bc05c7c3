"""`qwend chat`: a terminal client of a daemon's native session API (docs/terminal-chat.md), talking to a running
daemon over HTTP, or to one it starts in this process and stops on exit."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from qwend.cli.terminal_view import TurnView, short, show_history
from qwend.settings import Settings

PROMPT = "you> "
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HELP = """\
/session [ID]    list sessions, or switch to one (the first characters of its id are enough)
/profile [NAME]  list profiles, or pick one: your next message starts a new session with it
/model [NAME]    list models, or pick one for the next turns (/model default: the session's own)
/new             your next message starts a new session
/history         the current session's messages
/help            this list
/quit            leave (so do Ctrl-D and Ctrl-C at the prompt)
Ctrl-C while an answer streams stops it (the daemon cancels the turn) and returns to the prompt."""


class DaemonError(Exception):
    """The daemon refused a request (an HTTP error status), or could not be reached."""


def _check(reply: httpx.Response) -> None:
    if reply.is_success:
        return
    try:
        body = reply.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # the OpenAI shape (/v1/models)
        detail = body["error"].get("message")
    detail = str(detail or reply.text[:300] or reply.reason_phrase)
    if reply.status_code == 401:
        detail += " (pass --api-key or set QWEND_API_KEY)"
    raise DaemonError(f"{reply.status_code}: {detail}")


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, dict]]:
    """Named SSE events: `event:` and JSON `data:` lines, ended by a blank line; comments (pings) are skipped."""
    name, data = None, []
    for line in lines:
        if not line:
            if name and data:
                yield name, json.loads("\n".join(data))
            name, data = None, []
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
    if name and data:
        yield name, json.loads("\n".join(data))


class DaemonClient:
    """The daemon's native session API over HTTP (docs/sessions.md, docs/streaming.md)."""

    def __init__(self, base_url: str, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def close(self) -> None:
        self.http.close()

    def reachable(self) -> bool:
        """Whether anything answers at the URL (`/health` needs no key)."""
        try:
            self.http.get("/health", timeout=5)
        except httpx.TransportError:
            return False
        return True

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DaemonError(f"cannot reach the daemon at {self.base_url}: {exc}") from None
        _check(reply)
        return reply.json()

    def profiles(self) -> list[dict]:
        return self._call("GET", "/v1/profiles")["profiles"]

    def models(self) -> list[dict]:
        return self._call("GET", "/v1/models")["data"]

    def sessions(self) -> list[dict]:
        return self._call("GET", "/v1/sessions")["sessions"]

    def session(self, session_id: str) -> dict:
        return self._call("GET", f"/v1/sessions/{session_id}")

    def create_session(self, profile: str, model: str | None = None, title: str | None = None) -> dict:
        body = {"profile_name": profile, "model": model, "title": title}
        return self._call("POST", "/v1/sessions", json={k: v for k, v in body.items() if v is not None})

    @contextmanager
    def turn(self, session_id: str, message: str, model: str | None = None) -> Iterator[Iterator[tuple[str, dict]]]:
        """One streamed turn's events. Leaving the block before `done` closes the stream: the daemon cancels
        the turn, and stores nothing of it."""
        body = {"message": message, "stream": True, **({"model": model} if model else {})}
        try:
            with self.http.stream("POST", f"/v1/sessions/{session_id}/chat", json=body,
                                  timeout=httpx.Timeout(30, read=None)) as reply:  # a turn may think for long
                if not reply.is_success:
                    reply.read()
                    _check(reply)
                yield sse_events(reply.iter_lines())
        except httpx.HTTPError as exc:
            raise DaemonError(f"the stream from {self.base_url} broke: {exc}") from None


class ChatRepl:
    """The prompt loop: a line starting with `/` is a command, any other line a turn in the current session
    (created with the first message, titled by it)."""

    def __init__(self, client: DaemonClient, console: Console, *, profile: str = "general",
                 model: str | None = None, session_id: str | None = None,
                 read: Callable[[], str] | None = None) -> None:
        self.client, self.console = client, console
        self.profile, self.model, self.session_id = profile, model, session_id
        self.read = read or (lambda: input(PROMPT))
        self.commands: dict[str, Callable[[str], bool | None]] = {
            "session": self.session_command, "sessions": self.session_command, "profile": self.profile_command,
            "profiles": self.profile_command, "model": self.model_command, "models": self.model_command,
            "new": self.new_command, "history": self.history_command, "help": self.help_command,
            "quit": self.quit_command, "exit": self.quit_command,
        }

    def run(self) -> None:
        """Read and act on lines until /quit, Ctrl-D or Ctrl-C at the prompt."""
        while True:
            try:
                line = self.read()
            except (EOFError, KeyboardInterrupt):
                self.console.print()
                return
            if not self.handle(line):
                return

    def handle(self, line: str) -> bool:
        """Act on one line; False when it asks to leave."""
        line = line.strip()
        try:
            if line.startswith("/"):
                name, _, argument = line[1:].partition(" ")
                command = self.commands.get(name.lower())
                if command is None:
                    self.say(f"unknown command /{name}; /help lists them", "yellow")
                    return True
                return command(argument.strip()) is not False
            if line:
                self.ask(line)
        except DaemonError as exc:
            self.say(f"error: {exc}", "red")
        except KeyboardInterrupt:  # Ctrl-C during a command: back to the prompt
            self.say("[interrupted]", "yellow")
        return True

    def say(self, text: str, style: str = "") -> None:
        self.console.print(Text(text, style=style))

    def ask(self, message: str) -> None:
        """One turn, drawn as its events arrive; Ctrl-C stops it (closing the stream cancels it)."""
        if self.session_id is None:
            session = self.client.create_session(self.profile, self.model, title=short(message, 60))
            self.session_id = session["session_id"]
        view = TurnView(self.console)
        try:
            with self.client.turn(self.session_id, message, self.model) as events:
                for name, data in events:
                    view.show(name, data)
            if not view.finished:
                self.say("the stream ended before the turn did", "red")
        except KeyboardInterrupt:
            view.stopped()
        finally:
            view.close()

    def session_command(self, argument: str) -> None:
        sessions = self.client.sessions()
        if not argument:
            table = Table("", "id", "profile", "model", "title", "last used", box=None, header_style="bold")
            for s in sessions:
                used = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["updated_at"]))
                table.add_row("*" if s["session_id"] == self.session_id else "", s["session_id"][:12],
                              s["profile_name"], s["model"] or "", s["title"] or "", used)
            self.console.print(table if sessions else Text("(no sessions yet)", style="dim"))
            return
        found = [s for s in sessions if s["session_id"].startswith(argument)]
        if len(found) != 1:
            self.say(f"{'no' if not found else 'more than one'} session starts with {argument!r}", "red")
            return
        session = self.client.session(found[0]["session_id"])
        self.session_id, self.profile = session["session_id"], session["profile_name"]
        self.say(f"session {self.session_id[:12]} (profile {self.profile}, {len(session['messages'])} messages); "
                 "/history shows them", "green")

    def profile_command(self, argument: str) -> None:
        profiles = self.client.profiles()
        if not argument:
            table = Table("", "profile", "tools", "description", box=None, header_style="bold")
            for p in profiles:
                table.add_row("*" if p["name"] == self.profile else "", p["name"], ", ".join(p["tools"]),
                              p["description"] or "")
            self.console.print(table)
            return
        if argument not in {p["name"] for p in profiles}:
            self.say(f"no profile {argument!r}; known: {', '.join(p['name'] for p in profiles)}", "red")
            return
        self.profile, self.session_id = argument, None
        self.say(f"profile {argument}: your next message starts a new session", "green")

    def model_command(self, argument: str) -> None:
        models = self.client.models()
        if not argument:
            table = Table("", "model", "loaded", box=None, header_style="bold")
            for m in models:
                table.add_row("*" if m["id"] == self.model else "", m["id"], "yes" if m.get("loaded") else "")
            self.console.print(table)
            self.say(f"turns use {self.model or 'the session’s model (or the profile’s, or the daemon’s)'}", "dim")
            return
        if argument == "default":
            self.model = None
            self.say("turns use the session's own model", "green")
            return
        if argument not in {m["id"] for m in models}:
            self.say(f"no model {argument!r}; /model lists them", "red")
            return
        self.model = argument
        self.say(f"model {argument} for the next turns (loaded on first use)", "green")

    def new_command(self, argument: str) -> None:
        self.session_id = None
        self.say(f"your next message starts a new session (profile {self.profile})", "green")

    def history_command(self, argument: str) -> None:
        if self.session_id is None:
            self.say("(no session yet: it starts with your first message)", "dim")
            return
        show_history(self.console, self.client.session(self.session_id))

    def help_command(self, argument: str) -> None:
        self.console.print(Text(HELP))

    def quit_command(self, argument: str) -> bool:
        return False


def in_process_daemon(settings: Settings) -> AbstractContextManager[str]:
    """The daemon's app served in a background thread on a free loopback port; yields its base URL, and stops
    it (unloading its models) on exit. Its start model loads while it already answers."""
    from qwend.app import create_app
    from qwend.cli.local_server import serve_app_in_thread

    return serve_app_in_thread(create_app(settings.model_copy(update={"host": "127.0.0.1"})))


def run_chat(console: Console, *, url: str, api_key: str | None, in_process: bool, settings: Settings,
             profile: str, model: str | None, session_id: str | None,
             before_start: Callable[[], None] = lambda: None) -> int:
    """`qwend chat`: connect (or start a daemon in this process), then run the prompt loop; the exit status."""
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    with ExitStack() as stack:
        if not in_process:
            probe = DaemonClient(url)
            answers = probe.reachable()
            probe.close()
            if not answers:
                if urlsplit(url).hostname not in LOOPBACK:
                    console.print(Text(f"error: nothing answers at {url}", style="red"))
                    return 1
                console.print(Text(f"no daemon answers at {url}: starting one in this process", style="yellow"))
                in_process = True
        if in_process:
            before_start()
            url = stack.enter_context(in_process_daemon(settings))
        client = DaemonClient(url, api_key)
        stack.callback(client.close)
        repl = ChatRepl(client, console, profile=profile, model=model)
        try:  # fail early on a wrong key or name
            if profile not in {p["name"] for p in client.profiles()}:
                raise DaemonError(f"no profile {profile!r}; /profile lists them")
            if session_id:
                repl.session_command(session_id)
        except DaemonError as exc:
            console.print(Text(f"error: {exc}", style="red"))
            return 1
        where = "a daemon in this process" if in_process else url
        console.print(Text(f"qwend chat with {where}, profile {repl.profile}. /help lists the commands; Ctrl-C "
                           "stops an answer, Ctrl-D leaves.", style="dim"))
        repl.run()
    return 0
