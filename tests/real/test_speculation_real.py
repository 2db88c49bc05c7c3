"""N-gram speculation on the real default model: a code edit that copies its input drafts most of its tokens,
keeps the greedy answer it has without drafts, and reports what was drafted (OpenAI's usage, /metrics)."""

from __future__ import annotations

import httpx
import pytest

from qwend.engine.base import Finished, Piece
from qwend.types import Message, SamplingParams, Speculated
from tests.real.test_batching import load
from tests.real.test_metrics_real import scrape

pytestmark = pytest.mark.real_model

CODE = '''def summarize(orders):
    total = 0
    count = 0
    for order in orders:
        if order.get("status") != "paid":
            continue
        total += order["amount"]
        count += 1
    average = total / count if count else 0
    return {"total": total, "count": count, "average": average}
'''
EDIT = f"Rename the variable `average` to `mean_amount` in this code. Reply with the whole code only.\n\n```python\n{CODE}```"


@pytest.fixture(scope="module")
def backend(model_path):
    backend = load(model_path, parallel=2, cached_sequences=4)
    yield backend
    backend.close()


async def answer(backend, content: str, **sampling) -> tuple[str, Speculated]:
    """The greedy (unless `sampling` says) answer to `content`, and what was drafted for it."""
    params = SamplingParams(**{"temperature": 0, "max_tokens": 200, **sampling})
    text, speculated = [], Speculated()
    async for item in backend.generate(backend.prompt([Message("user", content)]), params):
        if isinstance(item, Piece):
            text.append(item.text)
        elif isinstance(item, Finished):
            speculated = item.speculated
    return "".join(text), speculated


async def test_a_greedy_edit_is_drafted_and_unchanged(backend):
    plain, none = await answer(backend, EDIT, draft_max=0)
    drafted, speculated = await answer(backend, EDIT)  # the model's default: drafts on
    assert none == Speculated() and "def summarize(orders):" in plain
    assert drafted == plain
    assert speculated.accepted >= 40 and speculated.accepted >= 0.5 * speculated.drafted, speculated


async def test_a_sampled_edit_is_drafted_too(backend):
    text, speculated = await answer(backend, EDIT, temperature=0.7, seed=3)
    assert "def summarize" in text and speculated.accepted > 0, (text, speculated)


def test_usage_and_metrics_count_the_drafts(daemon):
    with httpx.Client(base_url=daemon, timeout=300) as client:
        model = client.get("/health").json()["model"]
        _, before = scrape(client)
        reply = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": EDIT}], "temperature": 0, "max_tokens": 200})
        assert reply.status_code == 200, reply.text
        details = reply.json()["usage"]["completion_tokens_details"]
        _, after = scrape(client)
        off = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": EDIT}], "temperature": 0, "max_tokens": 20, "draft_max": 0})
    assert details["accepted_prediction_tokens"] > 20 and details["rejected_prediction_tokens"] >= 0
    key = ("qwend_draft_accepted_tokens_total", (("model", model),))
    assert after[key] - before.get(key, 0) == details["accepted_prediction_tokens"]
    assert off.json()["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] == 0
