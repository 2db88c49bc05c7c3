"""Folding a session's oldest turns (sessions/context.py) on its own, with the narrow things its caller hands
it: the view it returns is the one the store holds afterwards, no prompt is measured twice, and the model is
asked for the summary the way it always was."""

import pytest

from qwend.sessions.context import SUMMARIZE, fit_session, model_view
from qwend.sessions.store import StoredMessage
from qwend.types import Message
from tests.conftest import fake_runtime
from tests.fakes import FakeBackend

SYSTEM = "Be brief."


@pytest.mark.parametrize("overflow", ["summarize", "drop"])
async def test_a_fold_returns_the_view_the_store_then_holds(tmp_path, overflow):
    backend = FakeBackend(context_length=2000)  # character tokens
    store = fake_runtime(tmp_path, backend).sessions
    session = await store.create("default")
    measured: list[tuple[Message, ...]] = []
    asked = []

    def prompt(messages, tools, thinking=None):
        measured.append(tuple(messages))
        return backend.prompt(messages, tools, thinking=thinking)

    async def summarize(messages, sampling):
        asked.append((messages, sampling))
        return f"  summary {len(asked)}: the user asked questions.  "

    async def turn(number: int) -> list[Message]:
        new = Message("user", f"question {number}")
        view = await fit_session(store, session.id, system_prompt=SYSTEM, new_message=new, tools=(), budget=700,
                                 context_length=2000, prompt=prompt, summarize=summarize, overflow=overflow)
        assert view == model_view(SYSTEM, await store.messages(session.id)) + [new]
        assert len(measured) == len(set(measured))  # no prompt rendered and tokenized twice
        await store.append_turn(session.id, [StoredMessage("user", new.content + " " + "x" * 80),
                                             StoredMessage("assistant", f"answer {number} " + "y" * 80)])
        return view

    views = [await turn(n) for n in range(8)]
    stored = await store.messages(session.id)
    summaries = [m for m in stored if m.role == "summary"]
    assert len(summaries) >= 2 and sum(not m.folded for m in summaries) == 1  # folded more than once
    if overflow == "summarize":
        assert views[-1][0].content.endswith(f"summary {len(asked)}: the user asked questions.")  # stripped
        assert len(asked) == len(summaries)
        messages, sampling = asked[-1]
        assert messages[0] == Message("system", SUMMARIZE) and messages[1].content.startswith("Earlier summary: ")
        assert (sampling.temperature, sampling.max_tokens) == (0.2, 250)
    else:
        assert not asked and "earlier messages were dropped" in views[-1][0].content
