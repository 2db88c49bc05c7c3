"""The MLX backend (mlx-lm on this CPU): plumbing on the tiny random Qwen2, answers on the converted default
model."""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("mlx_lm")

from qwend.engine.base import Finished, Piece, Prefill, common_prefix  # noqa: E402
from qwend.engine.mlx import MlxBackend  # noqa: E402
from qwend.errors import BackendError  # noqa: E402
from qwend.models.store import LocalModel  # noqa: E402
from qwend.settings import Settings  # noqa: E402
from qwend.types import Message, SamplingParams  # noqa: E402

GREEDY = SamplingParams(temperature=0.0)


def load(path, **settings) -> MlxBackend:
    return MlxBackend.load(LocalModel("test", path), Settings(_env_file=None, backend="mlx", **settings))


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    backend = load(tiny_model_dir)
    yield backend
    backend.close()


async def collect(backend, prompt, params):
    return [item async for item in backend.generate(prompt, params)]


def text_of(items) -> str:
    return "".join(i.text for i in items if isinstance(i, Piece))


def tokens_of(items) -> int:
    return sum(i.tokens for i in items if isinstance(i, Piece))


def user(text: str) -> list[Message]:
    return [Message("user", text)]


def test_info_describes_the_folder(tiny, tiny_model_dir):
    info = tiny.info
    assert (info.engine, info.grammar, info.vision, info.chat_template) == ("mlx", False, False, True)
    assert info.context_length == info.trained_context_length == 4096
    assert info.vocab_size == 151936
    assert info.file_size == (tiny_model_dir / "model.safetensors").stat().st_size
    assert 1_000_000 < info.parameters < 50_000_000
    # Qwen's two end-of-turn tokens, though the folder names only <|im_end|> as eos
    assert {151643, 151645} <= tiny.tokenizer.eos_token_ids


def test_prompt_renders_the_template_without_added_tokens(tiny):
    prompt = tiny.prompt(user("hello"))
    assert prompt.text.endswith("<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.tokens[-3:] == (151644, 77091, 198)  # <|im_start|> assistant \n
    assert prompt.tokens.count(151644) == 3  # system, user, assistant: no BOS added


async def test_stream_shape_and_max_tokens(tiny):
    items = await collect(tiny, tiny.prompt(user("Say something.")), SamplingParams(temperature=0, max_tokens=5))
    assert isinstance(items[0], Prefill)
    assert items[-1] == Finished("length")
    assert all(isinstance(i, Piece) for i in items[1:-1])
    assert [i.tokens for i in items[1:-1]] == [1] * 5
    assert tokens_of(items) == 5


async def test_same_seed_same_text(tiny):
    prompt = tiny.prompt(user("Tell me a story."))
    params = SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=1234, max_tokens=12)
    first = text_of(await collect(tiny, prompt, params))
    await collect(tiny, tiny.prompt(user("Something else in between.")), params)
    second = text_of(await collect(tiny, prompt, params))
    other_seed = text_of(await collect(tiny, prompt, replace(params, seed=4321)))
    assert first and first == second
    assert other_seed != first  # near-uniform noise over 151k tokens: another seed shows in the text


async def test_cancel_after_two_pieces_then_generate_again(tiny):
    prompt = tiny.prompt(user("Count to one hundred."))
    stream = tiny.generate(prompt, SamplingParams(temperature=0, max_tokens=50))
    pieces = 0
    async for item in stream:
        pieces += isinstance(item, Piece)
        if pieces == 2:
            break
    await stream.aclose()  # sets the stop flag and waits until the MLX thread let go
    assert pieces == 2
    items = await collect(tiny, prompt, SamplingParams(temperature=0, max_tokens=3))
    assert items[0] == Prefill(len(prompt.tokens) - 1)  # the cancelled run's cache still serves the prompt
    assert tokens_of(items) == 3 and items[-1] == Finished("length")


async def test_prefix_cache_reuse(tiny):
    first = tiny.prompt(user("What is MLX?"))
    await collect(tiny, first, SamplingParams(temperature=0, max_tokens=4))
    # the tiny model's answer is noise; the next turn carries a real one (it starts a fresh token)
    follow_up = tiny.prompt([*user("What is MLX?"), Message("assistant", "An array framework."),
                             *user("And mlx-lm?")])
    items = await collect(tiny, follow_up, SamplingParams(temperature=0, max_tokens=2))
    cached = items[0].cached_tokens
    assert len(first.tokens) <= cached < len(follow_up.tokens)
    # a prompt that diverges early reuses only the shared start (the default system message)
    other = tiny.prompt(user("Something unrelated."))
    items = await collect(tiny, other, SamplingParams(temperature=0, max_tokens=2))
    assert items[0] == Prefill(common_prefix(follow_up.tokens, other.tokens))
    assert 0 < items[0].cached_tokens < len(other.tokens) and tokens_of(items) == 2


async def test_context_window_ends_with_length(tiny_model_dir):
    backend = load(tiny_model_dir, context_length=256)
    try:
        assert backend.info.context_length == 256
        prompt = backend.prompt(user("word " * 200))
        room = 256 - len(prompt.tokens)
        assert 0 < room < 40
        items = await collect(backend, prompt, GREEDY)  # max_tokens None: up to the window
        assert tokens_of(items) == room and items[-1] == Finished("length")
        too_long = backend.prompt(user("word " * 300))
        items = await collect(backend, too_long, GREEDY)
        assert isinstance(items[0], Prefill) and items[1:] == [Finished("length")]
    finally:
        backend.close()


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(BackendError, match="folders"):
        load(tmp_path / "model.gguf")


def test_a_folder_without_weights_fails_clearly(tmp_path, tiny_model_dir):
    (tmp_path / "config.json").write_bytes((tiny_model_dir / "config.json").read_bytes())
    with pytest.raises(BackendError, match="mlx could not load .*safetensors"):
        load(tmp_path)


@pytest.mark.real_model
async def test_real_model_answers_paris(hf_model_dir):
    backend = load(hf_model_dir)
    try:
        assert backend.info.parameters > 400_000_000
        prompt = backend.prompt(user("What is the capital of France? Answer in one word."))
        items = await collect(backend, prompt, SamplingParams(temperature=0, max_tokens=8))
        text = text_of(items)
        assert "Paris" in text
        assert "<|im_end|>" not in text and "<|endoftext|>" not in text
        assert items[-1] == Finished("stop")
    finally:
        backend.close()
