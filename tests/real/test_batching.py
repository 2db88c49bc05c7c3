"""The llama.cpp batch decoder on the real default model: the same greedy tokens as llama-cpp-python alone
and with or without the prompt cache; answers batched together stay apart; conversations that come back
read only what is new; and sessions never see each other's state."""

from __future__ import annotations

import asyncio

import llama_cpp
import pytest
from llama_cpp import Llama

from qwend.engine.base import Finished, Piece, Prefill
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message, SamplingParams

pytestmark = pytest.mark.real_model

GREEDY = SamplingParams(temperature=0, max_tokens=24)
QUESTIONS = ["Name three colours.", "What is 12 times 12?", "Write a haiku about rain."]


def load(model_path, **settings) -> LlamaCppBackend:
    options = {"context_length": 4096, "threads": 2, "kv_disk_mb": 0, **settings}  # nothing left on disk
    return LlamaCppBackend.load(LocalModel("default", model_path), Settings(_env_file=None, **options))


@pytest.fixture(scope="module")
def backend(model_path):
    backend = load(model_path, parallel=4, cached_sequences=8)
    yield backend
    backend.close()


async def answer(backend, messages: list[Message], params: SamplingParams = GREEDY) -> tuple[str, int, str]:
    """(text, cached prompt tokens, finish reason)."""
    text, cached, reason = [], None, None
    async for item in backend.generate(backend.prompt(messages), params):
        match item:
            case Prefill(tokens):
                cached = tokens
            case Piece(piece):
                text.append(piece)
            case Finished(why):
                reason = why
    return "".join(text), cached, reason


def ask(question: str) -> list[Message]:
    return [Message("user", question)]


def direct_greedy(model_path, backend, messages: list[Message], max_tokens: int) -> str:
    llama = Llama(str(model_path), n_ctx=4096, n_threads=2, flash_attn=True, verbose=False)
    try:
        tokens = []
        for token in llama.generate(list(backend.prompt(messages).tokens), temp=0):
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token) or len(tokens) == max_tokens:
                break
            tokens.append(token)
        return llama.detokenize(tokens).decode()
    finally:
        llama.close()


async def test_greedy_answers_equal_llama_cpp_python_alone(backend, model_path):
    for question in QUESTIONS:
        ours, _, _ = await answer(backend, ask(question))
        assert ours == direct_greedy(model_path, backend, ask(question), GREEDY.max_tokens)


async def test_batched_answers_each_answer_their_own_question(backend):
    """Six questions at once (four run, two wait): each answer is its own question's. (Batched, llama.cpp's
    matrix kernels round differently than for one sequence, so a greedy answer's wording may change.)"""
    questions = {"What is 12 times 12? Answer with the number only.": "144",
                 "What is the capital of France? One word.": "paris",
                 "Say hello in French. One word.": "bonjour",
                 "What is 7 plus 8? Answer with the number only.": "15",
                 "What colour is a clear daytime sky? One word.": "blue",
                 "What is the capital of Japan? One word.": "tokyo"}
    answers = await asyncio.gather(*(answer(backend, ask(q)) for q in questions))
    for (text, _, reason), expected in zip(answers, questions.values()):
        assert expected in text.lower() and reason == "stop"


async def test_the_next_turn_reads_only_what_is_new_and_answers_as_without_the_cache(backend, model_path):
    history = ask("Remember the number 7. Reply with OK.")
    first, _, _ = await answer(backend, history)
    history += [Message("assistant", first), Message("user", "Which number did I ask you to remember?")]
    length = len(backend.prompt(history).tokens)
    second, cached, _ = await answer(backend, history)
    assert cached >= 0.6 * length  # all but the new question (and the answer's closing tokens)
    uncached = load(model_path, prompt_cache=False)
    try:
        again, none, _ = await answer(uncached, history)
    finally:
        uncached.close()
    assert none == 0 and again == second


async def test_interleaved_conversations_keep_their_own_cache(backend):
    """Six conversations (more than run at once) come back together after the others' turns: each finds its
    own history still cached and answers from it, never from another's."""
    names = ("Ada", "Bo", "Cy", "Di", "Ed", "Flo")
    histories = [ask(f"My name is {name}. Reply with OK.") for name in names]
    for history in histories:
        text, _, _ = await answer(backend, history)
        history += [Message("assistant", text), Message("user", "What is my name? One word.")]
    results = await asyncio.gather(*(answer(backend, h) for h in histories))
    for name, history, (text, cached, _) in zip(names, histories, results):
        assert cached > len(backend.prompt(history[:1]).tokens)  # its first message and the answer
        assert name in text and not any(other in text.split() for other in names if other != name)


async def test_a_closed_stream_frees_its_sequence_at_once(backend):
    generation = backend.generate(backend.prompt(ask("Count from 1 to 500.")), SamplingParams(max_tokens=400))
    async for item in generation:
        if isinstance(item, Piece):
            break
    await generation.aclose()
    text, _, reason = await answer(backend, ask("Say OK."), SamplingParams(temperature=0, max_tokens=4))
    assert text and reason in ("stop", "length")


async def test_a_full_context_evicts_idle_conversations(model_path):
    small = load(model_path, context_length=512, parallel=2, cached_sequences=4)
    try:
        for i in range(6):  # ~6 × 150 cells: more than the window holds
            text, _, reason = await answer(small, ask(f"Story {i}: write about a cat named {i}."),
                                           SamplingParams(temperature=0, max_tokens=120))
            assert text and reason in ("stop", "length")
    finally:
        small.close()


async def test_a_short_prompt_behind_a_long_one_starts_after_about_one_chunk(backend, monkeypatch):
    """A short request arriving while a ~4,000-token prompt is read gets short steps of its own: its first
    token is sampled before the long prompt has read much more than the chunk under way."""
    from qwend.engine.llama_batch import PREFILL_WHILE_DECODING

    decoder, read_then = backend.decoder, []
    sample = decoder._sample

    def watched(stream, index):  # how far the long prompt was read when the short one's first token came
        if len(stream.prompt) < 100 and not read_then:
            read_then.extend(len(s.prompt) - len(s.pending) for s in decoder._running if len(s.prompt) > 1000)
        return sample(stream, index)

    monkeypatch.setattr(decoder, "_sample", watched)
    notes = " ".join(f"Note {i}: the harbour had {i * 7 % 31} boats." for i in range(300))
    long = asyncio.create_task(answer(backend, ask(notes), SamplingParams(temperature=0, max_tokens=1)))
    while not any(len(s.pending) > 1000 for s in decoder._running):
        await asyncio.sleep(0.005)
    text, _, _ = await answer(backend, ask("Say hi."), SamplingParams(temperature=0, max_tokens=1))
    await long
    assert text and len(read_then) == 1
    # the chunk under way (with a cached start), then steps of the short prompt plus at most 128 of the long
    assert read_then[0] <= decoder.n_batch + 64 + 2 * PREFILL_WHILE_DECODING, read_then
