"""Seed 001's ReAct agent: Thought / Action / Action Input / Observation until the action `finish`.

Each iteration is one step of the one tool loop (agents/loop.py), which holds the guards; this module
brings its dialect (`ReactSteps`: the prompt, reading an action from the text, observations as user turns).
A step is stopped before the model can invent an observation. The transcript goes back as alternating assistant (the step) and user (its observation)
turns that never change once written, so the backend's prefix KV reuse re-reads only the new turn.
`run` yields the steps as they happen and the result last: the streaming and JSON endpoints share it.
"""

from __future__ import annotations

import ast
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from qwend.agents.loop import Reading, Refusal, StepDone, ToolResultEvent, run_tool_loop
from qwend.agents.react_prompt import FINISH, REPEATED, answer_messages, format_help, observation_message, \
    observation_text, opening, parameter_lines, plan_messages, repeated
from qwend.chat.service import Completion, chat, complete
from qwend.errors import InvalidRequest
from qwend.runtime import Runtime
from qwend.tools.base import Tool, ToolResult
from qwend.types import ChatRequest, Message, Requester, SamplingParams, ToolCall

# Low temperature: the format matters more than variety. The bound keeps a rambling step cheap while leaving
# room for a python_repl program; the stops end the step where the tool's real observation belongs.
STEP_SAMPLING = SamplingParams(
    temperature=0.2, max_tokens=400, stop=("\nObservation:", "\nObservation :", "\n**Observation", "\nobservation:"),
)
PLAN_SAMPLING = SamplingParams(temperature=0.2, max_tokens=300, repeat_penalty=1.1)  # penalty: no loops
# The step after a refused repeat: at STEP_SAMPLING's temperature the default model wrote the refused call
# again, word for word, until the iterations ran out (measured: "average of the first 10 primes", "write and
# run a Fibonacci function"); sampled freely it changes the input or finishes. A second refused repeat of a
# call that failed ends the run with an answer without tools (ANSWER_SAMPLING).
CHANGE_COURSE_TEMPERATURE = 0.9
ANSWER_SAMPLING = SamplingParams(temperature=0.2, max_tokens=200)

Status = Literal["observing", "completed", "error"]


@dataclass(frozen=True)
class Step:
    """One iteration, in seed 001's shape. `observation` is None for `finish`."""

    step_number: int
    thought: str
    action: str | None
    action_input: Any
    observation: str | None
    status: Status


@dataclass(frozen=True)
class AgentStarted:
    """The run was accepted (goal checked, model loaded); nothing has been generated yet."""

    model: str
    goal: str
    max_iterations: int


@dataclass(frozen=True)
class AgentResult:
    success: bool
    final_answer: str | None
    steps: tuple[Step, ...]
    metadata: dict[str, Any] = field(default_factory=dict)


AgentEvent = AgentStarted | Step | AgentResult


@dataclass(frozen=True)
class ParsedStep:
    """What one reply asked for. `action` None means nothing usable was found; `problem` says why."""

    thought: str
    action: str | None
    action_input: Any = None
    text: str = ""  # the part of the reply the step came from: what goes back in the transcript
    problem: str | None = None


async def run(
    runtime: Runtime, goal: str, *, max_iterations: int | None = None, model: str | None = None,
    context: Mapping[str, Any] | None = None, who: Requester = Requester(),
) -> AsyncIterator[AgentEvent]:
    """AgentStarted, one Step per iteration, then the AgentResult. Errors that refuse the run (an empty goal,
    an unknown model) are raised before the first event; closing the iterator cancels the generation. `who`
    asks: the steps queue in the scheduler as its."""
    asked, goal = goal, goal.strip()
    if not goal:
        raise InvalidRequest("goal must not be empty", param="goal")
    # the operator's cap on tool rounds holds for agent runs too: a request may ask for fewer, not more
    limit = min(max_iterations or runtime.settings.max_agent_iterations, runtime.settings.max_tool_steps)
    loaded = await runtime.models.get(model)
    dialect = ReactSteps({t.name: t for t in runtime.tools.offered()})
    started = time.monotonic()
    yield AgentStarted(loaded.name, goal, limit)
    steps: list[Step] = []
    results: dict[tuple[str, str], str] = {}  # what each call that ran returned, by tool and arguments
    repeats = 0  # calls refused as repeats
    loop = run_tool_loop(runtime, opening(dialect.tools.values(), goal, context), tools=(), model=model,
                         sampling=STEP_SAMPLING, max_steps=limit, chain=True, who=who,
                         dialect=dialect, loaded=loaded)
    async with aclosing(loop) as events:
        async for event in events:
            if isinstance(event, StepDone):
                reading = event.reading
                if reading.calls:
                    continue  # its Step comes with the call's outcome
                step = dialect.step(len(steps) + 1, reading)  # finish, or a reply it cannot act on
            elif isinstance(event, ToolResultEvent):
                step = dialect.step(len(steps) + 1, reading, event)
                ran = (event.call.name, event.call.arguments)
                if event.refused is None and event.result.success:
                    results[ran] = observation_text(event.result).removeprefix("Success: ")
                elif event.refused == "repeated":
                    repeats += 1
                    if ran in results or repeats > 1:
                        # small models ask again for a result they have, or for a call that failed, until the
                        # iterations run out (measured): the run ends with that result, or with an answer
                        # without tools the second time (the first, the step after is sampled more freely)
                        steps.append(step)
                        yield step
                        step = Step(len(steps) + 1, "I already have the result that answers the goal.", FINISH,
                                    {"answer": results[ran]}, None, "completed") if ran in results \
                            else await _answer_without_tools(runtime, goal, steps, model, who)
                        steps.append(step)
                        yield step
                        break
            else:
                continue
            steps.append(step)
            yield step
    finished = bool(steps) and steps[-1].status == "completed"
    metadata = {
        "iterations": len(steps), "goal": asked, "model": loaded.name, "max_iterations": limit,
        "stopped_reason": "finished" if finished else "max_iterations",
        "elapsed_seconds": round(time.monotonic() - started, 2),
    }
    answer = steps[-1].action_input["answer"] if finished else None
    yield AgentResult(finished, answer, tuple(steps), metadata)


async def _answer_without_tools(
    runtime: Runtime, goal: str, steps: Sequence[Step], model: str | None, who: Requester,
) -> Step:
    """The run's last step where the model kept asking for a call that failed: the answer, asked for without
    tools from the goal and what the tools returned."""
    observations = [s.observation for s in steps if s.observation and s.status == "observing"]
    request = who.attach(ChatRequest(answer_messages(goal, observations), model=model, sampling=ANSWER_SAMPLING))
    answer = (await complete(chat(runtime, request))).text.strip()
    return Step(len(steps) + 1, "The tools cannot help further, so I answer from what I know.", FINISH,
                {"answer": answer}, None, "completed" if answer else "error")


async def collect(events: AsyncIterator[AgentEvent]) -> AgentResult:
    """Fold a run into its result: the non-streaming endpoint uses the same events."""
    async with aclosing(events):
        async for event in events:
            if isinstance(event, AgentResult):
                return event
    raise AssertionError("an agent run ended without its result")


async def plan(runtime: Runtime, goal: str, *, model: str | None = None, who: Requester = Requester()) -> str:
    """A numbered plan, written by the model, naming the enabled tools; nothing is executed."""
    goal = goal.strip()
    if not goal:
        raise InvalidRequest("goal must not be empty", param="goal")
    tools = runtime.tools.offered()
    messages = plan_messages(tools, goal)
    request = who.attach(ChatRequest(messages, model=model, sampling=PLAN_SAMPLING))
    reply = await complete(chat(runtime, request))
    return reply.text.strip()


# -- the ReAct dialect of the tool loop


@dataclass(frozen=True)
class ReactSteps:
    """Seed 001's text format as a dialect of the tool loop: one action per reply, read from the text; its
    observation goes back as the next user turn. The tools are in the prompt, so there is no step that
    answers without them: at the limit the run ends."""

    tools: Mapping[str, Tool]  # the enabled tools, by name
    answers_after_limit: bool = False

    def request(self, base: ChatRequest, step: int, may_call: bool) -> ChatRequest:
        last = base.messages[-1].content if base.messages else ""
        if REPEATED.partition("{")[0] in last:  # the step after a refused repeat: see CHANGE_COURSE_TEMPERATURE
            return replace(base, sampling=replace(base.sampling, temperature=CHANGE_COURSE_TEMPERATURE))
        return base

    def read(self, completion: Completion) -> Reading:
        parsed = parse_step(completion.text, {name: t.parameters for name, t in self.tools.items()})
        reply = Message("assistant", parsed.text)

        def problem(text: str) -> Reading:
            return Reading(reply, problem=text, detail=parsed)

        if parsed.action is None:
            return problem(parsed.problem or format_help(self.tools))
        if parsed.action == FINISH:
            if finish_answer(parsed.action_input) is None:
                return problem('finish needs an answer, as in Action Input: {"answer": "1024"}')
            return Reading(reply, detail=parsed)
        tool = self.tools.get(parsed.action)
        if tool is None:
            return problem(f"{parsed.action!r} is not a tool. Valid actions: {', '.join([*self.tools, FINISH])}.")
        arguments = tool_arguments(parsed.action_input, tool.parameters)
        text = json.dumps(arguments, ensure_ascii=False, default=str)
        return Reading(reply, (ToolCall(f"call_{uuid.uuid4().hex[:12]}", tool.name, text),), detail=parsed)

    def repeated(self, call: ToolCall, earlier: str) -> str:
        return repeated(call.name, earlier)

    def observation(self, call: ToolCall, result: ToolResult, refused: Refusal | None) -> str:
        if refused == "repeated":
            return f"Error: {result.error}"
        if refused is not None:  # bad arguments: the model can correct them, knowing the parameters
            hint = "; ".join(parameter_lines(self.tools[call.name].parameters)) or "none"
            return f"Error: {result.error}. Parameters of {call.name}: {hint}"
        return observation_text(result)

    def feedback(self, reading: Reading, results: Sequence[ToolResultEvent]) -> tuple[Message, ...]:
        observation = f"Error: {reading.problem}" if reading.problem else results[0].observation
        return (Message("user", observation_message(observation)),)

    def step(self, number: int, reading: Reading, result: ToolResultEvent | None = None) -> Step:
        """Seed 001's shape of one iteration: its reading, and the call's outcome when it made one."""
        parsed: ParsedStep = reading.detail
        if result is not None:
            status = "observing" if result.refused is None and result.result.success else "error"
            return Step(number, parsed.thought, result.call.name, json.loads(result.call.arguments),
                        result.observation, status)
        if reading.problem is not None:
            return Step(number, parsed.thought, parsed.action, parsed.action_input, f"Error: {reading.problem}",
                        "error")
        return Step(number, parsed.thought, FINISH, {"answer": finish_answer(parsed.action_input)}, None, "completed")


def tool_arguments(value: Any, schema: Mapping[str, Any]) -> Any:
    """The arguments object for a tool. A bare value, or an object whose one key is not a parameter
    (`{"input": ...}`), goes to the tool's single required (or only) parameter; anything else as written."""
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    target = required[0] if len(required) == 1 else next(iter(properties)) if len(properties) == 1 else None
    if value is None:
        return {}
    if isinstance(value, dict):
        if target and len(value) == 1 and next(iter(value)) not in properties:
            return {target: next(iter(value.values()))}
        return value
    if target and isinstance(value, str):
        value = _unwrapped(value, target)
    return {target: value} if target else value


def _unwrapped(text: str, name: str) -> str:
    """The value inside `{"name": "..."}` written as an object that is not valid JSON (small models leave a
    program's quotes and newlines unescaped), else `text`: the program is the value, not the object."""
    match = re.match(rf"""\{{\s*["']?{re.escape(name)}["']?\s*:\s*(["']?)(.*?)\1?\s*\}}?\s*$""", text, re.DOTALL)
    return match.group(2) if match else text


def finish_answer(value: Any) -> str | None:
    """The answer of a `finish` action: `{"answer": ...}`, the value of an object with one key, the JSON of
    any other object, or a bare value; None when there is nothing to give."""
    if isinstance(value, dict):
        value = value.get("answer", next(iter(value.values())) if len(value) == 1 else value or None)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# -- parsing one reply (small models are sloppy: markdown, fences, Python dicts, stray text)

_LABEL = re.compile(
    r"^[ \t>#*_`-]*(thought|action[ _-]*input|action|final[ _-]*answer|observation)[ \t*_`]*:[ \t*_]*",
    re.IGNORECASE | re.MULTILINE,
)
_NAME = re.compile(r"[A-Za-z_][\w.-]*")
_FINISH_NAMES = {"finish", "final_answer", "final", "answer", "done", "stop"}


def parse_step(text: str, tools: Mapping[str, Mapping[str, Any]]) -> ParsedStep:
    """Read one reply: the thought, the action (a tool name, `finish`, or None) and its input.
    `tools` maps each valid name to its JSON schema."""
    labels = [(m.group(1).lower().replace("_", " ").replace("-", " "), m) for m in _LABEL.finditer(text)]
    sections = [
        (_kind(label), m.start(), m.end(), labels[i + 1][1].start() if i + 1 < len(labels) else len(text))
        for i, (label, m) in enumerate(labels)
    ]
    thought = text[: sections[0][1]].strip() if sections else ""
    for i, (kind, _, start, end) in enumerate(sections):
        value = text[start:end].strip()
        if kind == "thought":
            thought = value
        elif kind == "observation":
            break  # everything past an observation the model wrote itself is invented
        elif kind == "final":
            return ParsedStep(thought, FINISH, {"answer": value}, text[:end].rstrip())
        elif kind == "action":
            first, _, rest = value.partition("\n")
            name, inline = _action_name(first, tools)
            raw, end_used = (inline or rest), end
            if i + 1 < len(sections) and sections[i + 1][0] == "input":
                raw, end_used = text[sections[i + 1][2]: sections[i + 1][3]], sections[i + 1][3]
            return ParsedStep(thought, name, parse_input(raw), text[:end_used].rstrip())
    call = _object_at(text, text.find("{")) if "{" in text else None
    if call and isinstance(call.get("name"), str) and not sections:  # Qwen's native <tool_call> JSON
        name = _known(call["name"], tools) or call["name"]
        return ParsedStep(thought, name, call.get("arguments", call.get("parameters")), text.strip())
    problem = format_help(tools)
    return ParsedStep(thought or text.strip()[:500], None, text=text.strip() or "(no reply)", problem=problem)


def _kind(label: str) -> str:
    if label.startswith("action") and label.endswith("input"):
        return "input"
    return "final" if label.startswith("final") else label


def _action_name(line: str, tools: Mapping[str, Any]) -> tuple[str, str | None]:
    """The tool name in an Action line, and arguments written inline as `name(...)`, if any."""
    line = line.strip().strip("`*'\" ")
    match = _NAME.match(line)
    if match is None:
        return line, None
    rest = line[match.end():].strip()
    inline = rest[1: rest.rindex(")")] if rest.startswith("(") and ")" in rest else rest if rest[:1] == "{" else None
    name = _known(match.group(0), tools)
    if name is None:  # "Use the calculator tool": a valid name somewhere in the line
        names = [*tools, FINISH]
        name = next((n for n in names if re.search(rf"\b{re.escape(n)}\b", line, re.IGNORECASE)), match.group(0))
    return name, inline


def _known(word: str, tools: Mapping[str, Any]) -> str | None:
    lowered = word.lower()
    name = next((n for n in tools if n.lower() == lowered), None)
    return FINISH if name is None and lowered in _FINISH_NAMES else name


def parse_input(raw: str) -> Any:
    """An Action Input as a value: the first object in it (JSON, else a Python literal; code fences and
    text after it ignored), else the bare text without its quotes; None when empty."""
    text = raw.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.split("```", 1)[0].strip()
    text = text.strip("`").strip()
    # only an object that opens the input: braces later on belong to a bare value (`print({1: 2})`)
    if text.startswith("{") and (value := _object_at(text, 0)) is not None:
        return value
    if not text:
        return None
    if text[0] in "\"'" and text[-1] == text[0]:
        try:
            return ast.literal_eval(text)  # literals only: never eval
        except (ValueError, SyntaxError):
            return text[1:-1]
    return text


def _object_at(text: str, start: int) -> dict | None:
    try:
        value, _ = json.JSONDecoder(strict=False).raw_decode(text, start)
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets in the reply
        end = _closing_brace(text, start)
        if end is None:
            return None
        try:
            value = ast.literal_eval(text[start: end + 1])  # {'expression': '2**10'}, True/None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


def _closing_brace(text: str, start: int) -> int | None:
    """Where the object opened at `start` closes, skipping braces inside quoted strings."""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        char = text[i]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "{}":
            depth += 1 if char == "{" else -1
            if depth == 0:
                return i
    return None
