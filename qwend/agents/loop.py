"""The server-side tool loop: the model calls tools, qwend runs them, the results go back, until an answer.

Guards: at most `max_steps` rounds of calls (the round after the last one offers no tools, so the model
must answer); an identical call made twice is not run again (the model is told to use the earlier result);
a tool that fails, or arguments that do not fit its schema, become the tool message the model reads,
never a failed request. Unless the profile allows chaining, a round whose calls all succeeded is followed
by an answer without tools: small models otherwise keep calling tools after the result is in (measured
on the default model: "What is 2 + 2?" went calculator, then web_search and web_fetch until max_tokens).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from qwend.chat.service import ANSWER_NOTE, CompletionBuilder, chat
from qwend.errors import InvalidToolArguments, ToolNotFound
from qwend.runtime import Runtime
from qwend.tools.base import ToolResult
from qwend.types import (
    ChatEvent, ChatRequest, Done, FinishReason, Message, Priority, SamplingParams, ToolCall, ToolSpec, Usage,
)

MAX_RESULT_CHARS = 8000  # what the model reads of one tool result; the client still gets all of it
# Small models keep calling tools after the results are in (the same call, then unrelated ones), or write
# call-shaped JSON as their answer, so each generation after a round of results carries one of these notes
# (measured on the default model: without it, "What is 17 * 23?" was answered `{"name": "calculator", ...}`;
# with it, "391 is the product of 17 and 23."). Notes are not stored in the session.
RETRY_NOTE = (
    "The tool results are above. If they answer the user's question, reply to the user now with the answer. "
    "Call a tool again only if a result is missing or failed."
)


@dataclass(frozen=True)
class ToolResultEvent:
    call: ToolCall
    result: ToolResult


@dataclass(frozen=True)
class StepDone:
    """One generation of the loop finished (its Done, re-labelled so a stream has one final `done`)."""

    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True)
class TurnEnd:
    """The loop's answer: the messages it added (assistant and tool), summed usage, and why it stopped."""

    messages: tuple[Message, ...]
    finish_reason: FinishReason
    usage: Usage
    steps: int
    tool_results: tuple[ToolResultEvent, ...] = field(default=())

    @property
    def answer(self) -> str:
        return self.messages[-1].content if self.messages and self.messages[-1].role == "assistant" else ""


LoopEvent = ChatEvent | ToolResultEvent | StepDone | TurnEnd
# Runs one call whose arguments parsed as a JSON object. The default runs qwend's registered tools; seed 003
# hands calls to client-defined tools to its WebSocket client and waits for the result.
ToolExecutor = Callable[[ToolCall, dict[str, Any]], Awaitable[ToolResult]]


async def run_tool_loop(
    runtime: Runtime, messages: Sequence[Message], *, tools: Sequence[ToolSpec], model: str | None,
    sampling: SamplingParams, max_steps: int, chain: bool = False, execute: ToolExecutor | None = None,
    client: str | None = None, priority: Priority = "interactive", affinity: str | None = None,
) -> AsyncIterator[LoopEvent]:
    """Chat events of every step, a ToolResultEvent per executed call, a StepDone per generation, then TurnEnd."""

    async def run_registered(call: ToolCall, arguments: dict[str, Any]) -> ToolResult:
        try:
            return await runtime.tools.invoke(call.name, arguments)
        except (ToolNotFound, InvalidToolArguments) as exc:
            return ToolResult(False, error=exc.message)

    execute = execute or run_registered
    history = list(messages)
    added: list[Message] = []
    results: list[ToolResultEvent] = []
    seen_calls: set[tuple[str, str]] = set()
    totals = [0, 0, 0]
    finish: FinishReason = "stop"
    step = 0
    answered = False  # the last round's calls all succeeded
    while True:
        may_call = step < max_steps and (chain or not answered)
        note = (Message("system", RETRY_NOTE if may_call else ANSWER_NOTE),) if step else ()
        # Tools stay in the prompt on the answering step (the cached prefix is reused, and the calls in the
        # history keep their context); "text" makes that step's reply text. One call per generation: small
        # models asked for several repeat one call until max_tokens.
        request = ChatRequest(tuple(history) + note, model=model, sampling=sampling, tools=tuple(tools),
                              tool_choice="auto" if may_call else "text", parallel_tool_calls=False,
                              client=client, priority=priority, affinity=affinity)
        answer = CompletionBuilder()
        async with aclosing(chat(runtime, request)) as events:
            async for event in events:
                answer.add(event)
                if isinstance(event, Done):
                    usage = event.usage
                    totals = [totals[0] + usage.prompt_tokens, totals[1] + usage.completion_tokens,
                              totals[2] + usage.cached_tokens]
                    yield StepDone(event.finish_reason, usage)
                else:
                    yield event
        step += 1
        done = answer.completion()
        finish, calls = done.finish_reason, done.tool_calls
        reply = Message("assistant", done.text, tool_calls=calls, reasoning=done.reasoning or None)
        history.append(reply)
        added.append(reply)
        if not calls:
            break
        answered = True
        for call in calls:
            result = await _run_call(execute, call, seen_calls)
            answered = answered and result.success
            results.append(ToolResultEvent(call, result))
            yield results[-1]
            message = Message("tool", tool_result_text(result), name=call.name, tool_call_id=call.id)
            history.append(message)
            added.append(message)
    yield TurnEnd(tuple(added), finish, Usage(*totals), step, tuple(results))


async def _run_call(execute: ToolExecutor, call: ToolCall, seen: set[tuple[str, str]]) -> ToolResult:
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return ToolResult(False, error=f"the arguments are not valid JSON: {call.arguments[:200]}")
    if not isinstance(arguments, dict):
        return ToolResult(False, error="the arguments must be a JSON object")
    key = (call.name, json.dumps(arguments, sort_keys=True))
    if key in seen:
        return ToolResult(False, error="this exact call was already made and its result is above; use it to answer")
    seen.add(key)
    return await execute(call, arguments)


def tool_result_text(result: ToolResult) -> str:
    """What the model reads: the result itself (JSON unless text), or the error."""
    if not result.success:
        return f"Error: {result.error}"
    value = result.result if isinstance(result.result, str) else json.dumps(result.result, ensure_ascii=False)
    return value if len(value) <= MAX_RESULT_CHARS else value[:MAX_RESULT_CHARS] + " …[truncated]"
