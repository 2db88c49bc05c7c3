"""A hybrid model's conversations across turns and restarts, with the tiny random Qwen3.5 and Qwen3-Next of
tests/tiny_qwen3.py (3 recurrent layers beside 1 attention layer, as the real ones interleave them). A recurrent state
holds its sequence up to the last token only, so a turn goes on from where its slot ends or from a state saved
where an earlier prompt ended, in RAM or on disk: each turn's greedy answer must be what a fresh instance that
reads the whole conversation gives, and the cached tokens reported must be the ones that were not read."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from qwend.engine.base import Piece
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.models.store import LocalModel
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Message, SamplingParams
from tests.tiny_qwen3 import HYBRID_FILE, NEXT_FILE

pytest.importorskip("torch")

GREEDY = SamplingParams(temperature=0, max_tokens=16)
OPENING = Message("user", "Tell me about the sea, the ships on it and the people who sail them. " * 4)


@pytest.fixture(params=[HYBRID_FILE, NEXT_FILE], ids=["qwen3.5", "qwen3-next"])
def hybrid(request, tiny_qwen3_dir: Path) -> Path:
    return tiny_qwen3_dir / request.param


def load(model: Path, data: Path, **settings) -> LlamaCppBackend:
    return LlamaCppBackend.load(LocalModel(model.name, model), Settings(
        _env_file=None, data_dir=data, context_length=2048, threads=2, **settings))


def answer(backend: LlamaCppBackend, messages: list[Message]) -> tuple[int, str]:
    """(prompt tokens reused, the greedy answer)."""
    async def collect():
        return [item async for item in backend.generate(backend.prompt(messages), GREEDY)]

    items = asyncio.run(collect())
    return items[0].cached_tokens, "".join(i.text for i in items if isinstance(i, Piece))


def fresh_answer(model: Path, tmp_path: Path, messages: list[Message]) -> str:
    backend = load(model, tmp_path / "fresh", prompt_cache=False, kv_disk_mb=0)
    try:
        return answer(backend, messages)[1]
    finally:
        backend.close()


def test_the_model_is_hybrid_and_never_drafted_for(hybrid, tmp_path):
    backend = load(hybrid, tmp_path)
    try:
        assert backend.decoder.recurrent and not backend.decoder.drafts
        assert backend.decoder.saved.whole_only
    finally:
        backend.close()


def test_turns_go_on_from_the_saved_state_and_answer_as_a_fresh_read(hybrid, tmp_path):
    backend = load(hybrid, tmp_path / "data")
    conversation, lengths = [OPENING], []
    try:
        for turn in range(3):
            cached, said = answer(backend, conversation)
            length = backend.prompt(conversation).length
            assert said == fresh_answer(hybrid, tmp_path, conversation), f"turn {turn}"
            if lengths:  # at least all of the last prompt but its final token came from the cache
                assert lengths[-1] - 1 <= cached < length
            else:
                assert cached == 0
            lengths.append(length)
            conversation += [Message("assistant", said), Message("user", f"And what happened next, part {turn}?")]
    finally:
        backend.close()
    # after a restart the saved states come back from disk
    restarted = load(hybrid, tmp_path / "data")
    try:
        cached, said = answer(restarted, conversation)
        assert lengths[-1] - 1 <= cached < restarted.prompt(conversation).length
        assert said == fresh_answer(hybrid, tmp_path, conversation)
    finally:
        restarted.close()


def test_conversations_that_take_each_others_slots_come_back_exact(hybrid, tmp_path):
    # two slots for three conversations: each turn's slot is another conversation's, whose state is saved first
    backend = load(hybrid, tmp_path / "data", parallel=1, cached_sequences=2, kv_disk_mb=0)
    conversations = [[Message("user", f"Conversation {n}: " + OPENING.content)] for n in range(3)]
    try:
        for turn in range(2):
            for conversation in conversations:
                cached, said = answer(backend, conversation)
                assert said == fresh_answer(hybrid, tmp_path, conversation)
                assert cached > 0 or turn == 0
                conversation += [Message("assistant", said), Message("user", "Go on.")]
    finally:
        backend.close()


def test_sessions_report_the_cached_tokens_over_http(hybrid, tmp_path):
    from qwend.cli.local_server import serve_in_thread

    settings = Settings(_env_file=None, data_dir=tmp_path, models_dir=hybrid.parent, model=hybrid.name,
                        context_length=2048, threads=2)
    runtime = Runtime.create(settings)
    messages = [{"role": "user", "content": OPENING.content}]
    try:
        with serve_in_thread(runtime) as base:
            usages = []
            for turn in range(2):
                reply = httpx.post(f"{base}/v1/chat/completions", timeout=120, json={
                    "messages": messages, "temperature": 0, "max_tokens": 12}).json()
                usages.append(reply["usage"])
                messages += [reply["choices"][0]["message"], {"role": "user", "content": "Go on."}]
    finally:
        runtime.models.close()
    assert usages[0]["prompt_tokens_details"]["cached_tokens"] == 0
    assert usages[0]["prompt_tokens"] - 1 <= usages[1]["prompt_tokens_details"]["cached_tokens"] < usages[1][
        "prompt_tokens"]
