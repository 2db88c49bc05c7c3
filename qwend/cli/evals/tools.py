"""`qwend eval tools`: tool-calling accuracy over the project's own cases, through an OpenAI-compatible API.

Categories: single (one tool offered), choose (several offered, one fits), parallel (several calls of one
tool), parallel_multiple (several calls of several tools), multi_turn (a new request after earlier calls and
results) and irrelevant (no offered tool fits: decoys from the same domain, small talk, knowledge questions).
A case is correct when the answer makes exactly the expected calls, in any order (names equal, every expected
argument matching: numbers numerically, strings trimmed and case-folded, {"any_of": [...]} any alternative, a
null alternative letting an optional argument be left out; extra optional arguments tolerated) and every
call is valid against its tool's schema; an irrelevant case is correct when it makes no call. Calls whose
arguments are not a JSON object or fail the schema, or that name a tool not offered, are counted as invalid;
answers with `<tool_call`, `<tools>` or a JSON call in `content` as leaks. Rules live in `scoring.py`.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

from qwend.cli.evals.scoring import CATEGORIES, Outcome, _matches, parse_content_calls, score, summarise, totals

__all__ = ["CATEGORIES", "Outcome", "_matches", "load_cases", "parse_content_calls", "run_case", "run_suite",
           "run_tools_eval", "summarise"]

MAX_TOKENS = 256


def load_cases() -> dict[str, Any]:
    """{"tools": name -> OpenAI tool, "cases": [...]}: the tools from tool_cases.json, the cases from it and
    from every cases_*.json beside it (package data, read through importlib.resources)."""
    folder = resources.files("qwend.cli.evals")
    data = json.loads(folder.joinpath("tool_cases.json").read_text())
    cases = list(data.get("cases", []))
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith("cases_") and entry.name.endswith(".json"):
            cases.extend(json.loads(entry.read_text())["cases"])
    cases.sort(key=lambda case: CATEGORIES.index(case["category"]))  # stable: file order within a category
    return {"tools": data["tools"], "cases": cases}


def run_case(client: httpx.Client, base: str, case: dict, tools: dict, extra: dict, *,
             temperature: float | None = 0.0, lenient: bool = False) -> Outcome:
    """One request; `temperature` None sends none (the server's default); `lenient` also reads calls
    written in `content`."""
    body: dict[str, Any] = {
        "messages": case["messages"], "tools": [tools[name] for name in case["tools"]], "max_tokens": MAX_TOKENS,
        **({} if temperature is None else {"temperature": temperature}), **extra,
    }
    started = time.perf_counter()
    try:
        reply = client.post(f"{base}/v1/chat/completions", json=body)
        reply.raise_for_status()
        answer = reply.json()
        choice = answer["choices"][0]
        message = choice["message"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        return Outcome(case["category"], False, False, False, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    usage = answer.get("usage") or {}
    return Outcome(
        case["category"], **score(case, tools, message, lenient=lenient),
        truncated=choice.get("finish_reason") == "length", completion_tokens=usage.get("completion_tokens"),
        seconds=seconds,
    )


def run_suite(
    base: str, *, extra: dict | None = None, limit: int | None = None, categories=CATEGORIES, on_case=None,
    temperature: float | None = 0.0, repeats: int = 1, lenient: bool = False,
) -> list[Outcome]:
    """Every selected case (`limit` per category), each `repeats` times."""
    data = load_cases()
    counts: dict[str, int] = defaultdict(int)
    outcomes = []
    with httpx.Client(timeout=300) as client:
        for case in data["cases"]:
            if case["category"] not in categories or (limit is not None and counts[case["category"]] >= limit):
                continue
            counts[case["category"]] += 1
            for _ in range(repeats):
                outcome = run_case(client, base, case, data["tools"], extra or {}, temperature=temperature,
                                   lenient=lenient)
                outcomes.append(outcome)
                if on_case:
                    on_case(case, outcome)
    return outcomes


def _cell(row: dict | None, category: str) -> str:
    if row is None:
        return "-"
    if category == "irrelevant":
        return f"{row['no_call']:.0%} no call"
    return f"{row['well_formed']:.0%} / {row['correct']:.0%}"


def _spread(stats: dict, fmt: str) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:{fmt}}/{stats['max']:{fmt}}"


def print_report(report: dict, console) -> None:
    """The accuracy table (a column per server, a row per category), then the counts and the token and time
    statistics below it."""
    from rich.table import Table

    servers = report["servers"]
    temp = report["temperature"]
    setting = "greedy" if temp == 0 else f"temperature {'server default' if temp is None else temp}"
    repeats = f", {report['repeats']} runs per case" if report["repeats"] > 1 else ""

    def table(title, *first, caption=None):
        t = Table(title=title, caption=caption)
        for name in first:
            t.add_column(name, justify="left" if name == first[0] else "right")
        for label in servers:
            t.add_column(label, justify="right")
        return t

    accuracy = table(f"qwend eval tools: {report['model']}, {setting}{repeats}", "category", "n",
                     caption="cells: well-formed / correct; irrelevant: no call")
    for category in CATEGORIES:
        rows = [s["categories"].get(category) for s in servers.values()]
        if any(rows):
            accuracy.add_row(category, str(next(row["n"] for row in rows if row)),
                             *(_cell(row, category) for row in rows))
    accuracy.add_row("all (correct)", str(max((s["totals"]["n"] for s in servers.values()), default=0)),
                     *(f"{s['totals']['correct']:.0%}" for s in servers.values()))
    console.print(accuracy)

    lenient = [label for label, s in servers.items() if s.get("lenient")]
    note = f"{', '.join(lenient)}: calls read leniently from content, so leaks are expected" if lenient else None
    counts = table("counts (target 0)", "answers", caption=note)
    for key, label in (("invalid_calls", "calls with invalid arguments"), ("leaks", "call markup in content"),
                       ("truncated", f"cut off at {report['max_tokens']} tokens"), ("errors", "request errors")):
        counts.add_row(label, *(str(s["totals"][key]) for s in servers.values()))
    console.print(counts)

    stats = table("completion tokens and seconds per answer (mean / max)", "category")
    for category in CATEGORIES:
        rows = [s["categories"].get(category) for s in servers.values()]
        if any(rows):
            stats.add_row(category, *("-" if row is None else f"{_spread(row['completion_tokens'], '.0f')} tok "
                                      f"{_spread(row['seconds'], '.1f')} s" for row in rows))
    console.print(stats)


def run_tools_eval(
    settings, *, limit: int | None, baseline: bool, console, categories=CATEGORIES,
    temperature: float | None = 0.0, repeats: int = 1, json_path: Path | None = None,
) -> dict[str, Any]:
    """qwend with and without constrained decoding, then llama-cpp-python's server, on the same model. The
    server keeps the model's raw calls in `content`, so its answers are read leniently (`parse_content_calls`).
    Returns a JSON-able report, also written to `json_path` when given."""
    from qwend.cli.local_server import llama_cpp_server, serve_in_thread
    from qwend.runtime import Runtime

    runtime = Runtime.create(settings)
    model = runtime.store.find(settings.model)
    servers: dict[str, dict] = {}

    def progress(label):
        return lambda case, o: console.print(
            f"  {label:22} {case['id']:24} {'ok ' if o.correct else 'BAD'} "
            f"{'(call)' if o.called else '(text)'}{' invalid' if o.invalid else ''}{' leak' if o.leaked else ''}"
            f"{' ' + o.error if o.error else ''}", highlight=False)

    def run(label, base, extra, lenient=False):
        outcomes = run_suite(base, extra=extra, limit=limit, categories=categories, on_case=progress(label),
                             temperature=temperature, repeats=repeats, lenient=lenient)
        table = summarise(outcomes)
        servers[label] = {"lenient": lenient, "categories": table, "totals": totals(table)}

    try:
        with serve_in_thread(runtime, console) as base:
            run("qwend (grammar)", base, {})
            run("qwend (no grammar)", base, {"constrained_decoding": False})
    finally:
        runtime.models.close()
    if baseline:
        with llama_cpp_server(model.path, console=console) as base:
            run("llama_cpp.server", base, {}, lenient=True)

    report = {"model": model.name, "temperature": temperature, "repeats": repeats, "max_tokens": MAX_TOKENS,
              "servers": servers}
    print_report(report, console)
    if json_path is not None:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {json_path}", highlight=False)
    return report
