"""The chat pipeline: the one path from a ChatRequest to a stream of ChatEvents, for every protocol.

Errors that make a request unservable (unknown model, bad body, context overflow, queue full) are raised
before the first event, so adapters can still answer with a proper HTTP status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

from qwend.chat.stops import StopMatcher
from qwend.engine.base import Finished, Piece, Prefill
from qwend.engine.scheduler import Admitted, Waiting
from qwend.errors import ContextOverflow, InvalidRequest
from qwend.runtime import Runtime
from qwend.types import ChatEvent, ChatRequest, Done, FinishReason, Queued, SamplingParams, Started, Token, Usage


async def chat(runtime: Runtime, request: ChatRequest) -> AsyncIterator[ChatEvent]:
    """Queued* Started Token* Done. Closing the iterator cancels the job wherever it is."""
    if not request.messages:
        raise InvalidRequest("messages must hold at least one message", param="messages")
    loaded = await runtime.models.get(request.model)
    backend = loaded.backend
    prompt = backend.tokenize(backend.render(request.messages))
    check_fits(len(prompt), request.sampling, backend.info.context_length)

    stops = StopMatcher(request.sampling.stop)
    completion_tokens, cached_tokens = 0, 0
    finish: FinishReason = "stop"
    async with aclosing(loaded.scheduler.run(prompt, request.sampling)) as job:
        async for item in job:
            match item:
                case Waiting(position):
                    yield Queued(position)
                case Admitted():
                    yield Started(loaded.name, len(prompt))
                case Prefill(cached):
                    cached_tokens = cached
                case Piece(text, tokens):
                    completion_tokens += tokens
                    text, hit = stops.feed(text)
                    if text:
                        yield Token(text)
                    if hit:
                        break  # leaving the block closes the job, which stops the backend
                case Finished(reason):
                    finish = reason
                    if tail := stops.flush():
                        yield Token(tail)
    yield Done(finish, Usage(len(prompt), completion_tokens, cached_tokens))


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


async def complete(events: AsyncIterator[ChatEvent]) -> Completion:
    """Fold a chat stream into one answer: the non-streaming responses use the same events."""
    model, parts = "", []
    async with aclosing(events):
        async for event in events:
            match event:
                case Started(name, _):
                    model = name
                case Token(text):
                    parts.append(text)
                case Done(reason, usage):
                    return Completion(model, "".join(parts), reason, usage)
    raise AssertionError("a chat stream ended without Done")
