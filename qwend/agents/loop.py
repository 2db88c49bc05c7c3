"""The one tool loop: the model calls tools, qwend runs them, the results go back, until an answer. Profile
turns, the Responses API and the ReAct agent all run through it; each brings only its dialect (how a step is
asked, how its calls are read, how results go back to the model).

Guards, the same for every dialect: at most `max_steps` rounds of calls (then one step that may not call
answers, where the dialect has such a step; else the turn ends); an identical call made twice is not run
again (the model is told to use the earlier result); a tool that fails, or arguments that do not fit its
schema, become what the model reads, never a failed request; what the model reads of a result is bounded.
Unless `chain`, a round whose calls all succeeded is followed by an answer without tools: small models
otherwise keep calling tools after the result is in (measured on the default model: "What is 2 + 2?" went
calculator, then web_search and web_fetch until max_tokens). A call to a tool qwend does not run (the
client's, as in the Responses API) ends the turn as a hand-off: TurnEnd carries it pending.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from qwend.chat.service import ANSWER_NOTE, Completion, CompletionBuilder, chat
from qwend.engine.manager import LoadedModel
from qwend.errors import InvalidToolArguments, ToolNotFound
from qwend.runtime import Runtime
from qwend.tools.base import ToolResult
from qwend.types import (
    ChatEvent, ChatRequest, Done, FinishReason, Message, Requester, SamplingParams, Thinking, ToolCall, ToolSpec, Usage,
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
REPEATED = "this exact call was already made and its result is above; use it to answer"

# Why a call did not run: its arguments (not JSON, not an object, not fitting the schema), an unknown tool,
# or the same call made before.
Refusal = Literal["arguments", "unknown", "repeated"]


@dataclass(frozen=True)
class ToolResultEvent:
    """One call's outcome: the result the client sees, and what the model read of it."""

    call: ToolCall
    result: ToolResult
    observation: str = ""
    refused: Refusal | None = None  # None: the tool ran


@dataclass(frozen=True)
class Reading:
    """What a dialect read in one generation."""

    reply: Message  # the step as the conversation keeps it
    calls: tuple[ToolCall, ...] = ()
    problem: str | None = None  # a reply the dialect cannot act on: told to the model, and the turn goes on
    detail: Any = None  # the dialect's own reading, for its caller (ReAct: the parsed step)


@dataclass(frozen=True)
class StepDone:
    """One generation of the loop finished (its Done, re-labelled so a stream has one final `done`)."""

    finish_reason: FinishReason
    usage: Usage
    reading: Reading | None = None


@dataclass(frozen=True)
class TurnEnd:
    """The loop's answer: the messages it added, summed usage, why it stopped, and the calls it hands to
    the client (the turn ended at them; their results come with the client's next request)."""

    messages: tuple[Message, ...]
    finish_reason: FinishReason
    usage: Usage
    steps: int
    tool_results: tuple[ToolResultEvent, ...] = field(default=())
    pending: tuple[ToolCall, ...] = field(default=())

    @property
    def answer(self) -> str:
        return self.messages[-1].content if self.messages and self.messages[-1].role == "assistant" else ""


LoopEvent = ChatEvent | ToolResultEvent | StepDone | TurnEnd
# Runs one call whose arguments parsed as a JSON object. The default runs qwend's registered tools; seed 003
# hands calls to client-defined tools to its WebSocket client and waits for the result.
ToolExecutor = Callable[[ToolCall, dict[str, Any]], Awaitable[ToolResult]]


class Dialect(Protocol):
    """How one kind of agent talks to the model: how a step is asked, how its calls are read, and how their
    results go back. The guards are the loop's."""

    answers_after_limit: bool  # after max_steps rounds, one more step without tools answers (else: the end)

    def request(self, base: ChatRequest, step: int, may_call: bool) -> ChatRequest:
        """Step `step`'s request (0 first) from one carrying the conversation, model, sampling and tools."""

    def read(self, completion: Completion) -> Reading: ...

    def repeated(self, call: ToolCall, earlier: str) -> str:
        """The error for a call made again; `earlier` is what the model read of the first one."""

    def observation(self, call: ToolCall, result: ToolResult, refused: Refusal | None) -> str:
        """What the model reads of a call's result (bounded: `bounded`)."""

    def feedback(self, reading: Reading, results: Sequence[ToolResultEvent]) -> tuple[Message, ...]:
        """The messages that carry a step's results (or its problem) back to the model."""


@dataclass(frozen=True)
class ToolCalls:
    """The model's own tool calls, in its chat template's format; each result goes back as a tool message."""

    notes: bool = True  # RETRY_NOTE / ANSWER_NOTE after a round of results (profile turns)
    tool_choice: Literal["none", "auto", "required"] = "auto"  # the first step's; later ones may choose
    tool_name: str | None = None  # the first step's required tool
    # One call per generation by default: small models asked for several repeat one call until max_tokens.
    parallel_tool_calls: bool = False
    answers_after_limit: bool = True

    def request(self, base: ChatRequest, step: int, may_call: bool) -> ChatRequest:
        note = (Message("system", RETRY_NOTE if may_call else ANSWER_NOTE),) if step and self.notes else ()
        # Tools stay in the prompt on the answering step (the cached prefix is reused, and the calls in the
        # history keep their context); "text" makes that step's reply text.
        choice = (self.tool_choice if step == 0 else "auto") if may_call else "text"
        return replace(base, messages=base.messages + note, tool_choice=choice,
                       tool_name=self.tool_name if step == 0 else None, parallel_tool_calls=self.parallel_tool_calls)

    def read(self, completion: Completion) -> Reading:
        reply = Message("assistant", completion.text, tool_calls=completion.tool_calls,
                        reasoning=completion.reasoning or None)
        return Reading(reply, completion.tool_calls)

    def repeated(self, call: ToolCall, earlier: str) -> str:
        return REPEATED

    def observation(self, call: ToolCall, result: ToolResult, refused: Refusal | None) -> str:
        return tool_result_text(result)

    def feedback(self, reading: Reading, results: Sequence[ToolResultEvent]) -> tuple[Message, ...]:
        return tuple(Message("tool", r.observation, name=r.call.name, tool_call_id=r.call.id) for r in results)


async def run_tool_loop(
    runtime: Runtime, messages: Sequence[Message], *, tools: Sequence[ToolSpec], model: str | None,
    sampling: SamplingParams, max_steps: int, chain: bool = False, execute: ToolExecutor | None = None,
    who: Requester = Requester(), dialect: Dialect = ToolCalls(), server_tools: Collection[str] | None = None,
    loaded: LoadedModel | None = None, json_schema: dict[str, Any] | None = None, thinking: Thinking = Thinking(),
) -> AsyncIterator[LoopEvent]:
    """Chat events of every step, a StepDone per generation, a ToolResultEvent per call, then TurnEnd.
    `server_tools`: the tools qwend runs here, a call to any other is the client's (None: every call runs).
    `json_schema`: the shape of the text answer (structured output), where the steps come to one.
    `loaded`: `model` as the caller resolved it, so that no step resolves it again."""
    history = list(messages)
    added: list[Message] = []
    results: list[ToolResultEvent] = []
    seen: dict[str, str] = {}  # each call made (name and arguments) -> what the model read of it
    totals = [0, 0, 0]
    finish: FinishReason = "stop"
    pending: tuple[ToolCall, ...] = ()
    step = 0
    answered = False  # the last round's calls all succeeded
    while step < max_steps or dialect.answers_after_limit:
        may_call = step < max_steps and (chain or not answered)
        base = who.attach(ChatRequest(tuple(history), model=model, sampling=sampling, tools=tuple(tools),
                                      json_schema=json_schema, thinking=thinking))
        answer = CompletionBuilder()
        async with aclosing(chat(runtime, dialect.request(base, step, may_call), loaded=loaded)) as events:
            async for event in events:
                answer.add(event)
                if not isinstance(event, Done):
                    yield event
        step += 1
        done = answer.completion()
        usage = done.usage
        totals = [totals[0] + usage.prompt_tokens, totals[1] + usage.completion_tokens, totals[2] + usage.cached_tokens]
        reading = dialect.read(done)
        yield StepDone(done.finish_reason, usage, reading)
        finish = done.finish_reason
        history.append(reading.reply)
        added.append(reading.reply)
        if server_tools is not None:
            pending = tuple(c for c in reading.calls if c.name not in server_tools)
        if pending or not (reading.calls or reading.problem):
            break
        round_results = []
        for call in reading.calls:
            round_results.append(await _run_call(runtime, dialect, execute, call, seen))
            yield round_results[-1]
        results += round_results
        answered = bool(round_results) and all(r.result.success for r in round_results)
        feedback = dialect.feedback(reading, round_results)
        history += feedback
        added += feedback
    yield TurnEnd(tuple(added), finish, Usage(*totals), step, tuple(results), pending)


async def _run_call(runtime: Runtime, dialect: Dialect, execute: ToolExecutor | None, call: ToolCall,
                    seen: dict[str, str]) -> ToolResultEvent:
    def outcome(result: ToolResult, refused: Refusal | None = None) -> ToolResultEvent:
        return ToolResultEvent(call, result, dialect.observation(call, result, refused), refused)

    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return outcome(ToolResult(False, error=f"the arguments are not valid JSON: {call.arguments[:200]}"),
                       "arguments")
    if not isinstance(arguments, dict):
        return outcome(ToolResult(False, error="the arguments must be a JSON object"), "arguments")
    key = json.dumps([call.name, arguments], sort_keys=True)
    if key in seen:  # small models loop on a call they have made; running it again cannot help
        return outcome(ToolResult(False, error=dialect.repeated(call, seen[key])), "repeated")
    if execute is not None:
        event = outcome(await execute(call, arguments))
    else:
        try:
            event = outcome(await runtime.tools.invoke(call.name, arguments))
        except ToolNotFound as exc:
            event = outcome(ToolResult(False, error=exc.message), "unknown")
        except InvalidToolArguments as exc:  # said back to the model, which can correct them
            event = outcome(ToolResult(False, error=exc.message), "arguments")
    seen[key] = event.observation
    return event


def tool_result_text(result: ToolResult) -> str:
    """What the model reads: the result itself (JSON unless text), or the error."""
    if not result.success:
        return bounded(f"Error: {result.error}", MAX_RESULT_CHARS)
    value = result.result if isinstance(result.result, str) else json.dumps(result.result, ensure_ascii=False)
    return bounded(value, MAX_RESULT_CHARS)


def bounded(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying so: the one truncation rule of every dialect."""
    return text if len(text) <= limit else text[:limit] + f" ... [truncated, {len(text)} characters in all]"
