"""JSON schemas from requests (tool parameters, response formats), made safe to render, validate and
turn into grammars: checked against the JSON Schema meta-schema and made self-contained."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from qwend.errors import InvalidRequest

MAX_REF_EXPANSIONS = 64


def prepare_schema(schema: dict[str, Any], *, param: str) -> dict[str, Any]:
    """`schema` with local `$ref`s inlined and `$defs` dropped; 400 for an invalid schema, a remote or
    recursive `$ref`."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequest(f"invalid JSON schema: {exc.message}", param=param) from None
    return _inline(schema, schema, (), param, [0])


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
