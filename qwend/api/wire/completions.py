"""OpenAI's text completions (`POST /v1/completions`): the wire model and pure translators."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

from pydantic import Field

from qwend.api.wire.openai import SYSTEM_FINGERPRINT, SamplingFields, StreamOptions, sampling_of
from qwend.errors import InvalidRequest
from qwend.types import ChatRequest, TokenLogprob, Usage


class CompletionBody(SamplingFields):
    model: str | None = None
    prompt: str | list[str] | list[int] | list[list[int]] = "<|endoftext|>"  # OpenAI's default prompt
    suffix: str | None = None
    echo: bool = False
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default; null: until the window ends
    n: int = Field(1, ge=1)
    best_of: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=5)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None


def to_chat_requests(body: CompletionBody, max_choices: int) -> list[ChatRequest]:
    """One request per choice, in OpenAI's order: each prompt's `n` choices in turn. Under a seed, the
    choices of one prompt get seeds seed, seed+1, ... so that they differ as unseeded ones do."""
    if isinstance(body.prompt, str):
        prompts = [body.prompt]
    elif all(isinstance(p, str) for p in body.prompt):
        prompts = list(body.prompt)
    else:
        raise InvalidRequest("prompt as token ids is not supported; send the text", param="prompt")
    if not prompts:
        raise InvalidRequest("prompt must hold at least one text", param="prompt")
    if body.logprobs is not None and body.echo:
        raise InvalidRequest("logprobs of an echoed prompt are not supported; send echo or logprobs",
                             param="logprobs")
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest("best_of other than n is not supported", param="best_of")
    if len(prompts) * body.n > max_choices:
        raise InvalidRequest(f"{len(prompts)} prompts x n={body.n} choices are more than the {max_choices} one "
                             "request may ask for (QWEND_MAX_CHOICES)", param="n")
    sampling = replace(sampling_of(body), logprobs=body.logprobs)
    requests = []
    for text in prompts:
        for j in range(body.n):
            seeded = sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + j)
            requests.append(ChatRequest((), model=body.model, sampling=seeded, text_prompt=text,
                                        suffix=body.suffix))
    return requests


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex[:24]}"


def choice_body(index: int, text: str, finish_reason: str | None,
                logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish_reason}


def logprobs_body(logprobs: tuple[TokenLogprob, ...], offset: int = 0) -> dict[str, Any]:
    """The completions API's older shape: parallel lists, `text_offset` counting characters of the text from
    `offset` (where this piece starts in the choice's text)."""
    offsets = []
    for entry in logprobs:
        offsets.append(offset)
        offset += len(entry.token)
    return {"tokens": [t.token for t in logprobs], "token_logprobs": [t.logprob for t in logprobs],
            "top_logprobs": [{token: logprob for token, logprob, _ in t.top} for t in logprobs],
            "text_offset": offsets}


def completion_body(cid: str, model: str, choices: list[dict[str, Any]], usage: Usage | None,
                    created: int | None = None) -> dict[str, Any]:
    """The answer, or (with one choice's piece) one chunk of the stream: both are `text_completion` objects."""
    body = {"id": cid, "object": "text_completion", "created": created or int(time.time()), "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                         "total_tokens": usage.total_tokens}
    return body
