"""`qwend serve --backend ...` as a user starts it: a real daemon process on each engine, and in front of a real
upstream server (llama-cpp-python's own, on loopback) or of one that is not there."""

from __future__ import annotations

import importlib.util
import time

import httpx
import openai
import pytest

from qwend.cli.local_server import free_port, llama_cpp_server
from qwend.settings import DEFAULT_MODEL
from tests.conftest import Daemon

pytestmark = pytest.mark.real_model

QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


def chat_both_ways(url: str, model: str) -> tuple[str, str]:
    """The answer to QUESTION, non-streamed and streamed, through the openai SDK."""
    sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
    whole = sdk.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=8)
    stream = sdk.chat.completions.create(model=model, messages=QUESTION, temperature=0, max_tokens=8, stream=True)
    return whole.choices[0].message.content, "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


@pytest.mark.parametrize("backend, package", [("transformers", "torch"), ("mlx", "mlx_lm")])
def test_serve_on_a_local_engine(backend, package, hf_model_dir, tmp_path):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"the {backend} engine is not installed")
    daemon = Daemon(tmp_path, QWEND_BACKEND=backend, QWEND_MODEL=str(hf_model_dir)).start()
    try:
        health = httpx.get(f"{daemon.url}/health").json()
        assert (health["backend"], health["model"]) == (backend, str(hf_model_dir))
        whole, streamed = chat_both_ways(daemon.url, str(hf_model_dir))
        assert "Paris" in whole and streamed == whole
    finally:
        daemon.stop()


def test_serve_in_front_of_an_upstream_server(model_path, tmp_path):
    with llama_cpp_server(model_path, alias=DEFAULT_MODEL) as upstream:
        # no model configured: the daemon takes the first one the server lists
        daemon = Daemon(tmp_path, QWEND_BACKEND="upstream", QWEND_UPSTREAM_URL=f"{upstream}/v1").start()
        try:
            assert httpx.get(f"{daemon.url}/health").json()["model"] == DEFAULT_MODEL
            models = httpx.get(f"{daemon.url}/v1/models").json()["data"]
            assert [(m["id"], m["loaded"]) for m in models] == [(DEFAULT_MODEL, True)]
            whole, streamed = chat_both_ways(daemon.url, DEFAULT_MODEL)
            assert "Paris" in whole and streamed == whole
            missing = httpx.post(f"{daemon.url}/v1/chat/completions", json={"model": "nope", "messages": QUESTION})
            assert missing.status_code == 404
            assert f"it has: {DEFAULT_MODEL}" in missing.json()["error"]["message"]
        finally:
            daemon.stop()


def test_an_absent_upstream_is_a_clear_error_not_a_hang(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    refused = f"Could not connect to the upstream server at {url}: Connection refused"
    daemon = Daemon(tmp_path, QWEND_BACKEND="upstream", QWEND_UPSTREAM_URL=url, QWEND_MODEL="qwen/qwen3-4b")
    daemon.start(with_model=False)  # it starts all the same, and says why it has no model
    try:
        assert httpx.get(f"{daemon.url}/health").json()["model_loaded"] is False
        started = time.monotonic()
        reply = httpx.post(f"{daemon.url}/v1/chat/completions", json={"messages": QUESTION}, timeout=30)
        assert time.monotonic() - started < 10
        assert (reply.status_code, reply.json()["error"]["message"]) == (502, refused)
        seed_002 = httpx.post(f"{daemon.url}/chat", json={"messages": QUESTION}, timeout=30)  # seed 002, LM Studio
        assert (seed_002.status_code, seed_002.json()) == (502, {"detail": refused})
    finally:
        daemon.stop()
