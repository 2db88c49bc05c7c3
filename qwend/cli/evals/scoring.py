"""Scoring for `qwend eval tools`: argument matching, schema checks, a lenient reader of calls written as
text (for servers that leave the model's raw calls in `content`), and the per-category summary."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import jsonschema

CATEGORIES = ("single", "choose", "parallel", "parallel_multiple", "multi_turn", "irrelevant")


@dataclass(frozen=True)
class Outcome:
    """One answer to one case. `calls` are (name, arguments) as read; `invalid` counts calls whose arguments
    are not a JSON object, do not validate against the tool's schema, or that name a tool not offered."""

    category: str
    well_formed: bool
    correct: bool
    called: bool
    error: str | None = None
    invalid: int = 0
    leaked: bool = False
    truncated: bool = False
    completion_tokens: int | None = None
    seconds: float = 0.0


# --- reading calls -------------------------------------------------------------------------------------------

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCED = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def _as_call(item: Any) -> tuple[str, Any] | None:
    """A {"name", "arguments"|"parameters"} object (or one wrapped in "function") as (name, arguments)."""
    if isinstance(item, dict) and isinstance(item.get("function"), dict):
        item = item["function"]
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        return None
    if "arguments" not in item and "parameters" not in item:
        return None  # {"name": "Ottawa"} is an answer, not a call
    arguments = item["arguments"] if "arguments" in item else item["parameters"]
    if isinstance(arguments, str):  # OpenAI's wire form: the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except ValueError:
            pass
    return item["name"], arguments


def _calls_in(text: str) -> list[tuple[str, Any]] | None:
    """Calls in one JSON text (an object or a list of them), or None when it is not JSON of calls."""
    text = text.strip()
    try:
        value = json.loads(text)
    except ValueError:
        start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
        if start < 0:
            return None
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            return None
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(item) for item in items]
    return calls if calls and all(c is not None for c in calls) else None  # type: ignore[return-value]


def parse_content_calls(content: str | None) -> list[tuple[str, Any]]:
    """Calls a person would read in a text answer: `<tool_call>{json}</tool_call>` blocks, a ```json fenced
    call, or a bare JSON object or list of objects with a name and arguments. Anything else is no call."""
    if not content:
        return []
    tagged = _TAGGED.findall(content)
    if tagged:
        return [call for block in tagged for call in (_calls_in(block) or [])]
    for block in _FENCED.findall(content):
        calls = _calls_in(block)
        if calls:
            return calls
    stripped = content.strip()
    if stripped.startswith(("{", "[")):
        return _calls_in(stripped) or []
    return []


def leaks_markup(content: str | None) -> bool:
    """Whether a text answer carries call markup: `<tool_call`, `<tools>`, or a call written as JSON."""
    if not content:
        return False
    return "<tool_call" in content or "<tools>" in content or bool(parse_content_calls(content))


def wire_calls(message: dict) -> list[tuple[str, Any]]:
    """The calls of an OpenAI message's `tool_calls`; arguments that are not JSON stay a string."""
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            calls.append(("", None))
            continue
        arguments = function.get("arguments")
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            pass
        calls.append((str(function.get("name", "")), arguments))
    return calls


def is_valid(call: tuple[str, Any], tools: dict[str, dict], offered: list[str]) -> bool:
    name, arguments = call
    if name not in offered or not isinstance(arguments, dict):
        return False
    try:
        jsonschema.validate(arguments, tools[name]["function"]["parameters"])
    except jsonschema.ValidationError:
        return False
    return True


# --- matching ------------------------------------------------------------------------------------------------

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


def _may_omit(want: Any) -> bool:
    return isinstance(want, dict) and set(want) == {"any_of"} and None in want["any_of"]


def arguments_match(want: dict, got: Any) -> bool:
    """Every expected key present and matching, or absent where its any_of lists null (an optional argument
    whose default does what was asked); extra keys tolerated."""
    return isinstance(got, dict) and all(
        value_matches(v, got[k]) if k in got else _may_omit(v) for k, v in want.items())


def value_matches(want: Any, got: Any) -> bool:
    """Numbers numerically, strings trimmed and case-folded, {"any_of": [...]} any alternative, objects on
    the expected keys (extra keys tolerated), lists element by element in any order."""
    if isinstance(want, dict) and set(want) == {"any_of"}:
        return any(value_matches(option, got) for option in want["any_of"])
    if isinstance(want, dict):
        return arguments_match(want, got)
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return False
        if all(value_matches(w, g) for w, g in zip(want, got)):
            return True
        remaining = list(got)
        for w in want:
            hit = next((i for i, g in enumerate(remaining) if value_matches(w, g)), None)
            if hit is None:
                return False
            remaining.pop(hit)
        return True
    a, b = _norm(want), _norm(got)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _matches(expected: list[dict], calls: list[tuple[str, Any]]) -> bool:
    """Exactly the expected calls, in any order: names equal, every expected argument matching."""
    if len(expected) != len(calls):
        return False
    remaining = list(calls)
    for want in expected:
        for got in remaining:
            if got[0] == want["name"] and arguments_match(want["arguments"], got[1]):
                remaining.remove(got)
                break
        else:
            return False
    return True


def score(case: dict, tools: dict[str, dict], message: dict, *, lenient: bool) -> dict[str, Any]:
    """Outcome fields for one answer. With `lenient`, calls written in the text count as calls (for a server
    that returns the model's raw calls in `content`) when the message has no `tool_calls`."""
    content = message.get("content") if isinstance(message.get("content"), str) else None
    calls = wire_calls(message)
    if lenient and not calls:
        calls = parse_content_calls(content)
    invalid = sum(not is_valid(c, tools, case["tools"]) for c in calls)
    well_formed = bool(calls) and invalid == 0
    expected = case["expected"]
    correct = well_formed and _matches(expected, calls) if expected else not calls
    return {"well_formed": well_formed, "correct": correct, "called": bool(calls), "invalid": invalid,
            "leaked": leaks_markup(content)}


# --- summary -------------------------------------------------------------------------------------------------

def _stats(values: list[float]) -> dict[str, float | None]:
    return {"mean": sum(values) / len(values), "max": max(values)} if values else {"mean": None, "max": None}


def summarise(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """Per category: n, well_formed, correct and no_call rates, errors, invalid calls, answers leaking call
    markup into content, answers cut off at max_tokens, and completion tokens and seconds (mean, max)."""
    table: dict[str, dict[str, Any]] = {}
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
            "invalid_calls": sum(o.invalid for o in rows),
            "leaks": sum(o.leaked for o in rows),
            "truncated": sum(o.truncated for o in rows),
            "completion_tokens": _stats([o.completion_tokens for o in rows if o.completion_tokens is not None]),
            "seconds": _stats([o.seconds for o in rows if o.error is None]),
        }
    return table


def totals(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Cases, correct share over all categories, and the summed counts."""
    n = sum(row["n"] for row in table.values())
    return {
        "n": n,
        "correct": sum(row["correct"] * row["n"] for row in table.values()) / n if n else 0.0,
        **{key: sum(row[key] for row in table.values()) for key in ("errors", "invalid_calls", "leaks", "truncated")},
    }
