"""GET /metrics: every family qwend exports, with plausible values after a few requests on a scripted backend."""

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.unit.test_openai_api import HELLO, URL
from tests.unit.test_openai_tools_api import ASK, TWO_CALLS

MODEL = "fake.gguf"


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """sample name -> {sorted label items: value}."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


def value(samples, name, **labels) -> float:
    return samples[name][tuple(sorted(labels.items()))]


async def scrape(client) -> dict[str, dict[tuple, float]]:
    reply = await client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    return parse(reply.text)


async def test_every_family_after_a_few_requests(tmp_path):
    backend = FakeBackend(delay=0.01, replies=["Hello there, friend.", "Hello there, friend.", TWO_CALLS])
    runtime = fake_runtime(tmp_path, backend)
    runtime.models.loaded[MODEL].memory = type(runtime.models.loaded[MODEL].memory)(1000, 24, 512)
    async with client_for(runtime) as client:
        assert (await client.post(URL, json=HELLO)).status_code == 200
        assert (await client.post(URL, json={**HELLO, "stream": True})).status_code == 200
        body = (await client.post(URL, json=ASK)).json()
        assert body["choices"][0]["finish_reason"] == "tool_calls"
        reply = await client.post("/v1/tools/calculator/invoke", json={"arguments": {"expression": "2+2"}})
        assert reply.json()["success"] is True
        assert (await client.post("/v1/tools/nope/invoke", json={"arguments": {}})).status_code == 404
        assert (await client.post("/v1/tools/calculator/invoke", json={"arguments": {"x": 1}})).status_code == 400
        assert (await client.post("/v1/sessions", json={"profile_name": "general"})).status_code == 200
        runtime.metrics.observe_request("/v1/sessions/{session_id}", "GET", 200, 0.02)
        runtime.metrics.observe_request("unmatched", "GET", 404, 0.001)
        m = await scrape(client)
        health = (await client.get("/health")).json()

    # 1. requests by route and status, and their durations
    assert value(m, "qwend_http_requests_total", route="/v1/sessions/{session_id}", method="GET", status="200") == 1
    assert value(m, "qwend_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(m, "qwend_http_request_duration_seconds_count", route="unmatched", method="GET") == 1
    assert value(m, "qwend_http_request_duration_seconds_sum", route="/v1/sessions/{session_id}", method="GET") == 0.02
    # 2. queue depth (state, read at the scrape: nothing left running) and queue wait (3 generations)
    assert value(m, "qwend_queue_depth", model=MODEL, state="running") == 0
    assert value(m, "qwend_queue_depth", model=MODEL, state="waiting") == 0
    assert value(m, "qwend_queue_wait_seconds_count", model=MODEL) == 3
    assert 0 <= value(m, "qwend_queue_wait_seconds_sum", model=MODEL) < 1
    # 3. time to first token: one per generation, at least the first piece's delay
    assert value(m, "qwend_time_to_first_token_seconds_count", model=MODEL) == 3
    assert value(m, "qwend_time_to_first_token_seconds_sum", model=MODEL) >= 3 * 0.01
    assert value(m, "qwend_time_to_first_token_seconds_bucket", model=MODEL, le="+Inf") == 3
    # 4. decode rate (a piece every 10 ms: at most ~100 tokens/s) and tokens generated
    rates = value(m, "qwend_decode_tokens_per_second_count", model=MODEL)
    assert rates == 3
    assert 0 < value(m, "qwend_decode_tokens_per_second_sum", model=MODEL) / rates <= 110
    generated = 3 + 3 + len(TWO_CALLS.split(" "))
    assert value(m, "qwend_generated_tokens_total", model=MODEL) == generated
    # 5. prompt vs cached tokens
    prompt = value(m, "qwend_prompt_tokens_total", model=MODEL)
    assert prompt > 0 and 0 <= value(m, "qwend_cached_prompt_tokens_total", model=MODEL) <= prompt
    # 6. tool-parse outcomes: two calls parsed, every outcome exported; /health shows the same, non-zero only
    assert value(m, "qwend_tool_parse_outcomes_total", outcome="parsed") == 2
    assert value(m, "qwend_tool_parse_outcomes_total", outcome="fell_back") == 0
    assert health["tool_parse_outcomes"] == {"parsed": 2}
    # 7. tool calls by tool and outcome
    assert value(m, "qwend_tool_calls_total", tool="calculator", outcome="ok") == 1
    assert value(m, "qwend_tool_calls_total", tool="calculator", outcome="invalid_arguments") == 1
    assert value(m, "qwend_tool_calls_total", tool="(unknown)", outcome="not_found") == 1
    # 8. sessions
    assert value(m, "qwend_sessions") == 1
    # 9. residency and memory
    assert value(m, "qwend_model_loaded", model=MODEL) == 1
    assert value(m, "qwend_model_memory_bytes", model=MODEL) == 1024
    assert value(m, "qwend_memory_used_bytes") == 1024
    assert value(m, "qwend_memory_budget_bytes") == runtime.models.budget > 0
    assert value(m, "process_resident_memory_bytes") > 0
    assert "python_info" in m


async def test_queue_depth_while_jobs_run_and_wait(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend(delay=0.2))
    async with client_for(runtime) as client:
        jobs = [asyncio.create_task(client.post(URL, json=HELLO)) for _ in range(2)]
        for _ in range(100):
            m = await scrape(client)
            if value(m, "qwend_queue_depth", model=MODEL, state="waiting") == 1:
                break
            await asyncio.sleep(0.01)
        assert value(m, "qwend_queue_depth", model=MODEL, state="running") == 1
        assert value(m, "qwend_queue_depth", model=MODEL, state="waiting") == 1
        await asyncio.gather(*jobs)
        m = await scrape(client)
        assert value(m, "qwend_queue_wait_seconds_count", model=MODEL) == 2
        assert value(m, "qwend_queue_wait_seconds_sum", model=MODEL) >= 0.2  # the second waited for the first


async def test_an_unloaded_model_leaves_the_gauges(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    async with client_for(runtime) as client:
        assert value(await scrape(client), "qwend_model_loaded", model=MODEL) == 1
        await runtime.models.unload(MODEL)
        m = await scrape(client)
        assert "qwend_model_loaded" not in m and "qwend_queue_depth" not in m
        assert value(m, "qwend_memory_used_bytes") == 0


async def test_runtimes_keep_separate_counts(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = fake_runtime(tmp_path / "a", FakeBackend()), fake_runtime(tmp_path / "b", FakeBackend())
    first.metrics.observe_request("/health", "GET", 200, 0.001)
    assert "qwend_http_requests_total" in parse(first.metrics.render(first.models, 0).decode())
    assert "qwend_http_requests_total" not in parse(second.metrics.render(second.models, 0).decode())
