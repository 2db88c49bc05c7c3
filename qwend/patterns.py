"""Regular expressions that come from requests (a JSON schema's `pattern` and `patternProperties`), run only
by RE2, a linear-time engine: Python's backtracking `re` spent minutes on `^(\\w+\\s?)*$` against a long
argument, with the event loop pinned. RE2 refuses what it cannot run in linear time (lookaround,
backreferences), and so do we, with a 400 that says so.

`pattern_weight` also sizes what a pattern becomes in an output grammar: llama.cpp's converter writes out
every counted repetition, nested counts multiply, and each group costs the converter a recursion level.

It sits beside `errors.py`, below both of its users: `chat/` (schemas, the output parser) and `tools/`
(an MCP server's argument schemas).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2
from jsonschema import Draft202012Validator, ValidationError, validators

from qwend.errors import InvalidRequest

MAX_PATTERN_CHARS = 2_000
MAX_PATTERN_NESTING = 32  # groups inside groups; the grammar converter recurses once per level
MAX_REPEAT = 1_000  # a counted repetition's bound ({n,m}); RE2's own limit too


@dataclass(frozen=True)
class PatternShape:
    nesting: int  # deepest group nesting
    weight: int  # how many symbols the grammar spells it out with, roughly: counted repeats multiplied out


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refusal is the client's error, answered as such; not a line on stderr
    options.max_mem = 8 << 20  # RE2's compiled program; past it the pattern is refused, not run
    return options


def compile_pattern(pattern: str, *, param: str) -> re2._Regexp:
    """`pattern` compiled by RE2; 400 for one too long, nested too deeply, or using a feature RE2 refuses."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise InvalidRequest(f"a pattern is {len(pattern)} characters; at most {MAX_PATTERN_CHARS} are allowed",
                             param=param)
    shape = pattern_shape(pattern)
    if shape.nesting > MAX_PATTERN_NESTING:
        raise InvalidRequest(f"a pattern nests groups {shape.nesting} deep; at most {MAX_PATTERN_NESTING} are "
                             "allowed", param=param)
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise InvalidRequest(f"pattern {pattern[:80]!r} is refused by RE2, the linear-time engine patterns run in: "
                             f"{reason} (lookaround and backreferences are not supported; counts go up to "
                             f"{MAX_REPEAT})", param=param) from None


def pattern_shape(pattern: str) -> PatternShape:
    """Nesting and grammar weight of `pattern`, read in one pass without recursion (it may nest thousands deep)."""
    frames = [[0, 0]]  # per open group: [symbols so far, symbols of the last atom or group]
    deepest, i, n = 0, 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "\\":
            i += 2
            frames[-1][0] += 1
            frames[-1][1] = 1
            continue
        if char == "[":
            i = _class_end(pattern, i)
            frames[-1][0] += 1
            frames[-1][1] = 1
            continue
        if char == "(":
            frames.append([0, 0])
            deepest = max(deepest, len(frames) - 1)
        elif char == ")" and len(frames) > 1:
            inner = max(frames.pop()[0], 1)
            frames[-1][0] += inner
            frames[-1][1] = inner
        elif char == "{" and (count := _counted(pattern, i)) is not None:
            times, i = count
            last = frames[-1][1]
            frames[-1][0] += last * (times - 1)
            frames[-1][1] = last * times
            continue
        elif char not in "*+?|^$":
            frames[-1][0] += 1
            frames[-1][1] = 1
        i += 1
    return PatternShape(deepest, sum(frame[0] for frame in frames))


def _class_end(pattern: str, start: int) -> int:
    """The index just after the character class opening at `start`."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 2 if pattern[i] == "\\" else 1
    return i + 1


def _counted(pattern: str, start: int) -> tuple[int, int] | None:
    """For a `{n}`, `{n,}` or `{n,m}` at `start`: the largest count it allows (n + 1 for an open `{n,}`, whose
    tail is a loop) and the index after it; None when the brace is a literal."""
    end = pattern.find("}", start)
    if end < 0:
        return None
    low, comma, high = pattern[start + 1:end].partition(",")
    if not low.isdigit() or (high and not high.isdigit()) or len(low) > 12 or len(high) > 12:
        return None
    times = int(high) if high else int(low) + (1 if comma else 0)
    return max(times, 1), end + 1


def schema_validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A JSON Schema validator whose `pattern` and `patternProperties` run in RE2 (jsonschema's own use
    Python's `re`). Schemas from requests reach it only through `prepare_schema`, which compiled every
    pattern already, and refuses `unevaluatedProperties` beside `patternProperties` (jsonschema would
    match those with `re`)."""
    return _Re2Validator(schema or {"type": "object"})


def _compiled(pattern: str) -> re2._Regexp:
    return compile_pattern(pattern, param="pattern")


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and _compiled(pattern).search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = _compiled(pattern)
        for key, value in instance.items():
            if compiled.search(key) is not None:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    known = schema.get("properties", {})
    patterns = [_compiled(p) for p in schema.get("patternProperties", {})]
    unknown = [key for key in instance if key not in known and not any(p.search(key) is not None for p in patterns)]
    if validator.is_type(extra, "object"):
        for key in unknown:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra and unknown:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, sorted(unknown)))} "
                              "unexpected)")


_Re2Validator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties},
)
