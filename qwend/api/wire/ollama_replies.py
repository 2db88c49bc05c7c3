"""Ollama's native API, outward: the objects its streams and answers are made of, and its codec."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from typing import Any

from qwend.api.wire.codec import Codec, Failure, NdjsonResponse
from qwend.types import ChatEvent, Done, Reasoning, Started, Token, ToolCall, ToolCallEnd, ToolCallStart, Usage

# the Ollama release whose API qwend answers as (`GET /api/version`): clients gate features on it (thinking came
# in 0.9, structured outputs in 0.5), so it names a release with everything qwend serves of Ollama's API
OLLAMA_VERSION = "0.13.0"


# ---- events -> responses ----


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC, as Ollama's created_at and modified_at."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, tz=timezone.utc)
    return moment.isoformat().replace("+00:00", "Z")


class Timings:
    """Ollama's durations (nanoseconds), measured from the event stream as it passes: prompt evaluation runs
    from the job's admission to its first output, evaluation from there to Done."""

    def __init__(self, load_ns: int, started_ns: int) -> None:
        self.load_ns, self.started_ns = load_ns, started_ns
        self.admitted_ns = self.first_output_ns = self.done_ns = None

    def observe(self, event: ChatEvent) -> None:
        now = time.perf_counter_ns()
        if isinstance(event, Started):
            self.admitted_ns = now
        elif isinstance(event, (Token, Reasoning, ToolCallStart)) and self.first_output_ns is None:
            self.first_output_ns = now
        elif isinstance(event, Done):
            self.done_ns = now

    def metrics(self, usage: Usage) -> dict[str, int]:
        done = self.done_ns or time.perf_counter_ns()
        admitted = self.admitted_ns or self.started_ns
        first = self.first_output_ns or done
        return {
            "total_duration": done - self.started_ns,
            "load_duration": self.load_ns,
            "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": first - admitted,
            "eval_count": usage.completion_tokens,
            "eval_duration": done - first,
        }


def done_reason(finish_reason: str) -> str:
    return "length" if finish_reason == "length" else "stop"  # Ollama ends tool calls with "stop" too


def tool_call_body(call: ToolCall, index: int) -> dict[str, Any] | None:
    """Ollama sends arguments as an object. A call cut short by num_predict has none yet and is left out,
    as Ollama's own parser leaves it (done_reason says "length")."""
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        return None
    if not isinstance(arguments, dict):
        return None
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": arguments}}


def message_body(content: str = "", thinking: str = "", calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    bodies = [b for b in (tool_call_body(c, i) for i, c in enumerate(calls)) if b is not None]
    if bodies:
        message["tool_calls"] = bodies
    return message


def chat_chunk(model: str, message: dict[str, Any], **final: Any) -> dict[str, Any]:
    """One /api/chat object; `final` (done_reason and the metrics) makes it the last one."""
    return {"model": model, "created_at": timestamp(), "message": message, **_done(final)}


def generate_chunk(model: str, response: str, thinking: str = "", **final: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": timestamp(), "response": response}
    if thinking:
        body["thinking"] = thinking
    return {**body, **_done(final)}


def _done(final: dict[str, Any]) -> dict[str, Any]:
    return {"done": True, **final} if final else {"done": False}


def event_chunk(event: ChatEvent, model: str, generate: bool, think: bool) -> dict[str, Any] | None:
    """The streamed object for one event; None for events Ollama has no object for."""
    match event:
        case Token(text):
            return generate_chunk(model, text) if generate else chat_chunk(model, message_body(text))
        case Reasoning(text) if think:
            return generate_chunk(model, "", text) if generate else chat_chunk(model, message_body("", text))
        case ToolCallEnd(index, call) if not generate:  # Ollama sends each call whole, never in pieces
            body = tool_call_body(call, index)
            return None if body is None else chat_chunk(model, {**message_body(), "tool_calls": [body]})
    return None


# ---- /api/pull ----


def pull_progress(label: str, digest_: str, total: int | None, completed: int) -> dict[str, Any]:
    body: dict[str, Any] = {"status": f"pulling {label}", "digest": digest_, "completed": completed}
    if total is not None:
        body["total"] = total
    return body


def line(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def failure_body(failure: Failure) -> dict[str, Any]:
    return {"error": failure.message}


# NDJSON; an error is `{"error": message}`, the body before the stream and its last line after
OLLAMA: Codec[dict[str, Any]] = Codec(
    response=NdjsonResponse, encode=line, error_body=failure_body,
    stream_error=lambda failure: line(failure_body(failure)),
)
