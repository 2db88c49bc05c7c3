"""Ollama's /api/generate with `raw` text and fill-in-the-middle (`suffix`), as editor autocomplete clients send
it, and the older routes its clients still call (HEAD /, /api/version), over a scripted backend."""

from __future__ import annotations

from dataclasses import replace

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


async def test_raw_prompts_and_fill_in_the_middle(tmp_path):
    """Editor autocomplete clients send `raw` (the text as it is) and `suffix` (fill-in-the-middle)."""
    backend = FakeBackend("return a + b", context_length=4096)
    backend.info = replace(backend.info, fill_in_middle=("<PRE>", "<SUF>", "<MID>"))
    async with client_for(fake_runtime(tmp_path, backend)) as client:
        raw = await client.post("/api/generate", json={"model": "fake.gguf", "prompt": "<|im_start|>x", "raw": True,
                                                       "system": "ignored, as Ollama does", "stream": False})
        assert raw.json()["response"] == "return a + b" and raw.json()["done"] is True
        assert backend.generated[-1].tokens == tuple(ord(c) % 256 for c in "<|im_start|>x")
        filled = await client.post("/api/generate", json={"model": "fake.gguf", "prompt": "def add(a, b):\n    ",
                                                          "suffix": "\nprint(add(1, 2))", "stream": False})
        assert filled.json()["response"] == "return a + b"
        assert backend.generated[-1].tokens == tuple(ord(c) % 256 for c in
                                                     "<PRE>def add(a, b):\n    <SUF>\nprint(add(1, 2))<MID>")


async def test_older_routes_clients_still_call(tmp_path):
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        assert (await client.head("/")).status_code == 200
        assert (await client.get("/api/version")).json() == {"version": "0.13.0"}
