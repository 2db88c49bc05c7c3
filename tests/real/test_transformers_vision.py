"""Images on the transformers backend, on a tiny random Qwen2.5-VL folder (tests/tiny_model.py): loading with
its image processor, placeholder expansion, generation with pixels, KV reuse, bad images, and a real daemon.
Its text is noise; what is checked is plumbing, and that our forwards compute what the model's own does."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
import torch
from PIL import Image as Pillow

from qwend.engine import transformers as engine
from qwend.engine.base import Finished, Piece, Prefill
from qwend.engine.transformers_vision import TransformersImages, _Sequence
from qwend.errors import InvalidRequest
from qwend.models.store import LocalModel
from qwend.settings import Settings
from qwend.types import Image, Message, SamplingParams
from tests.conftest import Daemon

QUESTION = "What is in the picture?"


def png(width: int, height: int, seed: int = 0) -> Image:
    """A PNG of random pixels (equal seeds, equal files)."""
    noise = torch.rand(height, width, 3, generator=torch.Generator().manual_seed(seed))
    out = io.BytesIO()
    Pillow.fromarray((noise * 255).byte().numpy()).save(out, "PNG")
    return Image(out.getvalue(), "image/png")


def image_tokens(width: int, height: int) -> int:
    """<|vision_start|>, one <|image_pad|> per 2x2 merged 14-pixel patches, <|vision_end|> (sides that are
    multiples of 28 are not resized)."""
    return 2 + (width // 28) * (height // 28)


@pytest.fixture(scope="module")
def vision(tiny_vision_model_dir):
    settings = Settings(_env_file=None, backend="transformers", threads=2)
    backend = engine.TransformersBackend.load(LocalModel(tiny_vision_model_dir.name, tiny_vision_model_dir), settings)
    yield backend
    backend.close()


async def run(backend, prompt, **params) -> list:
    return [item async for item in backend.generate(prompt, SamplingParams(**params))]


def test_a_qwen_vl_folder_loads_as_a_vision_model(vision):
    assert isinstance(vision.images, TransformersImages)
    info = vision.info
    assert (info.vision, info.engine, info.chat_template, info.context_length) == (True, "transformers", True, 4096)
    assert type(vision.images.processor).__name__ == "Qwen2VLImageProcessorPil"  # no torchvision needed


def test_each_image_adds_tokens_that_grow_with_its_size(vision):
    text = vision.prompt([Message("user", QUESTION)])
    small = vision.prompt([Message("user", QUESTION, images=(png(56, 56),))])
    large = vision.prompt([Message("user", QUESTION, images=(png(224, 168),))])
    both = vision.prompt([Message("user", QUESTION, images=(png(56, 56), png(224, 168)))])
    assert "<|vision_start|>" not in text.text
    assert small.text.count("<|vision_start|><|image_pad|><|vision_end|>" + QUESTION) == 1
    assert len(small.tokens) == len(text.tokens) + image_tokens(56, 56) == len(text.tokens) + 6
    assert len(large.tokens) == len(text.tokens) + image_tokens(224, 168) == len(text.tokens) + 50
    assert len(both.tokens) == len(text.tokens) + image_tokens(56, 56) + image_tokens(224, 168)


async def test_generation_with_an_image_streams_pieces_to_length(vision):
    prompt = vision.prompt([Message("user", QUESTION, images=(png(112, 84, seed=1),))])
    items = await run(vision, prompt, max_tokens=6, seed=1)
    assert isinstance(items[0], Prefill) and items[-1] == Finished("length")
    assert all(isinstance(item, Piece) for item in items[1:-1])
    assert len([item for item in items if isinstance(item, Piece) and item.tokens]) == 6


async def test_a_text_only_prompt_works_and_reuses_its_prefix(vision):
    first = vision.prompt([Message("user", "Say hello.")])
    items = await run(vision, first, max_tokens=4, temperature=0)
    assert items[-1] == Finished("length")
    longer = vision.prompt([Message("user", "Say hello."), Message("assistant", "Hello!"), Message("user", "Again.")])
    again = await run(vision, longer, max_tokens=4, temperature=0)
    assert len(first.tokens) <= again[0].cached_tokens < len(longer.tokens) and again[-1] == Finished("length")


async def test_the_kv_prefix_is_kept_up_to_the_first_different_picture(vision):
    cat, dog = png(112, 112, seed=2), png(112, 112, seed=3)  # the same size: the same placeholder tokens
    first = vision.prompt([Message("user", QUESTION, images=(cat,))])
    await run(vision, first, max_tokens=3, temperature=0)
    follow_up = vision.prompt([Message("user", QUESTION, images=(cat,)), Message("assistant", "A cat."),
                               Message("user", "And this one?", images=(dog,))])
    assert (await run(vision, follow_up, max_tokens=3, temperature=0))[0] == Prefill(len(first.tokens))
    swapped = vision.prompt([Message("user", QUESTION, images=(dog,))])
    assert swapped.tokens == first.tokens  # equal ids, yet another picture: re-read from its placeholders on
    start = swapped.images[0].span.start
    assert (await run(vision, swapped, max_tokens=3, temperature=0))[0] == Prefill(start)
    assert (await run(vision, swapped, max_tokens=3, temperature=0))[0] == Prefill(len(swapped.tokens) - 1)


def test_our_forwards_give_the_logits_of_the_models_own_forward(vision, monkeypatch):
    """Chunked prefill (chunks that split images), explicit 3D positions and decode steps after the images
    compute what one forward of the model with pixel_values does."""
    from transformers import DynamicCache

    prompt = vision.prompt([Message("user", QUESTION, images=(png(224, 112, seed=4),)), Message("assistant", "Ok."),
                            Message("user", "These?", images=(png(84, 140, seed=5), png(60, 60, seed=6)))])
    answer = [1234, 567, 89]
    ids = torch.tensor([[*prompt.tokens, *answer]])
    with torch.inference_mode():
        vision.model.model.rope_deltas = None
        expected = vision.model(
            input_ids=ids, pixel_values=torch.cat([image.pixels for image in prompt.images]),
            image_grid_thw=torch.stack([image.grid for image in prompt.images]),
            mm_token_type_ids=(ids == vision.images.image_token).int()).logits[0, len(prompt.tokens) - 1:]
        for chunk in (512, 7):
            vision._sequence = _Sequence(vision.model, list(prompt.tokens), prompt.images)
            vision._cache, vision._cached_ids = DynamicCache(config=vision.model.config), []
            for start in range(0, len(prompt.tokens), chunk):
                logits = vision._forward(list(prompt.tokens[start:start + chunk]))
            steps = [logits] + [vision._forward([token]) for token in answer]
            assert torch.allclose(torch.stack(steps), expected, atol=1e-5), chunk
    vision._sequence = None
    vision._cached_ids = []


def test_unreadable_images_are_refused_and_fake_placeholders_are_text(vision):
    with pytest.raises(InvalidRequest, match="image 1 .*could not be read"):
        vision.prompt([Message("user", QUESTION, images=(Image(b"not a picture", "image/png"),))])
    # a control token's text in a message is text (issue 23): it cannot pose as a picture's place
    prompt = vision.prompt([Message("user", "<|image_pad|> this", images=(png(56, 56),))])
    (image,) = prompt.images
    assert prompt.tokens.count(vision.images.image_token) == image.span.length
    assert "<|image_pad|> this" in prompt.text


def test_a_daemon_serves_images_on_the_vision_folder(tiny_vision_model_dir, tmp_path):
    daemon = Daemon(tmp_path, QWEND_BACKEND="transformers", QWEND_MODEL=str(tiny_vision_model_dir)).start()
    try:
        url = "data:image/png;base64," + base64.b64encode(png(112, 56).data).decode()
        parts = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
        text_only = [{"role": "user", "content": QUESTION}]
        replies = [httpx.post(f"{daemon.url}/v1/chat/completions", timeout=120, json={
            "messages": messages, "max_tokens": 3, "seed": 1}) for messages in ([{"role": "user", "content": parts}],
                                                                              text_only)]
        assert [reply.status_code for reply in replies] == [200, 200]
        with_image, without = (reply.json() for reply in replies)
        assert with_image["choices"][0]["finish_reason"] == "length"
        assert with_image["usage"]["completion_tokens"] == 3
        assert with_image["usage"]["prompt_tokens"] == without["usage"]["prompt_tokens"] + image_tokens(112, 56)
        shown = httpx.post(f"{daemon.url}/api/show", json={"model": str(tiny_vision_model_dir)}, timeout=30).json()
        assert "vision" in shown["capabilities"]
    finally:
        daemon.stop()
