"""The transformers backend: stream plumbing (cancel, seeds, lengths, KV reuse) on the tiny random Qwen2,
answers and the chat template on the real default model converted to a Hugging Face folder."""

import mmap
import struct
import threading
from pathlib import Path

import pytest

from qwend.engine.base import Finished, Piece, Prefill, Prompt
from qwend.engine.template import ChatTemplate
from qwend.engine.transformers import TransformersBackend
from qwend.errors import BackendError
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Message, SamplingParams, ToolSpec

HELLO = [Message("user", "Say hello.")]


def gguf_chat_template(path: Path) -> str:
    """The template llama.cpp renders with, read from the GGUF's metadata (gguf's GGUFReader takes ~15 s
    here to parse every field): a key is its uint64 length and name, then a uint32 type (8: string) and
    the string as a uint64 length and UTF-8 bytes."""
    key = b"tokenizer.chat_template"
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        found = data.find(struct.pack("<Q", len(key)) + key)
        assert found > 0, f"{path.name} has no chat template"
        at = found + 8 + len(key)
        kind, size = struct.unpack_from("<IQ", data, at)
        assert kind == 8
        return data[at + 12: at + 12 + size].decode("utf-8")


def load(path: Path, **settings) -> TransformersBackend:
    settings = Settings(_env_file=None, backend="transformers", threads=2, **settings)
    return TransformersBackend.load(LocalModel(path.name, path), settings)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    backend = load(tiny_model_dir)
    yield backend
    backend.close()


async def run(backend: TransformersBackend, prompt: Prompt, **params) -> list:
    return [item async for item in backend.generate(prompt, SamplingParams(**params))]


def pieces(items: list) -> list[Piece]:
    return [item for item in items if isinstance(item, Piece)]


def text(items: list) -> str:
    return "".join(piece.text for piece in pieces(items))


async def test_stream_shape_and_max_tokens(tiny):
    items = await run(tiny, tiny.prompt(HELLO), max_tokens=7, seed=1)
    assert isinstance(items[0], Prefill) and items[-1] == Finished("length")
    assert all(isinstance(item, Piece) for item in items[1:-1])
    assert sum(p.tokens for p in pieces(items)) == 7 and len([p for p in pieces(items) if p.tokens]) == 7
    assert tiny.info.engine == "transformers" and not tiny.info.grammar and tiny.info.context_length == 4096


async def test_same_seed_same_text_and_greedy_is_deterministic(tiny):
    prompt = tiny.prompt(HELLO)
    first, again, other = [text(await run(tiny, prompt, max_tokens=12, seed=s)) for s in (5, 5, 6)]
    assert first == again and first != other
    assert text(await run(tiny, prompt, max_tokens=6, temperature=0)) == text(
        await run(tiny, prompt, max_tokens=6, temperature=0, seed=9))


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
async def test_penalties_steer_greedy_decoding_off_used_tokens(tiny, penalty):
    prompt = tiny.prompt(HELLO)
    await run(tiny, prompt, max_tokens=8, temperature=0)
    plain = tiny._cached_ids[len(prompt.tokens):]  # the answer's tokens (all but the last)
    await run(tiny, prompt, max_tokens=8, temperature=0, **{penalty: 50.0})
    penalised = tiny._cached_ids[len(prompt.tokens):]
    assert len(set(plain)) < len(plain) and len(set(penalised)) == len(penalised) == 7


async def test_closing_the_stream_stops_the_worker(tiny):
    prompt = tiny.prompt(HELLO)
    stream = tiny.generate(prompt, SamplingParams(max_tokens=2000, seed=1))
    seen = [await anext(stream) for _ in range(3)]  # Prefill and two pieces
    assert isinstance(seen[0], Prefill) and all(isinstance(item, Piece) for item in seen[1:])
    await stream.aclose()  # returns once the worker has let go of the model
    held = len(tiny._cached_ids)
    assert held < len(prompt.tokens) + 2000  # it stopped well before max_tokens
    items = await run(tiny, prompt, max_tokens=3, seed=1)  # the model is free for the next job
    assert items[-1] == Finished("length") and len(pieces(items)) == 3


def test_a_stop_seen_between_tokens_finishes_cancelled(tiny):
    stop = threading.Event()
    items = []
    for item in tiny._generate_blocking(list(tiny.prompt(HELLO).tokens), SamplingParams(max_tokens=50), stop):
        items.append(item)
        if len(pieces(items)) == 2:
            stop.set()
    assert len(pieces(items)) == 2 and items[-1] == Finished("cancelled")


async def test_a_longer_prompt_reuses_the_cached_prefix(tiny):
    first = tiny.prompt(HELLO)
    await run(tiny, first, max_tokens=4, temperature=0)
    longer = tiny.prompt([*HELLO, Message("assistant", "Hello!"), Message("user", "Again, louder.")])
    assert longer.tokens[: len(first.tokens)] == first.tokens
    reused = await run(tiny, longer, max_tokens=6, temperature=0)
    assert len(first.tokens) <= reused[0].cached_tokens < len(longer.tokens)
    # a prompt that shares nothing evicts it; the answer from scratch is the one from the cropped cache
    await run(tiny, Prompt(tuple(tiny.tokenize("unrelated"))), max_tokens=1)
    fresh = await run(tiny, longer, max_tokens=6, temperature=0)
    assert fresh[0] == Prefill(0) and text(fresh) == text(reused)


async def test_the_context_window_ends_the_answer(tiny_model_dir):
    backend = load(tiny_model_dir, context_length=256)
    try:
        assert backend.info.context_length == 256 and backend.info.trained_context_length == 4096
        prompt = backend.prompt(HELLO)
        items = await run(backend, prompt, seed=3)  # no max_tokens: up to the window
        assert items[-1] == Finished("length")
        assert len([p for p in pieces(items) if p.tokens]) == 256 - len(prompt.tokens)
        too_long = Prompt(tuple(backend.tokenize("word " * 300)))
        assert await run(backend, too_long, max_tokens=5) == [Prefill(0), Finished("length")]
    finally:
        backend.close()


def test_pieces_never_split_a_character(tiny):
    from qwend.engine.transformers import _Detokenizer

    sample = "Grüße 🙂🦜 中文 — done"
    detokenizer = _Detokenizer(tiny.tokenizer)
    out = [detokenizer.add(token) for token in tiny.tokenize(sample)]
    assert "".join(out) + detokenizer.flush() == sample
    assert "" in out and not any("\ufffd" in piece for piece in out)  # some tokens held half a character


def test_a_path_that_is_not_a_model_folder_is_refused(tmp_path):
    with pytest.raises(BackendError, match="Hugging Face model folders"):
        load(tmp_path / "missing")


@pytest.fixture(scope="module")
def real(hf_model_dir):
    backend = load(hf_model_dir)
    yield backend
    backend.close()


@pytest.mark.real_model
async def test_real_model_answers(real):
    prompt = real.prompt([Message("user", "What is the capital of France? Answer in one word.")])
    items = await run(real, prompt, max_tokens=8, temperature=0)
    assert "Paris" in text(items) and items[-1] == Finished("stop")
    assert real.info.vocab_size == 151936 and real.info.parameters > 400_000_000


@pytest.mark.real_model
def test_real_model_renders_what_llama_cpp_renders(real, model_path):
    gguf_template = ChatTemplate(gguf_chat_template(model_path))
    messages = [Message("system", "Be brief."), Message("user", "What time is it?")]
    tools = [ToolSpec("clock", "The current time.")]
    assert real.render(messages, tools) == gguf_template.render(messages, tools)
    assert real.render(messages) == gguf_template.render(messages)
