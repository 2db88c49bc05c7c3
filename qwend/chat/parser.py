"""One incremental parser from generated text to chat events: reasoning, content and tool calls.

Recognised, in order of trust:
  <think>...</think>              reasoning (also when the prompt already opened the block)
  <tool_call>{json}</tool_call>   a call; under a grammar its arguments stream as they are generated
  <tool_call><function=NAME>...   a call in Qwen3-Coder's form (chat/xml_calls.py); under a grammar its
                                  arguments stream a parameter at a time; also without the tags, where
                                  NAME is an offered tool (these models sometimes leave them out)
  bare or ```json-fenced {json}   a call only when it is the whole answer and `lenient` (no grammar), as
                                  small Qwen models answer that way; a list or several objects: several calls
A call to a tool that was not offered, or with arguments that do not validate, is never returned as a call:
its text stays content. A tagged call cut off before its end (max_tokens) is dropped, never left as markup
in the content; a call made twice is made once.
Nothing here raises on model output.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from jsonschema.exceptions import SchemaError

from qwend.chat.json_text import json_or_none, json_values, loads_repairing, unfenced
from qwend.chat.stops import partial_suffix
from qwend.chat.xml_calls import XmlArguments, bare_call, is_xml_call, xml_call, xml_called_name, xml_head
from qwend.engine.grammar import FUNCTION_CLOSE, FUNCTION_OPEN
from qwend.errors import InvalidRequest
from qwend.patterns import schema_validator
from qwend.types import ChatEvent, Reasoning, Token, ToolCall, ToolCallDelta, ToolCallEnd, ToolCallStart, ToolSpec

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([^"\\]*)"\s*,\s*"arguments"\s*:\s*(?=\{)')
_NAMED = re.compile(r'"name"\s*:\s*"([^"\\]*)"')


def called_name(text: str) -> str | None:
    """The tool name in the beginning of a call (either form), once it is complete."""
    found = _NAMED.search(text)
    return found.group(1) if found else xml_called_name(text)


def call_intent(text: str) -> bool | None:
    """Whether an answer that begins with `text` is meant as tool calls, in any form small Qwen models
    use (tag, bare JSON, a list of calls, fenced JSON); None while the beginning is still ambiguous."""
    head = text.lstrip()
    if not head:
        return None
    if head.startswith((CALL_OPEN, FUNCTION_OPEN, "{", "[{")):
        return True
    if CALL_OPEN.startswith(head) or FUNCTION_OPEN.startswith(head) or "```".startswith(head) or head == "[":
        return None
    if head.startswith("```"):
        rest = head[3:]
        if rest.startswith("json"):
            rest = rest[4:]
        elif rest and "json".startswith(rest):
            return None  # "```j", "```js"
        rest = rest.lstrip()
        return rest[0] in "{[" if rest else None  # a fence's language and first line tell
    return False


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class PlainText:
    """The parser of a text completion: every piece is content, nothing is read into it."""

    def __init__(self) -> None:
        self.calls = 0
        self.outcomes: Counter[str] = Counter()  # nothing is parsed, so nothing is counted

    def feed(self, text: str) -> list[ChatEvent]:
        return [Token(text)] if text else []

    def finish(self) -> list[ChatEvent]:
        return []


class OutputParser:
    def __init__(
        self, tools: Sequence[ToolSpec] = (), *, trusted: bool = False, lenient: bool = True,
        in_reasoning: bool = False, max_calls: int | None = None,
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self.max_calls = max_calls  # parallel_tool_calls=false: calls past the first are dropped
        self.trusted = trusted  # a grammar guarantees the calls' shape: stream arguments as they come
        self.lenient = lenient and bool(tools) and not trusted
        # parsed / repaired / fell_back / truncated / invalid / dropped, for metrics
        self.outcomes: Counter[str] = Counter()
        self._mode = "reasoning" if in_reasoning else "content"
        self._buffer = ""
        self._answer_started = False  # any content or call emitted yet
        self._content_seen = False  # text answered: a grammar only shapes calls that open the answer
        self._calls = 0
        self._made: set[tuple[str, str]] = set()  # (name, arguments) of the calls emitted whole
        self._streamed: _StreamedCall | None = None  # the trusted call whose arguments are streaming
        self._call_searched = 0  # how much of a call's text has been searched for its end
        self._closing = CALL_CLOSE  # what ends the call being read: its tag, or a bare call's </function>

    @property
    def calls(self) -> int:
        return self._calls

    def feed(self, text: str) -> list[ChatEvent]:
        self._buffer += text
        events: list[ChatEvent] = []
        while self._step(events, final=False):
            pass
        return events

    def finish(self) -> list[ChatEvent]:
        events: list[ChatEvent] = []
        while self._step(events, final=True):
            pass
        return events

    # each step consumes what it can from the buffer; returns whether to go on
    def _step(self, events: list[ChatEvent], final: bool) -> bool:
        if not self._buffer:
            return False
        if self._mode == "reasoning":
            return self._until(THINK_CLOSE, events, Reasoning, final, then="content")
        if self._mode == "call":
            return self._in_call(events, final)
        if self._mode == "whole":
            if final:
                self._whole_answer(events)
            return False
        # content
        head = self._buffer.lstrip()
        if not self._answer_started and head.startswith(THINK_OPEN):
            self._buffer = head[len(THINK_OPEN):]
            self._mode = "reasoning"
            return True
        if not self._answer_started and self.lenient and not head.startswith("<"):  # tags: per block, below
            intent = call_intent(head)
            if intent:
                self._mode = "whole"
                return True
            if intent is None and head and not final:
                return False  # "```", "[": the next piece tells whether this is a call
        if not self._answer_started and not head and not final:
            self._buffer = ""  # leading whitespace is never emitted; kept, each piece re-scanned all of it
            return False  # only whitespace so far: wait to see what the answer starts with
        if not self._answer_started and not final and THINK_OPEN.startswith(head):
            return False  # may be the start of a reasoning block
        if self.tools:
            return self._until_call(events, final)
        self._emit_content(self._buffer, events)
        self._buffer = ""
        return False

    def _until_call(self, events: list[ChatEvent], final: bool) -> bool:
        """Content up to the next call: a <tool_call> block, or a Qwen3-Coder call without its tags."""
        bare, held = bare_call(self._buffer, self.tools)
        tagged = self._buffer.find(CALL_OPEN)
        if bare >= 0 and (tagged < 0 or bare < tagged):
            self._emit_content(self._buffer[:bare], events)
            self._buffer, self._mode, self._closing = self._buffer[bare:], "call", FUNCTION_CLOSE
            return True
        self._closing = CALL_CLOSE
        return self._until(CALL_OPEN, events, Token, final, then="call", hold=held)

    def _until(self, marker: str, events, kind, final: bool, *, then: str, hold: int = 0) -> bool:
        """Emit buffer text up to `marker` as `kind`, switching mode at the marker; hold back a partial one
        (and the last `hold` characters)."""
        at = self._buffer.find(marker)
        if at >= 0:
            self._emit(kind, self._buffer[:at], events)
            self._buffer = self._buffer[at + len(marker):]
            self._mode = then
            return True
        keep = 0 if final else max(partial_suffix(self._buffer, marker), hold)
        self._emit(kind, self._buffer[: len(self._buffer) - keep], events)
        self._buffer = self._buffer[len(self._buffer) - keep:]
        return False

    def _emit(self, kind, text: str, events: list[ChatEvent]) -> None:
        if kind is Token:
            self._emit_content(text, events)
        elif text:
            events.append(kind(text))

    def _emit_content(self, text: str, events: list[ChatEvent]) -> None:
        if not self._answer_started:
            text = text.lstrip()
        if self._calls and not text.strip():
            return  # whitespace between or after calls is not an answer
        if text:
            self._answer_started = self._content_seen = True
            events.append(Token(text))

    def _in_call(self, events: list[ChatEvent], final: bool) -> bool:
        # only new text is searched: a search from the start on every piece was quadratic in a long call
        closing = self._closing
        end = self._buffer.find(closing, max(0, self._call_searched - len(closing) + 1))
        self._call_searched = len(self._buffer)
        # a bare call's text is all of it, its </function> included (a tagged one's is what the tags hold)
        body = self._buffer if end < 0 else self._buffer[:end + len(closing) * (closing == FUNCTION_CLOSE)]
        if self.trusted and not self._content_seen and not self._full():
            self._stream_arguments(body, events)
        if end < 0 and not final:
            return False
        self._buffer = "" if end < 0 else self._buffer[end + len(closing):]
        self._mode, self._call_searched = "content", 0
        if end < 0 and self._streamed is None and json_or_none(body) is None and xml_call(body, self.tools) is None:
            # cut off (max_tokens): dropped, never markup in the content (a whole call missing only its
            # closing tag, as small models write it, is kept)
            self.outcomes["truncated"] += 1
            return True
        self._finish_tagged_call(body, events)
        return True

    def _stream_arguments(self, body: str, events: list[ChatEvent]) -> None:
        if self._streamed is None:
            if (head := _CALL_HEAD.match(body)) is not None:
                (name, offset), tracker = (head.group(1), head.end()), _ArgumentsEnd()
            elif (xml := xml_head(body)) is not None:
                (name, offset), tracker = xml, XmlArguments(self.tools.get(xml[0]))
            else:
                return
            if name not in self.tools:
                return
            self._streamed = _StreamedCall(self._calls, new_call_id(), name, offset, tracker)
            events.append(ToolCallStart(self._streamed.index, self._streamed.id, self._streamed.name))
        call = self._streamed
        fresh = body[call.offset + call.read:]
        call.read += len(fresh)
        if piece := call.tracker.take(fresh):
            call.arguments += piece
            events.append(ToolCallDelta(call.index, piece))

    def _finish_tagged_call(self, body: str, events: list[ChatEvent]) -> None:
        streamed, self._streamed = self._streamed, None
        if streamed is not None:
            # the grammar shaped the call; max_tokens may have cut it short, and a schema keyword the
            # grammar cannot express (a pattern, a format) may still fail: counted, as it has been sent
            if not streamed.tracker.done:
                outcome = "truncated"
            elif self._validated({"name": streamed.name, "arguments": streamed.arguments}) is None:
                outcome = "invalid"
            else:
                outcome = "parsed"
            self._end_call(streamed.index, streamed.id, streamed.name, streamed.arguments, events, outcome=outcome)
            return
        if is_xml_call(body):
            parsed = (xml, False) if (xml := xml_call(body, self.tools)) is not None else None
        else:
            parsed = loads_repairing(body)
        call = self._validated(parsed[0]) if parsed else None
        if call is None:
            self.outcomes["fell_back"] += 1
            self._emit_content(body if self._closing == FUNCTION_CLOSE else f"{CALL_OPEN}{body}{CALL_CLOSE}", events)
            return
        self._emit_call(*call, events, outcome="parsed" if not parsed[1] else "repaired")

    def _whole_answer(self, events: list[ChatEvent]) -> None:
        """The answer began like JSON: it is calls only if all of it is calls to offered tools."""
        text, self._buffer = self._buffer, ""
        objects = json_values(unfenced(text.strip()))
        calls = [self._validated(o) for o in objects] if objects else []
        if calls and all(calls):
            for call in calls:
                self._emit_call(*call, events, outcome="repaired")
            return
        if objects and any(isinstance(o, dict) and "name" in o for o in objects):
            self.outcomes["fell_back"] += 1
        self._mode = "content"
        self._emit_content(text, events)

    def _validated(self, value: Any) -> tuple[str, str] | None:
        """(name, arguments JSON) if `value` is a call to an offered tool with valid arguments."""
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            return None
        tool = self.tools.get(value["name"])
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
                return None
        if tool is None or not isinstance(arguments, dict) or not _valid(arguments, tool.parameters):
            return None
        return tool.name, json.dumps(arguments, ensure_ascii=False)

    def _full(self) -> bool:
        return self.max_calls is not None and self._calls >= self.max_calls

    def _emit_call(self, name: str, arguments: str, events: list[ChatEvent], *, outcome: str) -> None:
        if self._full() or (name, arguments) in self._made:  # a call made twice is made once
            self.outcomes["dropped"] += 1
            return
        self._made.add((name, arguments))
        index, call_id = self._calls, new_call_id()
        events.append(ToolCallStart(index, call_id, name))
        events.append(ToolCallDelta(index, arguments))
        self._end_call(index, call_id, name, arguments, events, outcome=outcome)

    def _end_call(self, index, call_id, name, arguments, events, *, outcome: str) -> None:
        events.append(ToolCallEnd(index, ToolCall(call_id, name, arguments)))
        self._calls += 1
        self._answer_started = True
        self.outcomes[outcome] += 1


class _StreamedCall:
    def __init__(self, index: int, call_id: str, name: str, offset: int,
                 tracker: _ArgumentsEnd | XmlArguments) -> None:
        self.index, self.id, self.name = index, call_id, name
        self.offset = offset  # where the arguments begin in the call's text
        self.read = 0  # how much of the call's text past `offset` the tracker took
        self.arguments = ""  # their JSON, as streamed
        self.tracker = tracker


class _ArgumentsEnd:
    """Follows a JSON value character by character to tell where it ends."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.done = False

    def take(self, text: str) -> str:
        """The part of `text` that belongs to the value."""
        for i, ch in enumerate(text):
            if self.done:
                return text[:i]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
        return text


def _valid(arguments: dict, schema: dict) -> bool:
    try:
        return schema_validator(schema).is_valid(arguments)
    except (SchemaError, InvalidRequest):
        return True  # a schema we cannot read is the client's affair; the JSON is still an object
    except RecursionError:
        return False
