"""The chat pipeline: the one path from a ChatRequest to a stream of ChatEvents, for every protocol.

Errors that make a request unservable (unknown model, no room for it, bad body, context overflow, queue full)
are raised before the first event, so adapters can still answer with a proper HTTP status. The exception is
a request whose model has to be loaded first: it says so at once (`Queued` with `loading`), and what only
the loaded model can tell (the prompt does not fit, it reads no images) comes in the stream after that.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Protocol

from qwend.chat.decide import Deferred, Generation, generation
from qwend.chat.images import with_fetched_images
from qwend.chat.parser import OutputParser, PlainText
from qwend.chat.relevance import judge_prompts, user_messages
from qwend.chat.schemas import check_grammar_weight, grammar_weight
from qwend.chat.stops import StopMatcher
from qwend.chat.thinking import reasoning_first
from qwend.engine.base import Finished, Piece, Prefill, Prompt
from qwend.engine.manager import LoadedModel, LoadingModel, ModelManager
from qwend.engine.scheduler import Admitted, Waiting
from qwend.errors import BackendError, ContextOverflow, InvalidRequest
from qwend.metrics import Metrics
from qwend.settings import Settings
from qwend.types import (
    ChatEvent, ChatRequest, Done, FinishReason, Message, OutputConstraint, PromptProgress, Queued, Reasoning,
    SamplingParams, Speculated, Started, Thinking, Token, TokenLogprob, ToolCall, ToolCallEnd, ToolSpec, Usage,
)


class Daemon(Protocol):
    """What the pipeline reads of the daemon: the Runtime, which imports this module (its `generate`, the model
    for tools and session summaries, is this pipeline), so it is named here by what it offers."""

    settings: Settings
    models: ModelManager
    metrics: Metrics


async def chat(
    runtime: Daemon, request: ChatRequest, *, loaded: LoadedModel | None = None
) -> AsyncIterator[ChatEvent]:
    """The events of one answer (order in qwend.types). Closing the iterator cancels the job wherever it is.
    `loaded` is the request's model where the caller resolved it already (its keep-alive is then the caller's)."""
    request = _within_limits(request, runtime.settings)
    if loaded is not None and not runtime.models.holds(loaded):
        # unloaded since the caller resolved it (a tool ran past its keep-alive, another model needed the room)
        loaded = None
    if loaded is None:
        found = await runtime.models.request(request.model, keep_alive=request.keep_alive)
        if isinstance(found, LoadingModel):  # say so before the wait (what forbids the load was raised already)
            yield Queued(0, loading=found.name)
        loaded = found if isinstance(found, LoadedModel) else await found.ready()
    if loaded.backend.info.vision:
        request = replace(request, messages=await with_fetched_images(request.messages, runtime.settings))
    # rendering and tokenizing take time in proportion to the prompt (30 MB: 38 s): off the event loop
    prompt, generation, parser = await asyncio.to_thread(_prepare, loaded, runtime, request)
    stops = StopMatcher(request.sampling.stop)
    completion_tokens, cached_tokens, prompt_length = 0, 0, prompt.length
    finish: FinishReason = "stop"
    speculated = Speculated()
    logprobs = _LogprobsToText()
    job = loaded.scheduler.run_work(generation, client=request.client, priority=request.priority)
    timer = runtime.metrics.generation(loaded.name)  # queue wait, time to first token, decode rate
    async with aclosing(job):
        async for item in job:
            match item:
                case Waiting(position):
                    yield Queued(position)
                case Admitted():
                    timer.admitted()
                    yield Started(loaded.name, prompt.length)
                case Prefill(cached):
                    cached_tokens = cached
                case PromptProgress():
                    yield item
                case Piece(piece, tokens, logprob):
                    timer.piece(tokens)
                    completion_tokens += tokens
                    logprobs.add(logprob)
                    piece, hit = stops.feed(piece)
                    for event in parser.feed(piece):
                        yield logprobs.attach(event)
                    if hit:
                        break  # leaving the block closes the job, which stops the backend
                case Finished(reason, prompt_tokens, counted, drafts):
                    finish, speculated = reason, drafts or speculated
                    prompt_length = prompt_tokens or prompt_length
                    completion_tokens = counted if counted is not None else completion_tokens
                    for event in parser.feed(stops.flush()):
                        yield logprobs.attach(event)
    for event in parser.finish():
        yield logprobs.attach(event)
    timer.finished(prompt_length, cached_tokens, completion_tokens, speculated)
    runtime.metrics.tool_parse(parser.outcomes)
    if parser.calls and finish == "stop":
        finish = "tool_calls"
    yield Done(finish, Usage(prompt_length, completion_tokens, cached_tokens, speculated), stops.matched)


class _LogprobsToText:
    """Hands the log probabilities of generated tokens to the text events they became: the parser may hold
    text back (a tag being recognised), so each Token carries those of the tokens read since the last one."""

    def __init__(self) -> None:
        self.pending: list[TokenLogprob] = []

    def add(self, logprob: TokenLogprob | None) -> None:
        if logprob is not None:
            self.pending.append(logprob)

    def attach(self, event: ChatEvent) -> ChatEvent:
        if self.pending and isinstance(event, Token):
            event = replace(event, logprobs=tuple(self.pending))
            self.pending = []
        return event


async def prompt_tokens(runtime: Daemon, request: ChatRequest) -> int:
    """How many tokens the request's prompt takes, rendered with its tools as its answer's would be (Anthropic's
    count_tokens); the model is loaded for its tokenizer."""
    request = _within_limits(request, runtime.settings)
    found = await runtime.models.request(request.model, keep_alive=request.keep_alive)
    loaded = found if isinstance(found, LoadedModel) else await found.ready()
    tools, _ = tool_plan(request)
    rendered = await asyncio.to_thread(build_prompt, loaded.backend, request.messages, tools,
                                       thinking=_switch(request.thinking))
    return rendered.length


def _within_limits(request: ChatRequest, settings: Settings) -> ChatRequest:
    """Refuse what no answer can come of; an answer longer than the operator's cap is cut to it (clients send
    a large max_tokens by habit, so the cap is applied rather than refused)."""
    if not request.messages and request.text_prompt is None:
        raise InvalidRequest("messages must hold at least one message", param="messages")
    if len(request.messages) > settings.max_messages:
        raise InvalidRequest(f"{len(request.messages)} messages are more than the {settings.max_messages} one "
                             "request may carry (QWEND_MAX_MESSAGES)", param="messages")
    cap, asked = settings.max_tokens_limit, request.sampling.max_tokens
    if cap is not None and (asked is None or asked > cap):
        request = replace(request, sampling=replace(request.sampling, max_tokens=cap))
    return request


def _prepare(
    loaded: LoadedModel, runtime: Daemon, request: ChatRequest
) -> tuple[Prompt, Generation, OutputParser | PlainText]:
    """Everything that can refuse the request, before it is queued: the prompt and whether it fits, the
    output constraint; then what the job generates (chat/decide.py) and the parser for it."""
    if request.sampling.logprobs is not None and not loaded.backend.info.logprobs:
        raise InvalidRequest(f"model {loaded.name!r} cannot report log probabilities on the "
                             f"{loaded.backend.info.engine} engine", param="logprobs")
    if request.text_prompt is not None:  # a text completion: the text as it is, the answer as it comes
        prompt = loaded.backend.text_prompt(request.text_prompt, request.suffix)
        prompt = replace(prompt, affinity=request.affinity, suffix=request.suffix)
        check_fits(prompt.length, request.sampling, loaded.backend.info.context_length)
        constraint = OutputConstraint(json_schema=request.json_schema) if request.json_schema is not None else None
        if constraint is not None and loaded.backend.info.grammar:
            constraint = replace(constraint, grammar=loaded.backend.grammar_for(constraint))
        return prompt, generation(loaded.backend, prompt, request.sampling, constraint), PlainText()
    if request.tool_choice == "auto" and request.messages[-1].role == "tool" and runtime.settings.answer_after_tool_results:
        request = replace(request, tool_choice="text")  # see ANSWER_NOTE
    tools, constraint = tool_plan(request)
    backend = loaded.backend
    if not backend.info.vision and any(m.images for m in request.messages):
        raise InvalidRequest(
            f"model {loaded.name!r} cannot read images (it has no vision support); send text only, "
            "or choose a vision model",
            param="messages",
        )
    thinking = _switch(request.thinking)
    prompt = build_prompt(backend, request.messages, tools, answering=request.tool_choice == "text", thinking=thinking)
    prompt = replace(prompt, pin=request.pin_prompt, affinity=request.affinity)
    check_fits(prompt.length, request.sampling, backend.info.context_length)
    # every backend gets the constraint (an upstream server passes it on as tool_choice); only a grammar
    # guarantees the answer's shape, and without one the parser also accepts calls written as bare JSON
    enforced = constraint is not None and backend.info.grammar
    if enforced:  # built here, so a schema past llama.cpp's bounds is a 400 before anything is queued
        if constraint.tools:  # each schema is bounded; the call grammar holds them all
            check_grammar_weight(sum(grammar_weight(t.parameters) for t in constraint.tools), param="tools")
        constraint = replace(constraint, grammar=backend.grammar_for(constraint))
    # what calls take their values from (chat/calls.py)
    generated, deferred = prompt, Deferred(said="\n".join(m.content for m in request.messages))
    if enforced and constraint.calls == "optional":
        asked = user_messages(request.messages)
        deferred = replace(deferred, judge=functools.partial(judge_prompts, backend, request.messages, tools),
                           plain=functools.partial(build_prompt, backend, request.messages, (), thinking=thinking),
                           asked=asked[-1] if asked else "",
                           follow_up=any(m.role == "tool" for m in request.messages))
    if enforced and constraint.tools and request.json_schema is not None:
        text = OutputConstraint(json_schema=request.json_schema)
        deferred = replace(deferred, text=replace(text, grammar=backend.grammar_for(text)))
    if enforced and constraint.tools and constraint.parallel:
        # once calls are decided on, ask for one per item (irrelevance is settled by then; see PARALLEL_HINT)
        deferred = replace(deferred, calls=functools.partial(_calls_prompt, backend, request, tools, thinking))
        if constraint.calls == "required":  # decided already: rendered now, and refused here if it does not fit
            generated = replace(build_prompt(backend, request.messages, tools, hint=PARALLEL_HINT, thinking=thinking),
                                pin=prompt.pin)
            check_fits(generated.length, request.sampling, backend.info.context_length)
    callable_tools = () if request.tool_choice == "text" else tools  # shown, but never called
    parser = OutputParser(
        callable_tools,
        trusted=enforced and bool(callable_tools),
        lenient=not enforced,
        in_reasoning=prompt.text.rstrip().endswith("<think>"),
        max_calls=None if request.parallel_tool_calls else 1,
    )
    if backend.info.thinking and thinking is not False and (request.thinking.budget is not None or enforced):
        # its reasoning first (bounded, and free of the answer's grammar), then the answer (chat/thinking.py)
        job = reasoning_first(backend, generated, request.sampling, constraint, deferred, request.thinking.budget)
    else:
        job = generation(backend, generated, request.sampling, constraint, deferred)
    return prompt, job, parser


def _switch(thinking: Thinking) -> bool | None:
    """The template's reasoning switch for a request: off for a budget of nothing, else as asked (None: the
    template's default)."""
    return False if thinking.budget == 0 else thinking.enabled


def _calls_prompt(backend, request: ChatRequest, tools: tuple[ToolSpec, ...], thinking: bool | None) -> Prompt | None:
    """The prompt that decided calls are generated from (rendered only once they are: in the job); None where
    it would not fit the window, and the calls come from the request's own prompt."""
    calls = build_prompt(backend, request.messages, tools, hint=PARALLEL_HINT, thinking=thinking)
    try:
        check_fits(calls.length, request.sampling, backend.info.context_length)
    except ContextOverflow:
        return None
    return calls


# Small models handed tool results back call the same tool again (or invent further calls) instead of
# answering: measured on the default model, 4 of 4 OpenAI-style round trips re-called under "auto"; answered
# as text with this note, 3 of 4 were right ("The weather in Paris is currently 18°C with a sunny condition.").
# So under "auto" a conversation that ends in tool results is answered in text (tools stay in the prompt),
# unless QWEND_ANSWER_AFTER_TOOL_RESULTS=false; a client that wants another call asks with "required".
ANSWER_NOTE = "Answer the user's question in plain sentences using the tool results above."


# Given only to the generation of calls, never to the decision whether to call (where it would make small
# models call tools for questions that need none). Small models otherwise stop after the first of several
# calls a question needs: on `qwend eval tools` parallel calls went from 25% to 100% correct with it.
PARALLEL_HINT = "Make one tool call for each item the user asks about."


def build_prompt(
    backend, messages: tuple[Message, ...], tools: tuple[ToolSpec, ...], hint: str | None = None, *,
    answering: bool = False, thinking: bool | None = None,
) -> Prompt:
    after_results = answering and messages[-1].role == "tool"
    notes = [n for n in (ANSWER_NOTE if after_results else None, hint) if n]
    if notes:
        try:
            return backend.prompt(messages + (Message("system", " ".join(notes)),), tools, thinking=thinking)
        except BackendError:
            pass  # a template that refuses a system message there: render the conversation as it is
    return backend.prompt(messages, tools, thinking=thinking)


def tool_plan(request: ChatRequest) -> tuple[tuple[ToolSpec, ...], OutputConstraint | None]:
    """The tools the model is shown and the output constraint that `tool_choice` and the response
    format ask for (None when nothing is constrained)."""
    choice, tools = request.tool_choice, request.tools
    if request.json_schema is not None and (not tools or choice in ("none", "text")):
        shown = tools if choice == "text" else ()  # text is the answer; the JSON grammar keeps calls out of it
        return shown, OutputConstraint(json_schema=request.json_schema) if request.constrained else None
    # with tools that may be called, a response format shapes the text answer the decision may come to
    # (`Deferred.text`): an agent's final, structured answer after its calls
    if not tools or choice == "none":
        return (), None
    calls = {"auto": "optional", "required": "required", "text": "none"}[choice]
    if request.tool_name is not None:
        tools = tuple(t for t in tools if t.name == request.tool_name)
        if not tools:
            raise InvalidRequest(
                f"tool_choice names {request.tool_name!r}, which is not among the tools", param="tool_choice"
            )
    if not request.constrained:
        return tools, None
    return tools, OutputConstraint(tools=tools, calls=calls, parallel=request.parallel_tool_calls)


def check_fits(prompt_tokens: int, sampling: SamplingParams, context_length: int) -> None:
    if prompt_tokens >= context_length:
        raise ContextOverflow(
            f"the prompt is {prompt_tokens} tokens, but the model's context window is {context_length} tokens",
            param="messages",
        )
    if sampling.max_tokens is not None and prompt_tokens + sampling.max_tokens > context_length:
        raise ContextOverflow(
            f"the prompt is {prompt_tokens} tokens and max_tokens is {sampling.max_tokens}: together "
            f"{prompt_tokens + sampling.max_tokens}, more than the context window of {context_length} tokens",
            param="max_tokens",
        )


@dataclass(frozen=True)
class Completion:
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str = ""
    logprobs: tuple[TokenLogprob, ...] = ()  # of the answer's text, when asked for
    stop_sequence: str | None = None  # the stop string that ended it


class CompletionBuilder:
    """Folds chat events into a Completion as they pass (for callers that also forward the events)."""

    def __init__(self) -> None:
        self.model, self.parts, self.thoughts, self.calls, self.logprobs = "", [], [], [], []
        self.done: Done | None = None

    def add(self, event: ChatEvent) -> None:
        match event:
            case Started(name, _):
                self.model = name
            case Token(text, logprobs):
                self.parts.append(text)
                self.logprobs += logprobs
            case Reasoning(text):
                self.thoughts.append(text)
            case ToolCallEnd(_, call):
                self.calls.append(call)
            case Done():
                self.done = event

    def completion(self) -> Completion:
        assert self.done is not None, "a chat stream ended without Done"
        return Completion(self.model, "".join(self.parts), self.done.finish_reason, self.done.usage,
                          tuple(self.calls), "".join(self.thoughts), tuple(self.logprobs), self.done.stop_sequence)


async def complete(events: AsyncIterator[ChatEvent]) -> Completion:
    """Fold a chat stream into one answer: the non-streaming responses use the same events."""
    builder = CompletionBuilder()
    async with aclosing(events):
        async for event in events:
            builder.add(event)
            if builder.done is not None:
                return builder.completion()
    raise AssertionError("a chat stream ended without Done")
