"""What one chat job generates, and under which grammar: on engines that enforce grammars (ModelInfo.grammar),
whether an answer is tool calls or text is decided here, as a step of its own; the engine only generates.

1. The answer's first pieces are generated greedily, unconstrained, and held until they show a call (and to
   which tool) or text (`call_intent`): the model's likeliest start, whatever the answer's temperature. (A
   grammar over free text costs speed, and steering the first token away from the model's own way of
   starting a call, bare or fenced JSON, loses the call.)
2. For optional calls the model is asked whether a tool fits (chat/relevance.py), as small models reach for
   a tool whatever is asked, and as often write a call after a sentence of text: a clear fit (CALL_MARGIN)
   is calls whatever the start; a doubtful one (down to DOUBT_FLOOR) only where the model began a call (or
   the request follows tool results). Where the fit is doubtful or the model began text, the first call must
   also be whole and take a value from the user's message.
3. Calls are generated greedily under the call grammar (`_calls`), from the (cached) prompt, the first one to
   the tool the start named, and only whole calls go on (chat/calls.py). Text is generated again at the
   answer's temperature (where greedy, the held start goes on as it is); text where a call may not be made
   (tools shown for context only, a tool that was not offered or does not fit) only its first token kept
   from opening a call, as the grammar for the rest would cost the speed. Where the request also asks for a
   response format (JSON beside tools: an agent's structured final answer), text is always generated again,
   under that format's grammar (`Deferred.text`).
Every generation runs in the one scheduler job: the slot is kept between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Literal

from qwend.chat.calls import made_up, schema_values, whole_calls
from qwend.chat.parser import call_intent, called_name
from qwend.chat.relevance import CALL_MARGIN, DOUBT_FLOOR, fit
from qwend.engine.base import Backend, Finished, Generated, Piece, Prefill, Prompt, answer_limit
from qwend.engine.grammar import CALL_CLOSE, NO_CALL_START, TEXT_ONLY_START
from qwend.types import OutputConstraint, PromptProgress, SamplingParams

MAX_HELD_TOKENS = 6  # an answer's intent (call or text) shows within its first few tokens
MAX_NAME_TOKENS = 24  # and a call's tool name within these
# the first token of an answer generated again as text, where the model reached for a call it may not make
TEXT_AGAIN = OutputConstraint(grammar=TEXT_ONLY_START, grammar_tokens=1)
# the first token of a text answer decided greedily and generated again at its temperature (a code fence stays)
TEXT_SAMPLED = OutputConstraint(grammar=NO_CALL_START, grammar_tokens=1)

Choice = Literal["text", "calls", "text_again"]
Generation = Callable[[], AsyncIterator[Generated]]  # what the scheduler runs once the job is admitted


@dataclass(frozen=True)
class Deferred:
    """What deciding needs, rendered in the job only once it is needed (blocking: run off the event loop).
    `calls` gives the prompt calls are generated from (None: the answer's own); `judge` the questions whether
    a tool fits (chat/relevance.py)."""

    calls: Callable[[], Prompt | None] | None = None
    judge: Callable[[], tuple[Prompt, Prompt]] | None = None
    # the conversation without the tools: a text answer where no offered tool fits is generated from it (shown
    # tools it may not call, the model writes about them: "Here is the json object for the function call")
    plain: Callable[[], Prompt] | None = None
    said: str = ""  # the conversation's text: calls take their values from it (chat/calls.py)
    asked: str = ""  # the user's last message: a doubtful call must take a value from it
    # the request follows tool results: small models answer it from the old results instead of calling again,
    # so a doubtful fit is put to the first call's arguments whatever the answer began with
    follow_up: bool = False
    # the grammar of a text answer where the request asks for a response format beside its tools (JSON); a
    # text answer is then always generated again under it
    text: OutputConstraint | None = None


def generation(
    backend: Backend, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None,
    deferred: Deferred = Deferred(),
) -> Generation:
    """The job for `prompt`. `constraint` carries its grammar where the backend enforces one; other backends get
    it as a hint."""
    if constraint is not None and backend.info.grammar and constraint.tools:
        if constraint.calls == "required" and len(constraint.tools) == 1:  # nothing left to decide
            return lambda: _calls(backend, prompt, params, constraint, deferred.said)
        return _DecidedAnswer(backend, prompt, params, constraint, deferred).generate
    return lambda: backend.generate(prompt, params, constraint)


def _calls(
    backend: Backend, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint, said: str
) -> AsyncIterator[Generated]:
    """Calls, generated greedily under the call grammar: a call's arguments are read from the request (and a
    sampled first token sent small models into minutes of enumeration), whatever the answer's temperature."""
    named = [str(value) for tool in constraint.tools for value in schema_values(tool.parameters)]
    return whole_calls(backend.generate(prompt, replace(params, temperature=0.0), constraint),
                       "\n".join([said, *named]), constraint.tools)


def decide(held: str, tokens: int, constraint: OutputConstraint) -> Choice | None:
    """From an answer's first `tokens` tokens, `held`: "text" (go on as it is), "calls", "text_again", or None
    (unclear yet)."""
    intent = call_intent(held)
    if intent is None:
        return None if tokens < MAX_HELD_TOKENS else "text"
    if not intent:
        return "text"
    if constraint.calls == "none":  # tools shown for context only: a call-shaped start is redone as text
        return "text_again"
    name = called_name(held)
    if name is None:
        return None if tokens < MAX_NAME_TOKENS else "calls"
    return "calls" if any(t.name == name for t in constraint.tools) else "text_again"


@dataclass(frozen=True)
class _DecidedAnswer:
    backend: Backend
    prompt: Prompt
    params: SamplingParams
    constraint: OutputConstraint
    deferred: Deferred

    async def generate(self) -> AsyncIterator[Generated]:
        """Prefill, Pieces and one Finished, as one generation: the restarted one's own Prefill is left out
        (the prompt's reuse was reported), and so the answer's pieces never exceed `answer_limit`."""
        limit = answer_limit(self.prompt.length, self.params, self.backend.info.context_length)
        # greedy, so the decision does not depend on the answer's temperature; it may need more tokens than
        # max_tokens allows (the held ones are then cut here)
        deciding = replace(self.params, temperature=0.0)
        if self.params.max_tokens is not None and self.params.max_tokens < MAX_NAME_TOKENS:
            deciding = replace(deciding, max_tokens=MAX_NAME_TOKENS)
        sampled = self.params.temperature > 0  # the answer's text is generated again at its temperature
        required = self.constraint.calls == "required"  # the start only tells which tool the first call is to
        held: list[Piece] = []
        choice: Choice | None = None
        released = 0
        async with aclosing(self.backend.generate(self.prompt, deciding, None)) as answer:
            async for item in answer:
                if isinstance(item, (Prefill, PromptProgress)):
                    yield item
                    continue
                if isinstance(item, Finished):
                    if required:
                        break
                    if self.deferred.text is not None:  # ended while unclear: text, in the asked format
                        choice = "text"
                        break
                    for piece in held:  # the answer ended while still ambiguous: it was text
                        if piece.tokens and released >= limit:
                            break
                        released += piece.tokens
                        yield piece
                    yield item
                    return
                if choice is None:
                    held.append(item)
                    choice = decide("".join(p.text for p in held), sum(p.tokens for p in held), self.constraint)
                    if choice is None:
                        continue
                    if (choice != "text" or sampled or required or self.deferred.judge is not None
                            or self.deferred.text is not None):
                        break  # closes this generation, before the next one opens
                pieces, held = held or [item], []
                for piece in pieces:
                    if piece.tokens and released >= limit:
                        yield Finished("length")
                        return
                    released += piece.tokens
                    yield piece
                if released >= limit and deciding.max_tokens != self.params.max_tokens:
                    yield Finished("length")
                    return
        began_text = choice == "text"
        score = None if required or choice not in ("calls", "text") else await self._fit()
        if required:
            choice = "calls"
        elif score is not None and score < CALL_MARGIN and (
                score < DOUBT_FLOOR or (choice == "text" and not self.deferred.follow_up)):
            choice = "text_again" if choice == "calls" else "text"
        elif score is not None:
            choice = "calls"
        if choice == "calls":
            # rendered here, in the job, only now that it is needed (off the event loop: it takes a while)
            rendered = await asyncio.to_thread(self.deferred.calls) if self.deferred.calls else None
            prompt = rendered or replace(self.prompt, pin=False)
            constraint = await self._first_call_to(called_name("".join(p.text for p in held)))
            restarted = _calls(self.backend, prompt, self.params, constraint, self.deferred.said)
            if score is not None and (score < CALL_MARGIN or began_text):  # the call must show the fit
                restarted = self._unless_made_up(restarted)
        elif choice == "text_again":
            restarted = self._text_again()
        elif choice == "text":  # decided from the greedy start, which is generated again at the temperature
            restarted = self.backend.generate(replace(self.prompt, pin=False), self.params,
                                              self.deferred.text or TEXT_SAMPLED)
        else:
            return
        async with aclosing(restarted):
            async for item in restarted:
                if not isinstance(item, Prefill):
                    yield item

    async def _first_call_to(self, name: str | None) -> OutputConstraint:
        """The call grammar with its first call to the tool the model's own start named: forced into the
        grammar's `<tool_call>` form from the first token, small models pick a tool worse than they do in the
        form they reach for themselves (bare or fenced JSON)."""
        if name is None or all(t.name != name for t in self.constraint.tools) or len(self.constraint.tools) == 1:
            return self.constraint
        named = replace(self.constraint, first_call=name)
        return replace(named, grammar=await asyncio.to_thread(self.backend.grammar_for, named))

    async def _fit(self) -> float | None:
        """How clearly a tool fits the request, asked of the model (chat/relevance.py); None where it cannot
        be asked (no judge, or an engine that reports no log probabilities): the model's own start decides."""
        if self.deferred.judge is None or not self.backend.info.logprobs:
            return None
        return await fit(self.backend, await asyncio.to_thread(self.deferred.judge))

    async def _text_again(self) -> AsyncIterator[Generated]:
        plain = self.deferred.plain
        prompt = await asyncio.to_thread(plain) if plain else replace(self.prompt, pin=False)
        async with aclosing(self.backend.generate(prompt, self.params, self.deferred.text or TEXT_AGAIN)) as again:
            async for item in again:
                yield item

    async def _unless_made_up(self, calls: AsyncIterator[Generated]) -> AsyncIterator[Generated]:
        """`calls`, unless the first one is cut off, or its required arguments hold nothing the user's last
        message said (a tool that does not fit, called anyway: get_weather(city="New York") for "What is
        2 + 2?"): then text."""
        held: list[Generated] = []
        text = ""
        try:
            async for item in calls:
                held.append(item)
                text += item.text if isinstance(item, Piece) else ""
                if CALL_CLOSE.strip() in text or isinstance(item, Finished):
                    break
            if CALL_CLOSE.strip() in text and not made_up(text, self.constraint.tools, self.deferred.asked):
                for item in held:
                    yield item
                async for item in calls:
                    yield item
                return
        finally:
            await calls.aclose()
        async with aclosing(self._text_again()) as again:
            async for item in again:
                if not isinstance(item, Prefill):
                    yield item
