"""OpenAI text completions: `POST /v1/completions` (JSON and SSE). A translator, nothing more: each choice is
one ChatRequest with a text prompt through the one pipeline, the choices of a request run side by side."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from qwend.api.answer import answer
from qwend.api.deps import RequesterDep, RuntimeDep
from qwend.api.jsonbody import JsonRoute
from qwend.api.streaming import fold_choices, merged, open_streams
from qwend.api.wire import completions as wire
from qwend.api.wire.openai import OPENAI, finish_reason
from qwend.types import ChatEvent, ChatRequest, Done, Started, Token, Usage

router = APIRouter(route_class=JsonRoute.answering(OPENAI), prefix="/v1", tags=["OpenAI"])


@router.post("/completions", summary="Create a text completion (OpenAI): prompt(s), suffix (fill-in-the-middle), "
             "echo, stop, n, stream")
async def create_completion(body: wire.CompletionBody, request: Request, runtime: RuntimeDep, who: RequesterDep):
    choices = [who.attach(r) for r in wire.to_chat_requests(body, runtime.settings.max_choices)]
    streams = await open_streams(runtime, choices)  # every choice, so that one that fails closes the others
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return await answer(request, OPENAI, merged(streams), stream=body.stream,
                        frames=lambda pairs: _chunks(pairs, choices, body, include_usage),
                        fold=lambda pairs: _completion(pairs, choices, body))


async def _completion(pairs: AsyncIterator[tuple[int, ChatEvent]], choices: list[ChatRequest],
                      body: wire.CompletionBody) -> dict[str, Any]:
    results = await fold_choices(pairs, len(choices))
    bodies = [wire.choice_body(i, _echoed(choices[i], body.echo) + r.text, finish_reason(r.finish_reason),
                               None if body.logprobs is None else wire.logprobs_body(r.logprobs))
              for i, r in enumerate(results)]
    return wire.completion_body(wire.completion_id(), results[0].model, bodies,
                                _usage(choices, [r.usage for r in results]))


def _echoed(choice: ChatRequest, echo: bool) -> str:
    return choice.text_prompt if echo else ""


def _usage(choices: list[ChatRequest], usages: list[Usage]) -> Usage:
    """The prompt counted once per prompt (not per choice), every choice's answer counted."""
    by_prompt = {choice.text_prompt: usage.prompt_tokens for choice, usage in zip(choices, usages)}
    return Usage(sum(by_prompt.values()), sum(u.completion_tokens for u in usages))


async def _chunks(pairs: AsyncIterator[tuple[int, ChatEvent]], choices: list[ChatRequest],
                  body: wire.CompletionBody, include_usage: bool) -> AsyncIterator[dict[str, Any]]:
    cid, created, model = wire.completion_id(), int(time.time()), ""
    usages: list[Usage] = [Usage(0, 0)] * len(choices)
    written = [0] * len(choices)  # characters of each choice's text sent so far (logprobs' text_offset)

    def chunk(index: int, text: str, finish: str | None = None, logprobs=None) -> dict[str, Any]:
        written[index] += len(text)
        choice = wire.choice_body(index, text, finish, logprobs)
        return wire.completion_body(cid, model, [choice], None, created)

    async for index, event in pairs:
        match event:
            case Started(name, _):
                model = name
                if body.echo:
                    yield chunk(index, choices[index].text_prompt)
            case Token(text, logprobs):
                offsets = None if body.logprobs is None else wire.logprobs_body(logprobs, written[index])
                yield chunk(index, text, logprobs=offsets)
            case Done(reason, usage):
                usages[index] = usage
                yield chunk(index, "", finish_reason(reason))
    if include_usage:
        yield wire.completion_body(cid, model, [], _usage(choices, usages), created)
