"""Several models in one real daemon: on-demand loads with a keep-alive, Ollama's keep_alive, and a memory
budget that evicts idle models by bytes and refuses, with the numbers, what cannot fit. Both real models."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tests.conftest import Daemon

pytestmark = pytest.mark.real_model

SMALL = "smollm2:135m"
DEFAULT = "qwen2.5-coder:0.5b"
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def small_model(model_path):
    from qwend.models.store import ModelStore
    from qwend.settings import Settings

    settings = Settings(_env_file=None)
    if not ModelStore(settings.store_dir, settings.models_dir).resolve(SMALL).present:
        pytest.fail(f"{SMALL} is not pulled; run `qwend pull {SMALL}` (./run-tests does)")


def loaded(url: str) -> dict[str, str]:
    """What /api/ps lists: model name -> expires_at."""
    return {m["name"]: m["expires_at"] for m in httpx.get(f"{url}/api/ps").json()["models"]}


def chat(url: str, model: str, **body) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": HI, "max_tokens": 4, **body},
                      timeout=120)


def test_models_loaded_on_demand_leave_after_their_keep_alive(small_model, tmp_path):
    daemon = Daemon(tmp_path, QWEND_KEEP_ALIVE="2").start()
    try:
        assert chat(daemon.url, SMALL).status_code == 200  # a second model, loaded by the request
        resident = loaded(daemon.url)
        assert resident[DEFAULT] == "9999-12-31T23:59:59Z"  # the start model stays
        assert resident[SMALL] < "9999"  # an RFC 3339 time about 2 s away
        deadline = time.monotonic() + 15
        while SMALL in loaded(daemon.url) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(loaded(daemon.url)) == [DEFAULT]
        # Ollama's own way: keep_alive 0 with nothing to answer unloads at once
        httpx.post(f"{daemon.url}/api/generate", json={"model": SMALL, "keep_alive": "10m"}, timeout=60)
        assert SMALL in loaded(daemon.url)
        reply = httpx.post(f"{daemon.url}/api/generate", json={"model": SMALL, "keep_alive": 0}, timeout=60).json()
        assert reply["done_reason"] == "unload" and SMALL not in loaded(daemon.url)
    finally:
        daemon.stop()


def test_a_memory_budget_evicts_idle_models_and_refuses_what_cannot_fit(small_model, tmp_path):
    # 1000 MB holds the default model (~0.83 GiB with its 32768-token KV cache) but not both (~1.10 GiB)
    daemon = Daemon(tmp_path, QWEND_MEMORY_BUDGET_MB="1000").start()
    try:
        health = httpx.get(f"{daemon.url}/health").json()["memory"]
        assert health["budget_bytes"] == 1000 << 20 and 0.8 * (1 << 30) < health["used_bytes"] < 0.9 * (1 << 30)
        assert chat(daemon.url, SMALL).status_code == 200  # the idle default model made room
        assert list(loaded(daemon.url)) == [SMALL]
        assert chat(daemon.url, DEFAULT).status_code == 200  # and back: the idle small one goes
        assert list(loaded(daemon.url)) == [DEFAULT]

        # while the default model is busy it cannot be evicted: the small one is refused, with the numbers
        long = {"model": DEFAULT, "temperature": 0, "max_tokens": 400, "stream": True,
                "messages": [{"role": "user", "content": "Count from 1 to 1000."}]}
        started, asked = threading.Event(), threading.Event()

        def generate() -> None:
            with httpx.stream("POST", f"{daemon.url}/v1/chat/completions", json=long, timeout=120) as reply:
                for line in reply.iter_lines():
                    if '"content"' in line:
                        started.set()
                        asked.wait(60)
                        return  # leaving cancels the job

        busy = threading.Thread(target=generate)
        busy.start()
        assert started.wait(60)
        refused = chat(daemon.url, SMALL)
        asked.set()
        busy.join()
        error = refused.json()["error"]
        assert (refused.status_code, error["code"]) == (503, "insufficient_memory")
        assert "needs about 0.27 GiB (weights 0.09 GiB + KV cache 0.18 GiB for 8192 tokens)" in error["message"]
        assert "memory budget of 0.98 GiB" in error["message"] and f"{DEFAULT} 0.83 GiB" in error["message"]
    finally:
        daemon.stop()


def test_a_request_for_a_model_not_yet_loaded_says_it_waits_for_the_load(small_model, tmp_path):
    daemon = Daemon(tmp_path).start()
    try:
        events = []
        with httpx.stream("POST", f"{daemon.url}/v1/chat", timeout=120, json={
                "message": "Say hi.", "model": SMALL, "stream": True, "max_tokens": 4}) as reply:
            for line in reply.iter_lines():
                if line.startswith("event:"):
                    events.append(line.removeprefix("event:").strip())
                elif line.startswith("data:") and len(events) == 1:
                    first = json.loads(line.removeprefix("data:"))
        assert events[0] == "queued" and first == {"position": 0, "loading": SMALL}
        assert events[1] == "started" and events[-1] == "done"
        health = httpx.get(f"{daemon.url}/health").json()
        assert health["loading"] == [] and SMALL in health["queue"]
    finally:
        daemon.stop()
