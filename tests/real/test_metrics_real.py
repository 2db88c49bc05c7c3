"""GET /metrics on a real `qwend serve` with the real default model, after a couple of real generations."""

import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

COUNT = {"messages": [{"role": "user", "content": "Count from 1 to 10, separated by commas."}], "temperature": 0,
         "max_tokens": 24}


def scrape(client: httpx.Client) -> tuple[httpx.Response, dict]:
    reply = client.get("/metrics")  # what `curl -s localhost:5997/metrics` gets
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(reply.text) for s in family.samples}
    return reply, samples


def test_metrics_after_real_generations(daemon):
    with httpx.Client(base_url=daemon, timeout=120) as client:
        model = client.get("/health").json()["model"]
        per_model = (("model", model),)
        rate_sum, rate_count = ("qwend_decode_tokens_per_second_sum", per_model), \
            ("qwend_decode_tokens_per_second_count", per_model)
        _, before = scrape(client)  # the daemon is shared: earlier tests' generations are counted too
        slowest = float("inf")  # the lowest decode rate the wall clock allows: decoding is within the request
        for _ in range(2):
            started = time.monotonic()
            reply = client.post("/v1/chat/completions", json=COUNT)
            assert reply.status_code == 200, reply.text
            tokens = reply.json()["usage"]["completion_tokens"]
            assert tokens >= 2
            slowest = min(slowest, (tokens - 1) / (time.monotonic() - started))
        reply, samples = scrape(client)
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")
    assert samples[("qwend_time_to_first_token_seconds_count", per_model)] >= 2
    assert samples[("qwend_time_to_first_token_seconds_sum", per_model)] > 0
    assert samples[rate_count] - before.get(rate_count, 0) == 2
    rate = (samples[rate_sum] - before.get(rate_sum, 0)) / 2  # the mean of this test's two generations
    assert slowest <= rate < 1000, reply.text  # ~32 tokens/s on an idle 2-core CPU
    assert samples[("qwend_generated_tokens_total", per_model)] >= 4
    assert samples[("qwend_prompt_tokens_total", per_model)] >= samples[("qwend_cached_prompt_tokens_total", per_model)]
    assert samples[("qwend_model_loaded", per_model)] == 1
    assert samples[("qwend_model_memory_bytes", per_model)] > 400_000_000  # the 491 MB GGUF, plus its KV cache
    assert samples[("qwend_memory_budget_bytes", ())] > 0
    assert samples[("process_resident_memory_bytes", ())] > 0
    assert samples[("qwend_http_requests_total", (("method", "POST"), ("route", "/v1/chat/completions"),
                                                  ("status", "200")))] >= 2
