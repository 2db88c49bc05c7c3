"""Whether an offered tool fits the request: asked of the model itself, as a question of its own.

Small models handed tools reach for one whatever is asked ("What is 2 + 2?" with only get_weather became
get_weather(New York) 4 times in 4). Asked plainly whether one of the functions does what the user asks, the
same 0.5B model tells fitting requests from the rest well (ROC AUC 0.93 on `qwend eval tools`' cases), but
its yes/no odds lean on the wording of the functions. So they are read against the odds it gives a request
with no content ("contextual calibration", Zhao et al. 2021): a call is made only where the request fits
clearly better than nothing does. Both questions start with the same functions, so the second reads only its
last few tokens from the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import aclosing

from qwend.engine.base import Backend, Piece, Prompt
from qwend.types import Message, SamplingParams, TokenLogprob, ToolSpec

JUDGE_SYSTEM = "You decide whether a function can do what the user asks."
CONTENT_FREE = "Tell me something."
# How much likelier (log-odds of yes) the request is judged to fit than CONTENT_FREE, read on the default
# model over eval tools' cases: the two overlap (requests no tool fits: -0.1 on average, those one fits:
# 0.3; "Is it raining in Seattle?" with get_weather scored -0.03), so the judge is one of three signals:
# at CALL_MARGIN or more, calls whatever the answer began with; below DOUBT_FLOOR, no call; in between only
# a call the model began itself, and only where its arguments take a value from the conversation
# (chat/calls.py `made_up`).
CALL_MARGIN = 0.3
DOUBT_FLOOR = -0.1
ALTERNATIVES = 20  # the likeliest first tokens read: "yes" and "no" are among them
JUDGING = SamplingParams(temperature=0, max_tokens=1, logprobs=ALTERNATIVES)


def judge_prompts(backend: Backend, messages: Sequence[Message], tools: Sequence[ToolSpec]) -> tuple[Prompt, Prompt]:
    """The question for the request (its last user message, with the one before for context) and the same
    question for a request with no content (blocking: rendering and tokenizing)."""
    asked = user_messages(messages)
    request = asked[-1] if asked else ""
    if len(asked) > 1:
        request = f"{request}\n(Earlier the user asked: {asked[-2]})"
    # asked without reasoning (a thinking model's first token would be <think>, not yes or no)
    return (backend.prompt(_question(tools, request), thinking=False),
            backend.prompt(_question(tools, CONTENT_FREE), thinking=False))


def user_messages(messages: Sequence[Message]) -> list[str]:
    return [m.content for m in messages if m.role == "user" and m.content]


def _question(tools: Sequence[ToolSpec], request: str) -> tuple[Message, ...]:
    listed = "\n".join(f"- {t.name}({', '.join(t.parameters.get('properties') or {})}): {t.description}"
                       for t in tools)
    return (Message("system", JUDGE_SYSTEM), Message("user", (
        f"Functions:\n{listed}\n\nUser request: {request}\n\n"
        "Can one of these functions do exactly what the user asks? Answer yes or no.")))


async def fit(backend: Backend, prompts: tuple[Prompt, Prompt]) -> float:
    """How much better the request's question (prompts[0]) is judged to fit than the content-free one: the
    difference of their log-odds of yes (see CALL_MARGIN)."""
    request, content_free = [await _yes_odds(backend, prompt) for prompt in prompts]
    return request - content_free


async def _yes_odds(backend: Backend, prompt: Prompt) -> float:
    async with aclosing(backend.generate(prompt, JUDGING)) as answer:
        async for item in answer:
            if isinstance(item, Piece) and item.logprob is not None:
                return yes_odds(item.logprob)
    return 0.0


def yes_odds(first: TokenLogprob) -> float:
    """log P(yes) - log P(no) from the first token's alternatives (either word, any case or spacing); a word
    not among them counts as a little less likely than the least likely one that is."""
    seen = {first.token: first.logprob} | {text: logprob for text, logprob, _ in first.top}
    floor = min(seen.values()) - 1.0

    def likelihood(word: str) -> float:
        found = [logprob for text, logprob in seen.items() if text.strip().lower() == word]
        return math.log(sum(math.exp(p) for p in found)) if found else floor

    return likelihood("yes") - likelihood("no")
