"""`qwend eval tools`: tool-calling accuracy over the project's own cases, through an OpenAI-compatible API.

Per category it reports the share of cases with well-formed calls (every call names an offered tool and
its arguments parse as a JSON object), correct calls (exactly the expected calls: names equal, every
expected argument equal after light normalisation, extra optional arguments tolerated) and, for the
irrelevant category, the share answered without any call.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx

CATEGORIES = ("single", "choose", "parallel", "multi_turn", "irrelevant")


@dataclass(frozen=True)
class Outcome:
    category: str
    well_formed: bool
    correct: bool
    called: bool
    error: str | None = None


def load_cases() -> dict[str, Any]:
    return json.loads(resources.files("qwend.cli.evals").joinpath("tool_cases.json").read_text())


def run_case(client: httpx.Client, base: str, case: dict, tools: dict, extra: dict) -> Outcome:
    body = {
        "messages": case["messages"], "tools": [tools[name] for name in case["tools"]], "temperature": 0,
        "max_tokens": 256, **extra,
    }
    try:
        reply = client.post(f"{base}/v1/chat/completions", json=body)
        reply.raise_for_status()
        message = reply.json()["choices"][0]["message"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return Outcome(case["category"], False, False, False, f"{type(exc).__name__}: {exc}")
    calls = [_decode(c, case["tools"]) for c in message.get("tool_calls") or []]
    well_formed = bool(calls) and all(c is not None for c in calls)
    expected = case["expected"]
    correct = well_formed and _matches(expected, calls) if expected else not calls
    return Outcome(case["category"], well_formed, correct, bool(calls))


def _decode(call: dict, offered: list[str]) -> tuple[str, dict] | None:
    try:
        name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
    except (KeyError, TypeError, ValueError):
        return None
    return (name, arguments) if name in offered and isinstance(arguments, dict) else None


def _norm(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().casefold()
        try:
            return float(text)
        except ValueError:
            return text
    return value


def _matches(expected: list[dict], calls: list[tuple[str, dict]]) -> bool:
    if len(expected) != len(calls):
        return False
    remaining = list(calls)
    for want in expected:
        for got in remaining:
            if got[0] == want["name"] and all(
                k in got[1] and _norm(got[1][k]) == _norm(v) for k, v in want["arguments"].items()
            ):
                remaining.remove(got)
                break
        else:
            return False
    return True


def run_suite(
    base: str, *, extra: dict | None = None, limit: int | None = None, categories=CATEGORIES, on_case=None
) -> list[Outcome]:
    data = load_cases()
    counts: dict[str, int] = defaultdict(int)
    outcomes = []
    with httpx.Client(timeout=300) as client:
        for case in data["cases"]:
            if case["category"] not in categories or (limit is not None and counts[case["category"]] >= limit):
                continue
            counts[case["category"]] += 1
            outcome = run_case(client, base, case, data["tools"], extra or {})
            outcomes.append(outcome)
            if on_case:
                on_case(case, outcome)
    return outcomes


def summarise(outcomes: list[Outcome]) -> dict[str, dict[str, float]]:
    """Per category: n, well_formed and correct rates (for irrelevant: no_call rate and correct)."""
    table: dict[str, dict[str, float]] = {}
    for category in CATEGORIES:
        rows = [o for o in outcomes if o.category == category]
        if not rows:
            continue
        n = len(rows)
        table[category] = {
            "n": n,
            "well_formed": sum(o.well_formed for o in rows) / n,
            "correct": sum(o.correct for o in rows) / n,
            "no_call": sum(not o.called for o in rows) / n,
            "errors": sum(o.error is not None for o in rows),
        }
    return table


def run_tools_eval(
    settings, *, limit: int | None, baseline: bool, console, categories=CATEGORIES
) -> dict[str, dict]:
    """qwend with and without constrained decoding, then llama-cpp-python's server, on the same model."""
    from rich.table import Table

    from qwend.cli.local_server import llama_cpp_server, serve_in_thread
    from qwend.runtime import Runtime

    runtime = Runtime.create(settings)
    model = runtime.store.find(settings.model)
    results: dict[str, dict] = {}

    def progress(label):
        return lambda case, o: console.print(
            f"  {label:22} {case['id']:16} {'ok ' if o.correct else 'BAD'} "
            f"{'(call)' if o.called else '(text)'}{' ' + o.error if o.error else ''}", highlight=False)

    try:
        with serve_in_thread(runtime, console) as base:
            for label, extra in (("qwend (grammar)", {}), ("qwend (no grammar)", {"constrained_decoding": False})):
                results[label] = summarise(
                    run_suite(base, extra=extra, limit=limit, categories=categories, on_case=progress(label)))
    finally:
        runtime.models.close()
    if baseline:
        with llama_cpp_server(model.path, console=console) as base:
            label = "llama_cpp.server"
            results[label] = summarise(
                run_suite(base, limit=limit, categories=categories, on_case=progress(label)))

    table = Table(title=f"qwend eval tools: {model.name}, greedy (well-formed / correct; irrelevant: no call)")
    table.add_column("category")
    table.add_column("n", justify="right")
    for label in results:
        table.add_column(label, justify="right")
    for category in CATEGORIES:
        first = next((r[category] for r in results.values() if category in r), None)
        if first is None:
            continue
        cells = []
        for summary in results.values():
            row = summary.get(category)
            if row is None:
                cells.append("-")
            elif category == "irrelevant":
                cells.append(f"{row['no_call']:.0%} no call")
            else:
                cells.append(f"{row['well_formed']:.0%} / {row['correct']:.0%}")
        table.add_row(category, str(int(first["n"])), *cells)
    console.print(table)
    return results
