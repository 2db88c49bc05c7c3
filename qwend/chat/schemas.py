"""JSON schemas from requests (tool parameters, response formats), made safe to render, validate and
turn into grammars: checked against the JSON Schema meta-schema, bounded, and made self-contained.

The bounds exist because a schema becomes a grammar: llama.cpp's converter spells out every counted
repetition (`maxItems: 100000` nested 100,000 groups and overflowed the grammar parser's stack, killing
the daemon), so counts, patterns and the grammar's total size are capped, and past a cap the request gets
a 400 before anything is queued. docs/security.md lists them.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from qwend.errors import InvalidRequest
from qwend.patterns import MAX_REPEAT, compile_pattern, pattern_shape

MAX_REF_EXPANSIONS = 64
MAX_DEPTH = 64  # nested objects and lists; jsonschema and the grammar builder recurse per level
MAX_SCHEMA_CHARS = 100_000  # one schema as JSON, after its $refs are inlined
# symbols the grammar for one schema (or all of one request's tools together) may spell out: each subschema
# counts one, a counted repetition its count, a pattern its weight (patterns.pattern_shape)
MAX_GRAMMAR_WEIGHT = 20_000
COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties", "minContains",
          "maxContains")
# the meta-schema's format checks, less "regex": Python's `re` would refuse RE2's syntax (`\p{L}`), and RE2 has
# read every pattern already
_FORMATS_BUT_REGEX = FormatChecker(formats=[name for name in FormatChecker.checkers if name != "regex"])
# keywords whose value is a subschema, a list of them, or a mapping of names to them
_ONE = ("additionalProperties", "additionalItems", "items", "contains", "not", "if", "then", "else",
        "propertyNames", "unevaluatedItems", "unevaluatedProperties")
_MANY = ("allOf", "anyOf", "oneOf", "prefixItems", "items")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


def prepare_schema(schema: dict[str, Any], *, param: str) -> dict[str, Any]:
    """`schema` with local `$ref`s inlined and `$defs` dropped; 400 for an invalid schema, a remote or
    recursive `$ref`."""
    if _depth(schema) > MAX_DEPTH:  # before anything recursive: ~100 levels overflowed check_schema (a 500)
        raise InvalidRequest(f"the schema is nested deeper than {MAX_DEPTH} levels", param=param)
    if not is_plain_json(schema):  # NaN kept in a stored session's tools made every later listing a 500
        raise InvalidRequest("the schema holds NaN or Infinity, which JSON does not allow", param=param)
    _check_keywords(schema, param=param)  # every pattern compiled by RE2 here, so check_schema leaves them be
    try:
        Draft202012Validator.check_schema(schema, format_checker=_FORMATS_BUT_REGEX)
    except SchemaError as exc:
        raise InvalidRequest(f"invalid JSON schema: {exc.message}", param=param) from None
    inlined = _inline(schema, schema, (), param, [0])
    if _depth(inlined) > MAX_DEPTH:  # a chain of $refs nests what each of them holds
        raise InvalidRequest(f"the schema is nested deeper than {MAX_DEPTH} levels with its $refs inlined",
                             param=param)
    if len(json.dumps(inlined)) > MAX_SCHEMA_CHARS:
        raise InvalidRequest(f"the schema is larger than {MAX_SCHEMA_CHARS} characters with its $refs inlined",
                             param=param)
    check_grammar_weight(grammar_weight(inlined), param=param)
    return inlined


def _check_keywords(schema: Any, *, param: str) -> None:
    """400 for a count past MAX_REPEAT, a pattern that RE2 refuses or that is past its bounds, and
    `unevaluatedProperties` beside `patternProperties` (which jsonschema would match with `re`)."""
    for node in subschemas(schema):
        for key in COUNTS:
            count = node.get(key)
            if _is_number(count) and count > MAX_REPEAT:
                raise InvalidRequest(f"{key} is {count:g}; at most {MAX_REPEAT} can be enforced", param=param)
        if isinstance(node.get("patternProperties"), dict) and "unevaluatedProperties" in node:
            raise InvalidRequest("unevaluatedProperties beside patternProperties is not supported", param=param)
        for pattern in _patterns(node):
            compile_pattern(pattern, param=param)


def grammar_weight(schema: Any) -> int:
    """Roughly how many symbols a grammar for `schema` spells out: one per subschema, plus each counted
    repetition's count and each pattern's weight (patterns.pattern_shape)."""
    weight = 0
    for node in subschemas(schema):
        weight += 1 + sum(max(int(node[key]), 0) for key in COUNTS if _is_number(node.get(key)))
        weight += sum(pattern_shape(pattern).weight for pattern in _patterns(node))
    return weight


def _patterns(node: dict[str, Any]) -> list[str]:
    """The regular expressions a schema object holds: its `pattern` and its `patternProperties` keys."""
    patterns = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
    if isinstance(node.get("patternProperties"), dict):
        patterns += list(node["patternProperties"])
    return patterns


def check_grammar_weight(weight: int, *, param: str) -> None:
    if weight > MAX_GRAMMAR_WEIGHT:
        raise InvalidRequest(f"too large to enforce: its grammar would spell out about {weight} symbols, more than "
                             f"{MAX_GRAMMAR_WEIGHT} (counted repetitions, patterns and subschemas add up)",
                             param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def subschemas(schema: Any) -> list[dict[str, Any]]:
    """Every schema object in `schema`, itself included, found without recursion (const, enum, default and
    examples are data, not schemas, and are not entered)."""
    found, stack = [], [schema]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        found.append(node)
        for key in _ONE:
            if isinstance(node.get(key), dict):
                stack.append(node[key])
        for key in _MANY:
            if isinstance(node.get(key), list):
                stack.extend(node[key])
        for key in _NAMED:
            if isinstance(node.get(key), dict):
                stack.extend(node[key].values())
    return found


def is_plain_json(value: Any) -> bool:
    """False when `value` holds NaN or Infinity: Python's json reads them, but no JSON answer can carry them."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _depth(node: Any) -> int:
    """How deeply dicts and lists nest in `node`, counted without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _inline(node: Any, root: dict, chain: tuple[str, ...], param: str, expansions: list[int]) -> Any:
    if isinstance(node, list):
        return [_inline(item, root, chain, param, expansions) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        if not ref.startswith("#/"):
            raise InvalidRequest(f"$ref {ref!r} is not supported: only local references (#/...)", param=param)
        if ref in chain:
            raise InvalidRequest(f"recursive $ref {ref!r} cannot be enforced", param=param)
        expansions[0] += 1
        if expansions[0] > MAX_REF_EXPANSIONS:
            raise InvalidRequest("the schema expands too many $refs", param=param)
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                raise InvalidRequest(f"$ref {ref!r} points at nothing", param=param)
            target = target[part]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _inline(merged, root, chain + (ref,), param, expansions)
    return {
        key: _inline(value, root, chain, param, expansions)
        for key, value in node.items()
        if key not in ("$defs", "definitions")
    }
