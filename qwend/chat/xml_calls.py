"""Qwen3-Coder's tool-call format, which some Qwen3.5 sizes use too: inside `<tool_call>`, a function and its
parameters as tags, each value plain text (no JSON quoting), read as the type the tool's schema gives it.

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    <parameter=days>
    3
    </parameter>
    </function>
    </tool_call>

The chat parser (chat/parser.py) reads a `<tool_call>` block in this form where its body opens with
`<function=`; anything else in the block is read as Qwen's JSON form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from qwend.types import ToolSpec

FUNCTION_OPEN = "<function="
_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>")
_PARAMETER_OPEN = re.compile(r"<parameter=([^>\n]+)>")
_SPACE = re.compile(r"\s*")
FUNCTION_CLOSE, PARAMETER_CLOSE = "</function>", "</parameter>"
_NAMED = re.compile(r"<function=([^>\n]+)>")


def is_xml_call(body: str) -> bool:
    """Whether a `<tool_call>` block's text is (the beginning of) a call in this form."""
    head = body.lstrip()
    return head.startswith(FUNCTION_OPEN) or (bool(head) and FUNCTION_OPEN.startswith(head))


def xml_called_name(text: str) -> str | None:
    """The function named in `text`, once its tag is complete."""
    found = _NAMED.search(text)
    return found.group(1).strip() if found else None


def xml_call(body: str, tools: Mapping[str, ToolSpec]) -> dict[str, Any] | None:
    """`{"name", "arguments"}` of a whole call in this form (its `</function>` written), each value typed by
    the tool's schema; None for anything else: cut off, text between the tags, a parameter named twice."""
    head = _FUNCTION.match(body)
    if head is None:
        return None
    name, rest = head.group(1).strip(), body[head.end():]
    end = rest.rfind(FUNCTION_CLOSE)
    if end < 0 or rest[end + len(FUNCTION_CLOSE):].strip():
        return None
    inside, properties = rest[:end], _properties(tools.get(name))
    arguments: dict[str, Any] = {}
    at = 0  # (positions, not slices: a body of many parameters is read in one pass)
    while (at := _SPACE.match(inside, at).end()) < len(inside):
        opened = _PARAMETER_OPEN.match(inside, at)
        close = inside.find(PARAMETER_CLOSE, opened.end()) if opened else -1
        if close < 0:
            return None
        key = opened.group(1).strip()
        if key in arguments:
            return None
        arguments[key] = typed(_value_text(inside[opened.end():close]), properties.get(key))
        at = close + len(PARAMETER_CLOSE)
    return {"name": name, "arguments": arguments}


def _properties(tool: ToolSpec | None) -> dict[str, Any]:
    properties = tool.parameters.get("properties") if tool is not None else None
    return properties if isinstance(properties, dict) else {}


def _value_text(text: str) -> str:
    """A value as written: one newline after its opening tag and one before its closing tag are the format's."""
    text = text.removeprefix("\n")
    return text.removesuffix("\n")


def typed(text: str, schema: Any) -> Any:
    """`text` as the type `schema` gives it (text when the schema allows a string, says nothing, or the text
    is not of its type: the arguments' validation then tells)."""
    types = _types(schema)
    if not types or "string" in types:
        return text
    stripped = text.strip()
    if "integer" in types or "number" in types:
        try:
            return int(stripped)
        except ValueError:
            pass
        if "number" in types:
            try:
                return float(stripped)
            except ValueError:
                pass
    if "boolean" in types and stripped.lower() in ("true", "false"):
        return stripped.lower() == "true"
    if "null" in types and stripped.lower() in ("null", "none"):
        return None
    try:
        return json.loads(stripped)  # objects and arrays are written as JSON
    except (ValueError, RecursionError):
        return text


def _types(schema: Any) -> set[str]:
    """The JSON types a parameter's schema allows (through anyOf/oneOf and enums); empty: any."""
    if not isinstance(schema, dict):
        return set()
    found = schema.get("type")
    types = {found} if isinstance(found, str) else {t for t in found if isinstance(t, str)} if isinstance(found, list) else set()
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or ():
            types |= _types(option)
    if not types and isinstance(schema.get("enum"), list):
        types = {_json_type(value) for value in schema["enum"]}
    return types


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return "string" if isinstance(value, str) else "object"
