"""Prometheus metrics for `GET /metrics`, on a registry of the Runtime's own (never the global default one, so
several runtimes in one process keep separate counts).

Counts and latencies are recorded where things happen: HTTP requests by the ASGI middleware
(`observe_request`), generations by the chat pipeline (`generation`), tool calls by the tool registry
(`tool_call`). What is state (queue depth, loaded models, memory, sessions) is read from the model manager
and the session count when a scrape comes (`render`), so it can never drift from the truth.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector, generate_latest,
)

from qwend.types import Speculated

if TYPE_CHECKING:
    from qwend.engine.manager import ModelManager

# what OutputParser.outcomes counts (qwend/chat/parser.py); listed so each shows as 0 before it first happens
PARSE_OUTCOMES = ("parsed", "repaired", "fell_back", "truncated", "invalid", "dropped")

# A request is anything from a health check to a minutes-long generation.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Nothing ahead (a millisecond) up to several long answers ahead on a busy model.
QUEUE_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# A cached prompt on a GPU (tens of ms) up to a long history re-read on a CPU (~94 tokens/s here).
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
# A large model on a CPU (a few tokens/s) up to a small one on a GPU.
RATE_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 200)


class Metrics:
    """Every metric family qwend exports, on its own CollectorRegistry (`registry`)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        PlatformCollector(registry=r)  # python_info
        self.requests = Counter("qwend_http_requests", "HTTP requests answered, by route template, method and "
                                "status", ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("qwend_http_request_duration_seconds", "Time to answer an HTTP request "
                                         "(a stream: until its last byte), by route template", ["route", "method"],
                                         buckets=REQUEST_BUCKETS, registry=r)
        self.queue_depth = Gauge("qwend_queue_depth", "Jobs per model: running (generating now) or waiting for a "
                                 "slot", ["model", "state"], registry=r)
        self.queue_wait = Histogram("qwend_queue_wait_seconds", "Seconds from a job's submission to its admission "
                                    "(a slot free)", ["model"], buckets=QUEUE_WAIT_BUCKETS, registry=r)
        self.ttft = Histogram("qwend_time_to_first_token_seconds", "Seconds from a job's submission to its first "
                              "generated token (queue wait and prompt evaluation; not a model load)", ["model"],
                              buckets=TTFT_BUCKETS, registry=r)
        self.decode_rate = Histogram("qwend_decode_tokens_per_second", "Decode rate of each generation: tokens after "
                                     "the first / seconds from the first to the last", ["model"],
                                     buckets=RATE_BUCKETS, registry=r)
        self.generated = Counter("qwend_generated_tokens", "Completion tokens generated", ["model"], registry=r)
        self.prompt_tokens = Counter("qwend_prompt_tokens", "Prompt tokens of generations (cached ones included)",
                                     ["model"], registry=r)
        self.cached_tokens = Counter("qwend_cached_prompt_tokens", "Prompt tokens whose KV state was reused "
                                     "instead of evaluated", ["model"], registry=r)
        self.drafted = Counter("qwend_draft_tokens", "Tokens drafted by speculation (n-gram lookup) and verified",
                               ["model"], registry=r)
        self.draft_accepted = Counter("qwend_draft_accepted_tokens", "Drafted tokens the model's own samples "
                                      "confirmed (acceptance rate: this / qwend_draft_tokens)", ["model"], registry=r)
        self.parse_outcomes = Counter("qwend_tool_parse_outcomes", "Tool calls read from model output, by how "
                                      "the parser got them (parsed, repaired, fell_back, truncated, invalid, "
                                      "dropped)", ["outcome"], registry=r)
        for outcome in PARSE_OUTCOMES:
            self.parse_outcomes.labels(outcome)
        self.tool_calls = Counter("qwend_tool_calls", "Tool invocations, by tool and outcome", ["tool", "outcome"],
                                  registry=r)
        self.sessions = Gauge("qwend_sessions", "Sessions in the session store", registry=r)
        self.model_loaded = Gauge("qwend_model_loaded", "1 for each loaded model", ["model"], registry=r)
        self.model_memory = Gauge("qwend_model_memory_bytes", "Estimated memory of each loaded model (weights + KV "
                                  "cache)", ["model"], registry=r)
        self.memory_used = Gauge("qwend_memory_used_bytes", "Estimated memory held by loaded models and reserved "
                                 "by loads under way", registry=r)
        self.memory_budget = Gauge("qwend_memory_budget_bytes", "The memory budget models must fit in", registry=r)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered HTTP request; `route` is the route template (`/v1/sessions/{session_id}`) or
        "unmatched", never the raw path (whose ids would make a label value per request)."""
        self.requests.labels(route, method, str(status)).inc()
        self.request_seconds.labels(route, method).observe(seconds)

    def generation(self, model: str) -> GenerationTimer:
        """Start timing one job of `model`, at its submission to the scheduler."""
        return GenerationTimer(self, model)

    def tool_parse(self, outcomes: Mapping[str, int]) -> None:
        """Add one answer's parser outcomes."""
        for outcome, count in outcomes.items():
            self.parse_outcomes.labels(outcome).inc(count)

    def tool_parse_outcomes(self) -> dict[str, int]:
        """The outcomes seen so far (non-zero ones only, as /health has always shown them)."""
        return {s.labels["outcome"]: int(s.value) for s in _samples(self.parse_outcomes, "_total") if s.value}

    def tool_call(self, tool: str, outcome: str) -> None:
        """Count one tool invocation (the tool registry reports each one, with its outcome)."""
        self.tool_calls.labels(tool, outcome).inc()

    def render(self, models: ModelManager, sessions: int) -> bytes:
        """Read the models' state and the number of sessions into the gauges and return the exposition text (no
        await in between, so a concurrent scrape cannot render a half-refreshed state)."""
        self.sessions.set(sessions)
        for gauge in (self.queue_depth, self.model_loaded, self.model_memory):
            gauge.clear()  # models unloaded since the last scrape must vanish, not keep their last value
        for name, loaded in models.loaded.items():
            self.queue_depth.labels(name, "running").set(loaded.scheduler.running)
            self.queue_depth.labels(name, "waiting").set(loaded.scheduler.waiting)
            self.model_loaded.labels(name).set(1)
            self.model_memory.labels(name).set(loaded.memory.total)
        self.memory_used.set(models.memory_used)
        self.memory_budget.set(models.budget)
        return generate_latest(self.registry)


class GenerationTimer:
    """The timings of one job, fed by the chat pipeline as the scheduler's items pass."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self.metrics, self.model = metrics, model
        self.submitted = time.monotonic()
        self.first: float | None = None  # when the first token came
        self.last = 0.0
        self.first_tokens = 0  # tokens in the first piece (the rate counts those after it)

    def admitted(self) -> None:
        self.metrics.queue_wait.labels(self.model).observe(time.monotonic() - self.submitted)

    def piece(self, tokens: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first, self.first_tokens = now, tokens
            self.metrics.ttft.labels(self.model).observe(now - self.submitted)
        self.last = now

    def finished(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int,
                 speculated: Speculated = Speculated()) -> None:
        """Record a generation that ran to its end (a stop, a length limit, a stop string)."""
        m = self.metrics
        m.generated.labels(self.model).inc(completion_tokens)
        m.drafted.labels(self.model).inc(speculated.drafted)
        m.draft_accepted.labels(self.model).inc(speculated.accepted)
        m.prompt_tokens.labels(self.model).inc(prompt_tokens)
        m.cached_tokens.labels(self.model).inc(cached_tokens)
        # n tokens span n-1 gaps: the first token's time belongs to the prompt (TTFT), not to decoding
        decoded = completion_tokens - self.first_tokens
        if self.first is not None and decoded > 0 and self.last > self.first:
            m.decode_rate.labels(self.model).observe(decoded / (self.last - self.first))


def _samples(metric: Counter, suffix: str):
    return [s for family in metric.collect() for s in family.samples if s.name.endswith(suffix)]
