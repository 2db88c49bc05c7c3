"""Drawing `qwend chat` on a terminal: one turn's SSE events as they arrive, and a session's stored history."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.status import Status
from rich.text import Text

TOOL_STYLE = "cyan"
RESULT_WIDTH = 160  # characters of a tool call's arguments or result shown on its line


def short(value: Any, width: int = RESULT_WIDTH) -> str:
    """`value` on one line, cut to `width` characters."""
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class TurnView:
    """Draws one turn's events (docs/streaming.md) on `console` as they arrive: a spinner while the turn is
    queued or its model loads, reasoning dimmed, answer text as it streams, tool calls and their results."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.status: Status | None = None
        self.mode: str | None = None  # "reasoning" or "token" while a line of streamed text is open
        self.streamed = ""  # the answer text shown so far
        self.usage: dict = {}
        self.started = time.monotonic()
        self.finished = False

    def show(self, name: str, data: dict) -> None:
        """Draw one event; unknown event names are ignored (a newer daemon may send more)."""
        handler = getattr(self, f"_on_{name}", None)
        if handler is not None:
            handler(data)

    def stopped(self) -> None:
        """The user stopped the answer (Ctrl-C): the stream was closed, so the daemon cancelled the turn and
        kept it as far as it came."""
        self.close()
        self._end_line()
        self.console.print(Text("[stopped: kept as far as it came]", style="yellow"))

    def close(self) -> None:
        """Stop the spinner, if one runs (before anything else is printed, and when the turn ends)."""
        if self.status is not None:
            self.status.stop()
            self.status = None

    def _wait(self, text: str) -> None:
        if self.status is None:
            self.status = self.console.status(text, spinner="dots")
            self.status.start()
        else:
            self.status.update(text)

    def _end_line(self) -> None:
        if self.mode is not None:
            self.console.out("")
            self.mode = None

    def _piece(self, text: str, mode: str, style: str | None = None) -> None:
        self.close()
        if self.mode != mode:
            self._end_line()
        self.mode = mode
        self.console.out(text, style=style, end="", highlight=False)
        self.console.file.flush()

    def _on_queued(self, data: dict) -> None:
        if data.get("loading"):
            self._wait(f"loading {data['loading']}…")
        else:
            ahead = data.get("position", 0)
            self._wait(f"queued: {ahead} ahead" if ahead else "queued")

    def _on_started(self, data: dict) -> None:
        self.close()

    def _on_reasoning(self, data: dict) -> None:
        self._piece(data.get("text", ""), "reasoning", style="dim")

    def _on_token(self, data: dict) -> None:
        text = data.get("text", "")
        self.streamed += text
        self._piece(text, "token")

    def _on_tool_call(self, data: dict) -> None:
        self.close()
        self._end_line()
        line = Text.assemble(("tool ", TOOL_STYLE), (data.get("name", "?"), f"bold {TOOL_STYLE}"),
                             (" " + short(data.get("arguments", "")), TOOL_STYLE))
        self.console.print(line)
        self._wait(f"running {data.get('name', 'the tool')}…")

    def _on_tool_result(self, data: dict) -> None:
        self.close()
        if data.get("success"):
            line = Text.assemble(("  -> ", "green"), (short(data.get("result", "")) or "(no output)", "green"))
        else:
            line = Text.assemble(("  -> error: ", "red"), (short(data.get("error", "")), "red"))
        self.console.print(line)

    def _on_usage(self, data: dict) -> None:
        self.usage = data

    def _on_done(self, data: dict) -> None:
        self.close()
        response = data.get("response") or ""
        if not self.streamed.strip() and response:  # an answer that arrived only whole
            self._piece(response, "token")
        self._end_line()
        self.finished = True
        notes = []
        if data.get("finish_reason") == "length":
            notes.append("cut off at max_tokens")
        if self.usage:
            seconds = time.monotonic() - self.started
            tokens, steps = self.usage.get("completion_tokens", 0), self.usage.get("steps", 1)
            notes.append(f"{tokens} token{'s' * (tokens != 1)}, {steps} step{'s' * (steps != 1)}, {seconds:.1f} s")
        if notes:
            self.console.print(Text(f"[{'; '.join(notes)}]", style="dim"))

    def _on_error(self, data: dict) -> None:
        self.close()
        self.finished = True
        self._end_line()
        self.console.print(Text(f"error: {data.get('detail', data)}", style="red"))


def show_history(console: Console, session: dict) -> None:
    """A session's stored messages, turn by turn, as `GET /v1/sessions/{id}` returns them."""
    messages = session.get("messages") or []
    if not messages:
        console.print(Text("(no messages yet)", style="dim"))
        return
    for message in messages:
        role, content = message.get("role"), message.get("content") or ""
        dim = "dim" if message.get("folded") else ""
        if role == "user":
            console.print(Text.assemble(("you> ", f"bold {dim}".strip()), (content, dim)))
        elif role == "assistant":
            if message.get("reasoning"):
                console.print(Text(message["reasoning"], style="dim"))
            for call in message.get("tool_calls") or []:
                console.print(Text.assemble(("tool ", TOOL_STYLE), (call.get("name", "?"), f"bold {TOOL_STYLE}"),
                                            (" " + short(call.get("arguments", "")), TOOL_STYLE)))
            if content:
                console.print(Text(content, style=dim))
            if message.get("stopped"):
                console.print(Text("[stopped]", style="yellow"))
        elif role == "tool":
            console.print(Text(f"  -> {message.get('name') or 'tool'}: {short(content)}", style=dim or "green"))
        elif role == "summary":
            console.print(Text(f"[summary of earlier turns] {content}", style="dim"))
