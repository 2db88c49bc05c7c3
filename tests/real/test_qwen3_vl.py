"""Qwen3-VL images through llama.cpp's multimodal projector, with the tiny random Qwen3-VL pair of
tests/tiny_qwen3.py (deepstack vision, the real Qwen3 tokenizer): its answers are noise, but noise that depends
on the picture, so tests compare answers across images, across KV reuse, and across the way the image arrives."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest

from qwend.engine.base import Piece
from qwend.engine.llama_cpp import LlamaCppBackend
from qwend.models.store import LocalModel
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import Image, Message, SamplingParams
from tests.tiny_qwen3 import VL_FILE
from tests.tiny_vision import png

pytest.importorskip("torch")

GREEDY = SamplingParams(temperature=0, max_tokens=8)
RED, BLUE = Image(png(64, 48), "image/png"), Image(png(64, 48, blue=255), "image/png")


@pytest.fixture(scope="module")
def backend(tiny_qwen3_dir: Path):
    backend = LlamaCppBackend.load(LocalModel(Path(VL_FILE).name, tiny_qwen3_dir / VL_FILE),
                                   Settings(_env_file=None, context_length=1024, threads=2))
    yield backend
    backend.close()


def ask(backend, image: Image, text: str = "What is this?") -> tuple[int, str]:
    """(cached prompt tokens, the greedy answer)."""
    async def collect():
        prompt = backend.prompt([Message("user", text, images=(image,))])
        return [item async for item in backend.generate(prompt, GREEDY)]

    items = asyncio.run(collect())
    return items[0].cached_tokens, "".join(i.text for i in items if isinstance(i, Piece))


def test_the_projector_beside_it_gives_the_model_vision(backend):
    assert backend.info.vision and backend.images is not None
    prompt = backend.prompt([Message("user", "What is this?", images=(RED,))])
    assert len(prompt.images) == 1 and prompt.images[0].positions > 0  # the picture's embeddings take places


def test_answers_follow_the_picture_and_a_cached_one_answers_the_same(backend):
    first, red = ask(backend, RED)
    _, blue = ask(backend, BLUE)
    cached, again = ask(backend, RED)
    assert red != blue
    assert again == red and cached > 0  # the text before the picture came from the cache


def test_an_image_url_over_the_openai_api_answers_as_the_engine_does(backend, tiny_qwen3_dir, tmp_path):
    from qwend.cli.local_server import serve_in_thread

    folder = tiny_qwen3_dir / Path(VL_FILE).parent
    settings = Settings(_env_file=None, data_dir=tmp_path, models_dir=folder, model=Path(VL_FILE).name,
                        context_length=1024, threads=2)
    runtime = Runtime.create(settings)
    url = "data:image/png;base64," + base64.b64encode(BLUE.data).decode()
    body = {"temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What is this?"}]}]}
    try:
        with serve_in_thread(runtime) as base:
            reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    finally:
        runtime.models.close()
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == ask(backend, BLUE)[1]
    assert json.dumps(reply.json()["usage"])  # counted, images included
