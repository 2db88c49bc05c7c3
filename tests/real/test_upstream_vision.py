"""Images through qwend to a real upstream server: llama-cpp-python's own server (`--chat_format mtmd`) on the
tiny random Qwen2.5-VL GGUF pair of tests/tiny_vision.py. The model's answers are noise, but noise that depends
on every pixel, so the same greedy answer through qwend as straight from the server shows the image arrived
unchanged; a different image gives a different answer. (Prompt counts are not compared:
this server reports no usage when streaming, which is how qwend asks, so qwend's count is its estimate.)"""

from __future__ import annotations

import base64
from contextlib import ExitStack

import httpx
import pytest

from qwend.cli.local_server import llama_cpp_server, serve_in_thread
from qwend.runtime import Runtime
from qwend.settings import Settings
from tests.tiny_vision import MMPROJ_FILE, MODEL_FILE, png

pytest.importorskip("torch")

ALIAS = "tiny-vl"
GRADIENT, BLUE = png(64, 48), png(64, 48, blue=255)


@pytest.fixture(scope="module")
def servers(tiny_vision_gguf_dir, tmp_path_factory):
    """(the upstream server's base URL, qwend's base URL in front of it)."""
    with ExitStack() as stack:
        upstream = stack.enter_context(llama_cpp_server(tiny_vision_gguf_dir / MODEL_FILE, context_length=2048,
                                                        alias=ALIAS, projector=tiny_vision_gguf_dir / MMPROJ_FILE))
        settings = Settings(_env_file=None, data_dir=tmp_path_factory.mktemp("front"), backend="upstream",
                            upstream_url=f"{upstream}/v1", model=ALIAS)
        runtime = Runtime.create(settings)
        stack.callback(runtime.models.close)
        yield upstream, stack.enter_context(serve_in_thread(runtime))


def openai_body(image: bytes) -> dict:
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    return {"model": ALIAS, "temperature": 0, "max_tokens": 8, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": url}}]}]}


def answer(base: str, body: dict) -> str:
    reply = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"].strip()  # qwend drops the answer's leading space


def test_an_image_reaches_the_upstream_unchanged(servers):
    upstream, front = servers
    direct = answer(upstream, openai_body(GRADIENT))
    assert answer(front, openai_body(GRADIENT)) == direct
    other = answer(front, openai_body(BLUE))
    assert other == answer(upstream, openai_body(BLUE))
    assert other != direct  # the model read the picture


def test_seed_002_and_ollama_images_reach_it_too(servers):
    upstream, front = servers
    direct = answer(upstream, openai_body(GRADIENT))
    encoded = base64.b64encode(GRADIENT).decode()
    vision = httpx.post(f"{front}/chat/vision", timeout=120, json={
        "model_key": ALIAS, "messages": [{"role": "user", "content": "What is this?",
                                          "images": [{"data_base64": encoded, "mime_type": "image/png"}]}],
        "config": {"temperature": 0, "maxTokens": 8}})
    assert vision.status_code == 200, vision.text
    assert vision.json()["content"].strip() == direct
    ollama = httpx.post(f"{front}/api/chat", timeout=120, json={
        "model": ALIAS, "stream": False, "options": {"temperature": 0, "num_predict": 8},
        "messages": [{"role": "user", "content": "What is this?", "images": [encoded]}]})
    assert ollama.status_code == 200, ollama.text
    assert ollama.json()["message"]["content"].strip() == direct


def test_an_image_url_is_fetched_by_qwend_and_sent_on(servers, tiny_vision_gguf_dir, tmp_path):
    """http(s) image URLs are fetched through web_fetch's guard: this loopback one only because the test allows
    127.0.0.0/8 (a daemon started without that setting refuses it: tests/unit/test_images.py)."""
    from tests.http_server import Reply, http_server

    upstream, _ = servers
    direct = answer(upstream, openai_body(GRADIENT))
    settings = Settings(_env_file=None, data_dir=tmp_path, backend="upstream", upstream_url=f"{upstream}/v1",
                        model=ALIAS, fetch_allow_networks=["127.0.0.0/8"])
    runtime = Runtime.create(settings)
    routes = {"/picture.png": lambda seen: Reply(body=GRADIENT, headers={"Content-Type": "image/png"})}
    try:
        with http_server(routes) as (images, _), serve_in_thread(runtime) as front:
            body = openai_body(GRADIENT)
            body["messages"][0]["content"][1]["image_url"]["url"] = f"{images}/picture.png"
            assert answer(front, body) == direct
    finally:
        runtime.models.close()
