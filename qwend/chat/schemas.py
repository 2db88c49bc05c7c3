"""JSON schemas from requests (tool parameters, response formats), made safe to render, validate and
turn into grammars: checked against the JSON Schema meta-schema and made self-contained."""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from qwend.errors import InvalidRequest

MAX_REF_EXPANSIONS = 64
MAX_DEPTH = 64  # nested objects and lists; jsonschema and the grammar builder recurse per level


def prepare_schema(schema: dict[str, Any], *, param: str) -> dict[str, Any]:
    """`schema` with local `$ref`s inlined and `$defs` dropped; 400 for an invalid schema, a remote or
    recursive `$ref`."""
    if _depth(schema) > MAX_DEPTH:  # before anything recursive: ~100 levels overflowed check_schema (a 500)
        raise InvalidRequest(f"the schema is nested deeper than {MAX_DEPTH} levels", param=param)
    if not is_plain_json(schema):  # NaN kept in a stored session's tools made every later listing a 500
        raise InvalidRequest("the schema holds NaN or Infinity, which JSON does not allow", param=param)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"invalid JSON schema: {exc.message}", param=param) from None
    return _inline(schema, schema, (), param, [0])


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
