"""Reasoning before the answer, for models that think in a <think> block first (ModelInfo.thinking): bounded by
the request's budget, and kept out of the grammar that shapes the answer.

Qwen3 writes `<think>…</think>` and then its answer (Qwen3.5's template opens the block itself). A grammar
over the whole output (tool calls, a JSON schema) would forbid the reasoning, and small Qwen models reason
for thousands of tokens. So where a budget is set or the answer is constrained, the reasoning is generated
first, free and at the answer's temperature, and passed on as it comes (the output parser reads it as
reasoning). At the budget it is closed with Qwen's own words for that (the Qwen3 report's thinking budget).
The answer is then generated from the prompt continued by the reasoning (whose KV state the slot still holds),
as it would have been without reasoning: decided, and under its grammar (chat/decide.py). An unconstrained
answer whose reasoning ends by itself, or that does not reason, goes on in the same generation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace

from qwend.chat.decide import Deferred, Generation, generation
from qwend.chat.parser import THINK_CLOSE, THINK_OPEN
from qwend.engine.base import Backend, Finished, Generated, Piece, Prefill, Prompt
from qwend.types import OutputConstraint, SamplingParams

# what the answer's reasoning is closed with at its budget: the Qwen3 technical report stops thinking with
# this sentence, the model having been trained to answer from an unfinished thought
EARLY_ANSWER = ("\n\nConsidering the limited time by the user, I have to give the solution based on the thinking "
                "directly now.\n</think>\n\n")
AFTER_CLOSE = "\n\n"  # between the closed block and the answer, as Qwen3's template writes a past turn
MAX_OPEN_TOKENS = 3  # an answer that reasons opens its block within its first tokens


def reasoning_first(
    backend: Backend, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None,
    deferred: Deferred, budget: int | None,
) -> Generation:
    """The job for `prompt` on a thinking model: its reasoning (`budget` tokens at most, None: unbounded), then
    the answer `generation` would give, under `constraint`."""
    return _Reasoned(backend, prompt, params, constraint, deferred, budget).generate


@dataclass
class _Progress:
    said: str = ""  # the reasoning so far, as the model wrote it (the answer is generated after it)
    generated: int = 0  # tokens generated, reasoning and all
    reasoned: int = 0  # tokens of reasoning (what the budget bounds)
    done: bool = False  # the whole answer came from the first generation


@dataclass(frozen=True)
class _Reasoned:
    backend: Backend
    prompt: Prompt
    params: SamplingParams
    constraint: OutputConstraint | None
    deferred: Deferred
    budget: int | None

    @property
    def constrained(self) -> bool:
        """The answer is generated under a grammar, so never in the reasoning's own generation."""
        return self.constraint is not None and self.backend.info.grammar

    async def generate(self) -> AsyncIterator[Generated]:
        progress = _Progress()
        async with aclosing(self._reasoning(progress)) as reasoning:
            async for item in reasoning:
                yield item
        if progress.done:
            return
        left = None if self.params.max_tokens is None else self.params.max_tokens - progress.generated
        if left is not None and left <= 0:
            yield Finished("length")
            return
        answer = await asyncio.to_thread(self._answer, progress.said, replace(self.params, max_tokens=left))
        async with aclosing(answer()) as rest:
            async for item in rest:
                if not isinstance(item, Prefill):
                    yield item

    async def _reasoning(self, progress: _Progress) -> AsyncIterator[Generated]:
        """The first generation, as far as the reasoning goes (all of it where nothing else is needed: `done`)."""
        opened = self.prompt.text.rstrip().endswith(THINK_OPEN)  # the template opened the block itself
        held: list[Piece] = []  # the first pieces, until they show whether the model opens a block
        first = self.backend.generate(self.prompt, self.params, None)
        async with aclosing(first):
            async for item in first:
                if isinstance(item, Finished) and held and self.constrained:
                    progress.generated = 0  # ended before it showed reasoning: the answer, from the start
                    return
                if not isinstance(item, Piece):  # Prefill, PromptProgress; or Finished: the answer ended here
                    for piece in held:
                        yield piece
                    held = []
                    yield item
                    progress.done = isinstance(item, Finished)
                    continue
                progress.generated += item.tokens
                pieces = [item]
                if not opened:
                    held.append(item)
                    start = "".join(p.text for p in held).lstrip()
                    if start.startswith(THINK_OPEN):
                        opened, pieces, held = True, held, []
                    elif THINK_OPEN.startswith(start) and len(held) < MAX_OPEN_TOKENS:
                        continue
                    elif self.constrained:  # no reasoning: the answer, from the start
                        progress.generated = 0
                        return
                    else:  # no reasoning, nothing to constrain: the generation goes on as it is
                        async for piece in _chained(held, first):
                            yield piece
                        progress.done = True
                        return
                for piece in pieces:
                    if self.budget is not None and progress.reasoned >= self.budget:
                        yield Piece(EARLY_ANSWER, tokens=0)
                        progress.said += EARLY_ANSWER
                        return
                    progress.said += piece.text
                    if THINK_CLOSE in progress.said:  # the model closed it: the answer follows
                        if not self.constrained:
                            async for rest in _chained([piece], first):
                                yield rest
                            progress.done = True
                            return
                        end = progress.said.index(THINK_CLOSE) + len(THINK_CLOSE)
                        yield replace(piece, text=piece.text[:len(piece.text) - (len(progress.said) - end)])
                        progress.said = progress.said[:end] + AFTER_CLOSE
                        return
                    yield piece
                    if THINK_OPEN not in piece.text:  # the opening tag is not reasoning
                        progress.reasoned += piece.tokens

    def _answer(self, said: str, params: SamplingParams) -> Generation:
        """The answer's generation after the reasoning `said` (blocking: tokenizing it)."""
        if not said:
            return generation(self.backend, self.prompt, params, self.constraint, self.deferred)
        continued = self.backend.continued(self.prompt, said)
        deferred = self.deferred
        if deferred.calls is not None:
            calls = deferred.calls
            deferred = replace(deferred, calls=lambda: _continued(self.backend, calls(), said))
        if deferred.plain is not None:
            plain = deferred.plain
            deferred = replace(deferred, plain=lambda: self.backend.continued(plain(), said))
        return generation(self.backend, continued, params, self.constraint, deferred)


async def _chained(pieces: list[Piece], rest: AsyncIterator[Generated]) -> AsyncIterator[Generated]:
    for piece in pieces:
        yield piece
    async for item in rest:
        yield item


def _continued(backend: Backend, prompt: Prompt | None, said: str) -> Prompt | None:
    return None if prompt is None else backend.continued(prompt, said)
