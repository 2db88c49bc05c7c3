"""What one chat job generates, and under which grammar: on engines that enforce grammars (ModelInfo.grammar),
whether an answer is tool calls or text is decided here, from its first pieces; the engine only generates.

An optional call starts unconstrained: a grammar over free text costs ~35% decode speed, and steering the
model's first token away from its own way of starting a call (bare or fenced JSON) loses the call. So the
answer's first pieces are held until they show a call or text (`call_intent`). Text goes on as it is. A call
is generated again from the (cached) prompt under the call grammar; a call where none may be made (tools shown
for context only, or a tool that was not offered) is generated again as text, only its first token kept from
opening a call (the grammar for the rest would cost the speed). Every generation runs in the one scheduler
job: the slot is kept between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Literal

from qwend.chat.parser import call_intent, called_name
from qwend.engine.base import Backend, Finished, Generated, Piece, Prefill, Prompt, answer_limit
from qwend.engine.grammar import TEXT_ONLY_START
from qwend.types import OutputConstraint, SamplingParams

MAX_HELD_TOKENS = 6  # an answer's intent (call or text) shows within its first few tokens
MAX_NAME_TOKENS = 24  # and a call's tool name within these
# the first token of an answer generated again as text, where the model reached for a call it may not make
TEXT_AGAIN = OutputConstraint(grammar=TEXT_ONLY_START, grammar_tokens=1)

Choice = Literal["text", "calls", "text_again"]
Generation = Callable[[], AsyncIterator[Generated]]  # what the scheduler runs once the job is admitted


def generation(
    backend: Backend, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None,
    calls_prompt: Callable[[], Prompt | None] | None = None,
) -> Generation:
    """The job for `prompt`. `constraint` carries its grammar where the backend enforces one; other backends get
    it as a hint. `calls_prompt` (blocking) renders the prompt that optional calls are generated from once they
    are decided on; without one, or where it gives None, they come from `prompt`."""
    if constraint is not None and backend.info.grammar and constraint.tools and constraint.calls != "required":
        return _DecidedAnswer(backend, prompt, params, constraint, calls_prompt).generate
    return lambda: backend.generate(prompt, params, constraint)


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
    calls_prompt: Callable[[], Prompt | None] | None

    async def generate(self) -> AsyncIterator[Generated]:
        """Prefill, Pieces and one Finished, as one generation: the restarted one's own Prefill is left out
        (the prompt's reuse was reported), and so the answer's pieces never exceed `answer_limit`."""
        limit = answer_limit(self.prompt.length, self.params, self.backend.info.context_length)
        # a decision may need more tokens than max_tokens allows: the held ones are then cut here
        deciding = self.params
        if self.params.max_tokens is not None and self.params.max_tokens < MAX_NAME_TOKENS:
            deciding = replace(self.params, max_tokens=MAX_NAME_TOKENS)
        held: list[Piece] = []
        choice: Choice | None = None
        released = 0
        async with aclosing(self.backend.generate(self.prompt, deciding, None)) as answer:
            async for item in answer:
                if isinstance(item, Prefill):
                    yield item
                    continue
                if isinstance(item, Finished):
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
                    if choice != "text":
                        break  # closes this generation, before the next one opens
                pieces, held = held or [item], []
                for piece in pieces:
                    if piece.tokens and released >= limit:
                        yield Finished("length")
                        return
                    released += piece.tokens
                    yield piece
                if released >= limit and deciding is not self.params:
                    yield Finished("length")
                    return
        if choice == "calls":
            # rendered here, in the job, only now that it is needed (off the event loop: it takes a while)
            rendered = await asyncio.to_thread(self.calls_prompt) if self.calls_prompt else None
            prompt = rendered or replace(self.prompt, pin=False)
            restarted = self.backend.generate(prompt, self.params, self.constraint)
        elif choice == "text_again":
            restarted = self.backend.generate(replace(self.prompt, pin=False), self.params, TEXT_AGAIN)
        else:
            return
        async with aclosing(restarted):
            async for item in restarted:
                if not isinstance(item, Prefill):
                    yield item
