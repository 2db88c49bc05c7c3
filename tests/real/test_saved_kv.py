"""Saved KV states on the real default model: conversations pushed out of a small context come back from the
RAM tier, and after a restart from the disk tier, reading only what is new and answering as without any cache;
a corrupt state file is discarded; a pinned prompt outlives everything else."""

from __future__ import annotations

from dataclasses import replace

import pytest

from qwend.engine.base import Finished, Piece, Prefill, Prompt
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message, SamplingParams

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0, max_tokens=12)
NAMES = ("Ada", "Bo", "Cy", "Di")
NOTES = " ".join(f"note{i}" for i in range(60))  # ~200 tokens a conversation: two fill the context


def load(model_path, data_dir, **settings) -> LlamaCppBackend:
    options = {"context_length": 512, "threads": 2, "parallel": 2, "cached_sequences": 4, **settings}
    return LlamaCppBackend.load(LocalModel("default", model_path), Settings(_env_file=None, data_dir=data_dir,
                                                                             **options))


async def answer(backend, prompt: Prompt) -> tuple[str, int]:
    """(text, cached prompt tokens)."""
    text, cached = [], 0
    async for item in backend.generate(prompt, GREEDY):
        match item:
            case Prefill(tokens):
                cached = tokens
            case Piece(piece):
                text.append(piece)
            case Finished():
                pass
    return "".join(text), cached


async def second_turns(backend) -> list[list[Message]]:
    """Four conversations' first turns, one after another (each pushes an older one out of the context), and
    their second questions."""
    histories = []
    for i, name in enumerate(NAMES):
        history = [Message("system", f"Conversation {i}. {NOTES}"), Message("user", f"My name is {name}. Reply OK.")]
        text, _ = await answer(backend, backend.prompt(history))
        histories.append(history + [Message("assistant", text), Message("user", "What is my name? One word.")])
    return histories


async def assert_answered_from_the_cache(backend, histories: list[list[Message]], expected: list[str]) -> None:
    """Each second turn reads at most a tenth of its prompt and answers as without any cache."""
    for history, wanted in zip(histories, expected):
        prompt = backend.prompt(history)
        text, cached = await answer(backend, prompt)
        assert cached >= 0.9 * len(prompt.tokens) and text == wanted


@pytest.fixture(scope="module")
def uncached_answers(model_path, tmp_path_factory):
    """What each second turn answers with no cache at all."""
    import asyncio

    async def run():
        backend = load(model_path, tmp_path_factory.mktemp("none"), prompt_cache=False)
        try:
            histories = await second_turns(backend)
            return histories, [(await answer(backend, backend.prompt(h)))[0] for h in histories]
        finally:
            backend.close()

    return asyncio.run(run())


async def test_pushed_out_conversations_come_back_from_ram_and_after_a_restart_from_disk(
        model_path, tmp_path, uncached_answers):
    histories, expected = uncached_answers
    backend = load(model_path, tmp_path)
    try:
        assert await second_turns(backend) == histories
        saved = backend.decoder.saved.states
        assert len(saved) >= 2 and all(state.data is not None for state in saved)  # in RAM, not on disk yet
        await assert_answered_from_the_cache(backend, histories, expected)
    finally:
        backend.close()
    assert len(list((tmp_path / "kv-cache").rglob("*.kv"))) == len(NAMES)  # stopping wrote them all to disk
    restarted = load(model_path, tmp_path)
    try:
        await assert_answered_from_the_cache(restarted, histories, expected)
    finally:
        restarted.close()


async def test_a_corrupt_state_file_is_discarded_and_the_prompt_read_again(model_path, tmp_path, uncached_answers):
    histories, expected = uncached_answers
    backend = load(model_path, tmp_path)
    try:
        await second_turns(backend)
    finally:
        backend.close()
    files = list((tmp_path / "kv-cache").rglob("*.kv"))
    for file in files:
        raw = bytearray(file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF  # inside the KV data: llama.cpp itself could not tell
        file.write_bytes(raw)
    restarted = load(model_path, tmp_path)
    try:
        text, cached = await answer(restarted, restarted.prompt(histories[0]))
        assert cached == 0 and text == expected[0]
        assert len([file for file in files if file.exists()]) == len(files) - 1  # the one it tried is gone
    finally:
        restarted.close()


async def test_a_pinned_prompt_stays_cached_whatever_comes_after(model_path, tmp_path):
    backend = load(model_path, tmp_path, kv_ram_mb=0, kv_disk_mb=0)  # nothing saved but pins
    system = [Message("system", f"You are a terse assistant. {NOTES}")]
    try:
        warm = backend.prompt(system + [Message("user", "Reply OK.")])
        await answer(backend, replace(warm, pin=True))
        for i in range(3):  # other conversations take the whole context
            await answer(backend, backend.prompt([Message("user", f"Story {i}: {NOTES}")]))
        prompt = backend.prompt(system + [Message("user", "What is 2 plus 2?")])
        _, cached = await answer(backend, prompt)
        assert cached >= len(backend.prompt(system).tokens) - 8  # the system prompt, up to the next turn's start
    finally:
        backend.close()
