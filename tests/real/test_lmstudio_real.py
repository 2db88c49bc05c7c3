"""Seed 002 (the LM Studio proxy) against a real `qwend serve` with the real default model: the seed's own
example bodies, NDJSON read line by line, and model load/unload. The daemon is shared with other test files,
so every test that unloads the default model loads it again before it ends."""

import base64
import json
import struct
import time
import zlib

import httpx
import pytest
from llama_cpp import Llama

DEFAULT = "qwen2.5-coder:0.5b"
LMSTUDIO_KEY = "qwen/qwen2.5-coder-0.5b-instruct"  # LM Studio's key for the default model's weights
DEFAULT_FILE = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
# the seed's /chat/regular curl body, greedy (temperature 0) so the check on the answer is repeatable
REGULAR = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "config": {"temperature": 0, "maxTokens": 100},
}
# the seed's PowerShell body as `ConvertTo-Json -Depth 10` writes it, sampled as the seed sends it
POWERSHELL = """{
    "messages":  [
                     {
                         "role":  "system",
                         "content":  "You are helpful."
                     },
                     {
                         "role":  "user",
                         "content":  "What is 2+2?"
                     }
                 ],
    "config":  {
                   "temperature":  0.7,
                   "maxTokens":  100
               }
}"""


@pytest.fixture(scope="module")
def api(daemon):
    with httpx.Client(base_url=daemon, timeout=120) as client:
        yield client
        client.post("/models/load", json={"model_key": DEFAULT})  # leave the shared daemon as it was


@pytest.fixture(scope="module")
def vocab(model_path):
    llama = Llama(model_path=str(model_path), vocab_only=True, verbose=False)
    yield lambda text: llama.tokenize(text.encode(), add_bos=False, special=True)
    llama.close()


def png(width: int = 16, height: int = 16) -> bytes:
    """A real PNG (a red-to-blue gradient), written by hand so no imaging library is needed."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(v for x in range(width) for v in (255 - 16 * x, 0, 16 * x)) for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def stream_lines(api, path: str, body: dict) -> list[dict]:
    """Read an NDJSON stream line by line, as a client does, checking each line is one JSON object."""
    with api.stream("POST", path, json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in reply.iter_lines() if line]


def test_load_exclusive_with_lm_studio_key_of_the_default_model(api):
    reply = api.post("/models/load", content='{"model_key":"qwen/qwen2.5-coder-0.5b-instruct","exclusive":true}',
                     headers={"content-type": "application/json"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["loaded"] is True and body["model"] == DEFAULT and body["model_key"] == LMSTUDIO_KEY
    assert api.get("/health").json()["model_loaded"] is True


def test_load_of_the_seed_model_that_is_not_here_is_the_seed_body(api):
    reply = api.post("/models/load", json={"model_key": "qwen/qwen3-4b-2507", "exclusive": True})
    assert reply.status_code == 200
    assert reply.json()["loaded"] is False and reply.json()["error"].startswith("Failed to load model: ")
    assert api.get("/health").json()["model_loaded"] is True  # an exclusive load that failed unloaded nothing


def test_regular_chat_answers_4_and_counts_its_tokens(api, vocab):
    reply = api.post("/chat/regular", json=REGULAR)
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"model", "content", "stop_reason", "predicted_tokens"}
    assert "4" in body["content"] and body["model"] == DEFAULT and body["stop_reason"] == "stop"
    assert body["predicted_tokens"] == len(vocab(body["content"]))
    # the same greedy request through the OpenAI endpoint: the same answer and the same token count
    openai = api.post("/v1/chat/completions", json={"messages": REGULAR["messages"], "temperature": 0,
                                                    "max_tokens": 100}).json()
    assert openai["choices"][0]["message"]["content"] == body["content"]
    assert openai["usage"]["completion_tokens"] == body["predicted_tokens"]


def test_powershell_body_as_sent(api):
    reply = api.post("/chat/regular", content=POWERSHELL, headers={"content-type": "application/json"})
    assert reply.status_code == 200
    body = reply.json()
    assert body["content"].strip() and 1 <= body["predicted_tokens"] <= 100
    assert body["stop_reason"] in ("stop", "length")


def test_regular_stream_is_ndjson_whose_tokens_match_predicted_tokens(api, vocab):
    # the seed's streaming body, greedy and bounded so the test stays short
    body = {"messages": [{"role": "user", "content": "Explain quantum physics in one sentence"}],
            "config": {"temperature": 0, "maxTokens": 60}}
    lines = stream_lines(api, "/chat/regular/stream", body)
    fragments, done = lines[:-1], lines[-1]
    assert fragments and all(set(f) == {"type", "content"} and f["type"] == "fragment" for f in fragments)
    assert done["type"] == "done" and done["model"] == DEFAULT and done["stop_reason"] in ("stop", "length")
    text = "".join(f["content"] for f in fragments)
    assert "quantum" in text.lower()
    assert done["predicted_tokens"] == len(vocab(text)) and len(fragments) <= done["predicted_tokens"]
    # The folded answer is the same answer. Not always to the last character: the prompt now comes from the
    # KV cache, and where its cells sit changes how llama.cpp's attention rounds, so a greedy answer may
    # take another word at a near tie after a dozen tokens.
    again = api.post("/chat/regular", json=body).json()
    assert again["content"].split()[:6] == text.split()[:6] and again["stop_reason"] in ("stop", "length")
    assert again["predicted_tokens"] == len(vocab(again["content"]))


@pytest.mark.parametrize("path", ["/chat/vision", "/chat/vision/stream", "/chat/regular"])
def test_images_for_the_text_model_are_a_clear_400(api, path):
    body = {"messages": [{"role": "user", "content": "What is in this image?",
                          "images": [{"data_base64": base64.b64encode(png()).decode(), "mime_type": "image/png"}]}],
            "config": {"temperature": 0.6, "maxTokens": 200}}
    reply = api.post(path, json=body)
    assert reply.status_code == 400
    detail = reply.json()["detail"]
    assert set(reply.json()) == {"detail"}
    assert ("cannot read images" in detail and DEFAULT in detail) if "vision" in path else "/chat/vision" in detail


def test_unload_one_then_all_then_chat_loads_on_demand(api):
    one = api.post("/models/unload", json={"model_key": LMSTUDIO_KEY}).json()
    assert one == {"unloaded": True, "models": [DEFAULT], "model_key": LMSTUDIO_KEY}
    again = api.post("/models/unload", json={"model_key": LMSTUDIO_KEY}).json()
    assert again["unloaded"] is False and "was not loaded" in again["message"]
    assert api.get("/health").json()["model_loaded"] is False
    assert api.post("/models/load", json={"model_key": DEFAULT}).json()["loaded"] is True
    assert api.get("/models").json()["models"] == [DEFAULT]
    everything = api.post("/models/unload", json={"unload_all": True}).json()
    assert everything == {"unloaded": True, "models": [DEFAULT], "unload_all": True}
    listed = api.get("/models").json()
    assert listed["models"] == [] and listed["loaded_models"] == [] and DEFAULT_FILE in listed["files"]
    # the seed's custom-model body: the model is loaded again on demand
    reply = api.post("/chat", json={"model_key": LMSTUDIO_KEY, "messages": [{"role": "user", "content": "Hello!"}],
                                    "config": {"temperature": 0, "maxTokens": 30}})
    assert reply.status_code == 200 and reply.json()["model"] == DEFAULT and reply.json()["content"].strip()
    assert api.get("/health").json()["model_loaded"] is True


def test_chat_with_a_model_that_is_not_available_is_503(api):
    reply = api.post("/chat", json={"model_key": "my-custom-model", "messages": [{"role": "user", "content": "Hello!"}]})
    assert reply.status_code == 503
    assert reply.json()["detail"].startswith("Chat service unavailable: model 'my-custom-model' not found")


def test_closing_the_stream_stops_the_generation(api):
    body = {"messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
            "config": {"temperature": 0, "maxTokens": 2000}}
    with api.stream("POST", "/chat/stream", json=body) as reply:
        lines = reply.iter_lines()
        assert [json.loads(next(lines))["type"] for _ in range(3)] == ["fragment"] * 3
        assert api.get("/health").json()["generation_in_progress"] is True
    deadline = time.monotonic() + 10
    while api.get("/health").json()["generation_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.get("/health").json()["generation_in_progress"] is False


def test_help_lists_the_routes(api):
    body = api.get("/help").json()
    listed = {(e["method"], e["path"]) for entries in body["endpoints"].values() for e in entries}
    seed = {("GET", "/health"), ("GET", "/help"), ("GET", "/models"), ("POST", "/models/load"),
            ("POST", "/models/unload")} | {("POST", p) for p in (
                "/chat", "/chat/stream", "/chat/regular", "/chat/regular/stream", "/chat/vision", "/chat/vision/stream")}
    assert seed <= listed and ("POST", "/v1/chat/completions") in listed
    assert body["routes"] == len(listed) and all(e["summary"] for g in body["endpoints"].values() for e in g)
