"""A scripted backend for unit tests of the scheduler and wire encoders (never used by the daemon)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence

from qwend.engine.base import Embedded, Finished, Generated, ModelInfo, Piece, Prefill, Prompt, TemplatedPrompts
from qwend.engine.specials import ControlTexts
from qwend.types import Message, OutputConstraint, SamplingParams, TokenLogprob, ToolSpec


class FakeBackend(TemplatedPrompts):
    """Tokenizes by characters and answers with `reply`, one word-piece per `delay` seconds. With `replies`,
    each generation answers with the next one in turn (the last repeats), for multi-step loops."""

    def __init__(
        self, reply: str = "Hello there, friend.", *, delay: float = 0.0, context_length: int = 512,
        replies: Sequence[str] = (), embeddings: bool = False, logprobs: bool = False,
    ):
        self.reply = reply
        self.replies = list(replies)
        self.prompts: list[str] = []  # every rendered prompt, in order, for tests to inspect
        self.generated: list[Prompt] = []  # every Prompt generated from, in order
        self.sampled: list[SamplingParams] = []  # and the sampling of each
        self.delay = delay
        self.info = ModelInfo(context_length, context_length, 256, 1000, 1, True, embeddings=embeddings,
                              logprobs=logprobs)
        self.active = 0  # generations currently running; the scheduler must keep this <= 1
        self.max_active = 0
        self.stopped_early = 0
        self.controls = ControlTexts(())

    async def embed(self, texts: Sequence[str]) -> Embedded:
        """Letter counts (a to z) made unit length: texts with the same letters point the same way."""
        vectors = []
        for text in texts:
            counts = [text.lower().count(chr(ord("a") + i)) + 0.01 for i in range(26)]
            norm = math.sqrt(sum(c * c for c in counts))
            vectors.append([c / norm for c in counts])
        return Embedded(vectors, sum(len(t) for t in texts))

    def grammar_for(self, constraint: OutputConstraint) -> str:
        """Asked only where a test sets `info.grammar`: llama.cpp's grammar, never parsed here."""
        from qwend.engine.grammar import for_constraint

        return for_constraint(constraint)

    def tokenize(self, text: str, special: bool = True, bos: bool = True) -> list[int]:
        return [ord(c) % 256 for c in text]

    def render(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *, thinking: bool | None = None
    ) -> str:
        prompt = "".join(f"<{m.role}>{m.content}" for m in messages) + "<assistant>"
        if thinking is False and self.info.thinking:  # as Qwen3's template: switched off, an empty block
            prompt += "<think>\n\n</think>\n\n"
        self.prompts.append(prompt)
        return prompt

    async def generate(
        self, prompt: Prompt, params: SamplingParams, constraint: OutputConstraint | None = None
    ) -> AsyncIterator[Generated]:
        self.generated.append(prompt)
        self.sampled.append(params)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        if self.replies:
            self.reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        pieces = [w + " " for w in self.reply.split(" ")]
        pieces[-1] = pieces[-1].rstrip()
        limit = params.max_tokens or len(pieces)
        done = False
        try:
            yield Prefill(0)
            for piece in pieces[:limit]:
                await asyncio.sleep(self.delay)
                # each word-piece is "a token" whose log probability is -0.5, its alternative "x" -2.0
                logprob = None if params.logprobs is None else TokenLogprob(
                    piece, -0.5, tuple(piece.encode()), ((piece, -0.5, tuple(piece.encode())), ("x", -2.0, (120,)))[
                        :params.logprobs])
                yield Piece(piece, logprob=logprob)
            done = True
            yield Finished("stop" if limit >= len(pieces) else "length")
        finally:
            self.active -= 1
            if not done:
                self.stopped_early += 1

    def close(self) -> None:
        pass
