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
`<function=`, and anything else in the block as Qwen's JSON form; under a grammar in this form
(engine/grammar.py) it streams the arguments, as JSON, one parameter at a time (XmlArguments).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from qwend.chat.stops import partial_suffix
from qwend.engine.grammar import FUNCTION_CLOSE, FUNCTION_OPEN, PARAMETER_CLOSE, schema_types
from qwend.types import ToolSpec

# names are bounded: a tag that never closes is not read again to its end on every piece of a stream
_FUNCTION_HEAD = re.compile(r"\s*<function=([^>\n]{1,256})>")
_FUNCTION_NAME = re.compile(r"<function=([^>\n]{1,256})>")
_FUNCTION_TAG_SO_FAR = re.compile(r"<function=[^>\n]{0,256}")
_PARAMETER_OPEN = re.compile(r"<parameter=([^>\n]{1,256})>")
_SPACE = re.compile(r"\s*")


def is_xml_call(body: str) -> bool:
    """Whether a `<tool_call>` block's text is (the beginning of) a call in this form."""
    head = body.lstrip()
    return head.startswith(FUNCTION_OPEN) or (bool(head) and FUNCTION_OPEN.startswith(head))


def xml_head(body: str) -> tuple[str, int] | None:
    """The function a call's text opens with, and where its parameters begin (None until its tag is whole)."""
    head = _FUNCTION_HEAD.match(body)
    return (head.group(1).strip(), head.end()) if head else None


def bare_call(text: str, tools: Mapping[str, ToolSpec]) -> tuple[int, int]:
    """Where a call to an offered tool written without its <tool_call> tags begins in `text` (-1: none), and
    how much of the end of `text` may still become one: Qwen3-Coder models sometimes leave the tags out. A
    `<function=` naming no offered tool is text."""
    at = text.find(FUNCTION_OPEN)
    while at >= 0:
        head = _FUNCTION_HEAD.match(text, at)
        if head is not None and head.group(1).strip() in tools:
            return at, 0
        if head is None and _FUNCTION_TAG_SO_FAR.fullmatch(text, at):  # its name not whole yet
            return -1, len(text) - at
        at = text.find(FUNCTION_OPEN, at + 1)
    return -1, partial_suffix(text, FUNCTION_OPEN)


def xml_called_name(text: str) -> str | None:
    """The function named in `text`, once its tag is complete."""
    found = _FUNCTION_NAME.search(text)
    return found.group(1).strip() if found else None


def xml_call(body: str, tools: Mapping[str, ToolSpec]) -> dict[str, Any] | None:
    """`{"name", "arguments"}` of a whole call in this form (its `</function>` written), each value typed by
    the tool's schema; None for anything else: cut off, text between the tags, a parameter named twice."""
    if (head := xml_head(body)) is None:
        return None
    name, rest = head[0], body[head[1]:]
    end = rest.rfind(FUNCTION_CLOSE)
    if end < 0 or rest[end + len(FUNCTION_CLOSE):].strip():
        return None
    inside, properties = rest[:end], _properties(tools.get(name))
    arguments: dict[str, Any] = {}
    at = 0
    for key, value, at in _parameters(inside, 0):
        if key in arguments:
            return None
        arguments[key] = typed(value, properties.get(key))
    if inside[at:].strip():
        return None
    return {"name": name, "arguments": arguments}


class XmlArguments:
    """A streamed call's arguments as JSON text, a parameter at a time as each closes: `take` each new piece
    of the function's text (after its `<function=NAME>` tag); `done` once `</function>` came."""

    def __init__(self, tool: ToolSpec | None) -> None:
        self._properties = _properties(tool)
        self._text = ""
        self._at = 0  # where the next parameter may begin
        self._taken = 0  # parameters turned into JSON
        self.done = False

    def take(self, text: str) -> str:
        """The JSON text that `text` completes."""
        if self.done:
            return ""
        # only new text is searched for a closing tag: a long value searched from its start on every piece
        # was quadratic
        searched = max(0, len(self._text) - len(PARAMETER_CLOSE) + 1)
        self._text += text
        pieces = []
        for key, value, end in _parameters(self._text, self._at, searched):
            typed_value = typed(value, self._properties.get(key))
            pieces.append(f"{', ' if self._taken else '{'}{json.dumps(key)}: {json.dumps(typed_value, ensure_ascii=False)}")
            self._taken, self._at = self._taken + 1, end
        self._at = _SPACE.match(self._text, self._at).end()  # (whitespace is not read again)
        if self._text.startswith(FUNCTION_CLOSE, self._at):
            pieces.append("}" if self._taken else "{}")
            self.done = True
        return "".join(pieces)


def _parameters(text: str, at: int, searched: int = 0) -> Iterator[tuple[str, str, int]]:
    """The parameters written whole in `text` from `at`: (name, value as written, where it ends), up to the
    first text that is not one (a parameter still open, the function's end, anything else); no closing tag
    lies before `searched`. Positions, not slices: a body of many parameters is read in one pass."""
    while (opened := _PARAMETER_OPEN.match(text, _SPACE.match(text, at).end())) is not None:
        close = text.find(PARAMETER_CLOSE, max(opened.end(), searched))
        if close < 0:
            return
        at = close + len(PARAMETER_CLOSE)
        yield opened.group(1).strip(), _value_text(text[opened.end():close]), at


def _properties(tool: ToolSpec | None) -> dict[str, Any]:
    properties = tool.parameters.get("properties") if tool is not None else None
    return properties if isinstance(properties, dict) else {}


def _value_text(text: str) -> str:
    """A value as written: one newline after its opening tag and one before its closing tag are the format's."""
    return text.removeprefix("\n").removesuffix("\n")


def typed(text: str, schema: Any) -> Any:
    """`text` as the type `schema` gives it (text when the schema allows a string, says nothing, or the text
    is not of its type: the arguments' validation then tells)."""
    types = schema_types(schema)
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
