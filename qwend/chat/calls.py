"""What a generation under the call grammar may hand on: whole calls, each once, each from the user's words.

The grammar guarantees a call's shape, not that it ends well. Measured on the default model: a call cut by
max_tokens went out with arguments that were not JSON (`{"sample_std_dev": 10`) and its `<tool_call` markup
in content; a question asking for two sample sizes became six calls enumerating confidence levels nobody
named; a required call for "Tell me a joke about cats." ran for minutes. So each call's pieces are held until
its block closes, then handed on, or not:
- a call that never closes (max_tokens, a cancelled job) is dropped, and the answer's finish reason stays
  `length` (or `cancelled`);
- a call's text that turns into one short stretch repeated over and over is stopped and dropped (`length`);
- a call the answer already made, or past the first one with a value the conversation never mentions (an
  enumeration the model made up: confidence levels, cities, sums), ends the answer there.
Dropped pieces still count as generated tokens (their text is left out).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from qwend.chat.json_text import json_or_none
from qwend.chat.xml_calls import is_xml_call, xml_call
from qwend.engine.base import Finished, Generated, Piece
from qwend.engine.grammar import CALL_CLOSE, CALL_OPEN
from qwend.types import ToolSpec

_NUMBER = re.compile(r"(?<!\d)-?\d+(?:,\d{3})*(?:\.\d+)?")
_WORDS = {word: float(n) for n, word in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())} | {
    "twenty": 20.0, "thirty": 30.0, "fifty": 50.0, "hundred": 100.0, "thousand": 1000.0, "million": 1e6}
# a stretch of at most this many characters repeated to fill the last REPEATED_SPAN: degenerate
MAX_PERIOD, REPEATED_SPAN = 64, 512


async def whole_calls(generated: AsyncIterator[Generated], said: str,
                      tools: Sequence[ToolSpec] = ()) -> AsyncIterator[Generated]:
    """`generated` (a generation under the call grammar for `tools`) with only whole, new, grounded calls
    handed on; `said` is the text the calls' values come from (Said)."""
    known = Said(said)
    held: list[Piece] = []
    text = ""  # the held pieces' text
    seen: list[Any] = []
    async with aclosing(generated) as items:
        async for item in items:
            if isinstance(item, Piece):
                held.append(item)
                text += item.text
            elif isinstance(item, Finished) and text.strip():  # a call still open
                yield _dropped(held)
                yield replace(item, reason="cancelled" if item.reason == "cancelled" else "length")
                return
            else:
                yield item
                continue
            end = text.find(CALL_CLOSE.strip())
            if end < 0:
                if _degenerate(text):
                    yield _dropped(held)
                    yield Finished("length")
                    return
                continue
            call = _block(text[:end], tools)
            if call in seen or (seen and not known.grounds(call)):
                yield _dropped(held)
                yield Finished("stop")
                return
            seen.append(call)
            known.add(call)
            for piece in held:
                yield piece
            held, text = [], ""


def made_up(text: str, tools: Sequence[ToolSpec], said: str) -> bool:
    """Whether the first call in `text` has required arguments and none of them was `said` (a tool that does
    not fit, called anyway: get_weather(city="New York") for "What is 2 + 2?")."""
    end = text.find(CALL_CLOSE.strip())
    call = _block(text[:end], tools) if end >= 0 else None
    tool = next((t for t in tools if isinstance(call, dict) and t.name == call.get("name")), None)
    if tool is None or not isinstance(call.get("arguments"), dict):
        return False
    arguments = call["arguments"]
    required = [arguments[name] for name in tool.parameters.get("required") or () if name in arguments]
    known = Said(said)
    return bool(required) and not any(known.grounds_value(value) for value in required)


def _block(text: str, tools: Sequence[ToolSpec]) -> Any:
    """The call in a block's text (up to its closing tag), in either form, as `{"name", "arguments"}`."""
    body = text.strip().removeprefix(CALL_OPEN.strip())
    return xml_call(body, {t.name: t for t in tools}) if is_xml_call(body) else json_or_none(body)


def _dropped(held: list[Piece]) -> Piece:
    return Piece("", tokens=sum(p.tokens for p in held))


def _degenerate(text: str) -> bool:
    """Whether the last REPEATED_SPAN characters are one stretch of at most MAX_PERIOD repeated."""
    if len(text) < REPEATED_SPAN:
        return False
    tail = text[-REPEATED_SPAN:]
    return any(tail[period:] == tail[:-period] for period in range(1, MAX_PERIOD + 1))


def numbers(text: str) -> Iterator[float]:
    """The numbers in `text`, written in digits or as a few common words, by size (the sign is often a
    hyphen or a spaced minus: "x^2 - 7x"), also read as percentages."""
    said = [float(found.replace(",", "")) for found in _NUMBER.findall(text)]
    said += [_WORDS[word] for word in re.findall(r"[a-z]+", text.lower()) if word in _WORDS]
    for number in said:
        yield from (abs(number), abs(number) / 100)


class Said:
    """What the conversation said (and the offered tools' enums and defaults, and the answer's calls so far):
    a call's value is taken from it when each of its numbers was said, and for words, one of them."""

    def __init__(self, text: str) -> None:
        self.numbers = set(numbers(text))
        self.words = set(_words(text))

    def grounds(self, call: Any) -> bool:
        return self.grounds_value(call.get("arguments") if isinstance(call, dict) else None)

    def grounds_value(self, value: Any) -> bool:
        """Whether each of a JSON value's leaves was said."""
        return all(self._grounds(leaf) for leaf in _values(value))

    def add(self, call: Any) -> None:
        """A call the answer made: its values (a time every event shares) ground the later calls' too."""
        for value in _values(call.get("arguments") if isinstance(call, dict) else None):
            text = str(value)
            self.numbers.update(numbers(text))
            self.words.update(_words(text))

    def _grounds(self, value: bool | int | float | str) -> bool:
        if isinstance(value, bool):
            return True
        if isinstance(value, (int, float)):
            return abs(value) in self.numbers
        words = set(_words(value))
        return set(numbers(value)) <= self.numbers and (not words or bool(words & self.words))


def schema_values(schema: Any) -> Iterator[Any]:
    """The values a tool's schema itself names (enum, const, default): calls may take them unsaid."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("enum", "const", "default"):
                yield from value if key == "enum" and isinstance(value, list) else [value]
            else:
                yield from schema_values(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from schema_values(item)


def _words(text: str) -> Iterator[str]:
    return (word for word in re.findall(r"[^\W\d_]{3,}", text.lower()))


def _values(value: Any) -> Iterator[Any]:
    """The leaves of a JSON value."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _values(item)
    elif isinstance(value, list):
        for item in value:
            yield from _values(item)
    elif value is not None:
        yield value
