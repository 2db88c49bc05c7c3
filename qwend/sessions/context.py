"""Fitting a session's history into the model's window: what the model sees, and folding the oldest turns.

The model sees the profile's system prompt (with the latest summary appended), the turns not yet folded,
and the new message. When that does not fit the window minus the reply reserve, the oldest turns are
folded: replaced by a summary the model writes (or, with `context_overflow = "drop"`, by a note that they
were dropped). The system prompt and the newest message are never folded; the store keeps the folded
messages (marked) and the summary, so the history still shows everything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from qwend.engine.base import Prompt
from qwend.sessions.store import SessionStore, StoredMessage
from qwend.types import Message, SamplingParams, ToolSpec

log = logging.getLogger(__name__)

SUMMARY_TOKENS = 300  # room kept for the summary that replaces folded turns
SUMMARY_HEADER = "Summary of the earlier conversation:"
SUMMARIZE = (
    "Summarize the conversation below for the assistant who continues it. Keep every fact, name, number, "
    "decision and open question; drop pleasantries. At most 150 words, plain sentences."
)

# the backend's `prompt`: renders and tokenizes, which takes time with the history (run off the event loop)
PromptOf = Callable[[Sequence[Message], Sequence[ToolSpec]], Prompt]
# the model's answer to a summarizing request; the caller closes it over the chat pipeline (model, client)
Summarize = Callable[[tuple[Message, ...], SamplingParams], Awaitable[str]]


def model_view(system_prompt: str, stored: Sequence[StoredMessage]) -> list[Message]:
    """The messages the model is shown for a session: system (+ summary), then the unfolded turns."""
    summaries = [m.content for m in stored if m.role == "summary" and not m.folded]
    system = system_prompt
    if summaries:
        system = f"{system_prompt}\n\n{SUMMARY_HEADER}\n{summaries[-1]}".strip()
    view = [Message("system", system)] if system else []
    view += [as_message(m) for m in stored if not m.folded and m.role != "summary"]
    return view


def as_message(stored: StoredMessage) -> Message:
    return Message(
        stored.role, stored.content, name=stored.name, tool_calls=stored.tool_calls,
        tool_call_id=stored.tool_call_id, reasoning=stored.reasoning or None,
    )


async def fit_session(
    store: SessionStore, session_id: str, *, system_prompt: str, new_message: Message, tools: Sequence[ToolSpec],
    budget: int, context_length: int, prompt: PromptOf, summarize: Summarize, overflow: str,
) -> list[Message]:
    """The model's view of the session plus `new_message`, folding the oldest turns first if it is over `budget`
    (prompt tokens, measured with `prompt`). Folded turns become the text of `summarize`, or with `overflow`
    "drop" a note that they were dropped."""
    stored = await store.messages(session_id)
    view = model_view(system_prompt, stored) + [new_message]
    count = _counter(prompt, tools)
    if await count(view) <= budget:
        return view
    turns = _unfolded_turns(stored)
    if not turns:
        return view  # the new message alone is too long: the pipeline says so (400)
    for k in range(1, len(turns) + 1):
        kept = [m for turn in turns[k:] for m in turn]
        trial = model_view(system_prompt, kept) + [new_message]
        if await count(trial) + SUMMARY_TOKENS <= budget or k == len(turns):
            break
    folded = [m for turn in turns[:k] for m in turn]
    previous = [m.content for m in stored if m.role == "summary" and not m.folded]
    if overflow == "drop":
        text = f"({len(folded)} earlier messages were dropped to fit the context window.)"
    else:
        room = context_length - SUMMARY_TOKENS
        text = await _summary(summarize, previous[-1] if previous else "", folded, _counter(prompt, ()), room)
    summary = await store.fold(session_id, folded[-1].id, StoredMessage("summary", text))
    log.info("session %s: folded %d messages (%d turns) into a summary", session_id, len(folded), k)
    # what the store now holds unfolded, without reading it again: the new summary, then the kept turns
    return model_view(system_prompt, [summary, *kept]) + [new_message]


def _counter(prompt: PromptOf, tools: Sequence[ToolSpec]) -> Callable[[Sequence[Message]], Awaitable[int]]:
    """Prompt lengths, measured off the event loop (rendering and tokenizing take time with the history)."""
    async def count(messages: Sequence[Message]) -> int:
        return (await asyncio.to_thread(prompt, tuple(messages), tuple(tools))).length

    return count


def _unfolded_turns(stored: Sequence[StoredMessage]) -> list[list[StoredMessage]]:
    turns: dict[int, list[StoredMessage]] = {}
    for message in stored:
        if not message.folded and message.role != "summary":
            turns.setdefault(message.turn or 0, []).append(message)
    return list(turns.values())


async def _summary(
    summarize: Summarize, previous: str, folded: Sequence[StoredMessage],
    count: Callable[[Sequence[Message]], Awaitable[int]], room: int,
) -> str:
    lines = ([f"Earlier summary: {previous}"] if previous else []) + [
        f"{m.role}: {m.content}" for m in folded if m.content.strip()
    ]

    def messages() -> tuple[Message, ...]:
        return (Message("system", SUMMARIZE), Message("user", "\n".join(lines)))

    while len(lines) > 1 and await count(messages()) > room:
        lines.pop(1 if previous and len(lines) > 2 else 0)  # keep the earlier summary; drop the oldest lines
    return (await summarize(messages(), SamplingParams(temperature=0.2, max_tokens=SUMMARY_TOKENS - 50))).strip()
