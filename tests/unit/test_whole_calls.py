"""What a generation under the call grammar may hand on (chat/calls.py), and the relevance judge's reading of
the model's yes/no odds (chat/relevance.py)."""

from __future__ import annotations

import asyncio
import math

from qwend.chat.calls import REPEATED_SPAN, whole_calls
from qwend.chat.relevance import yes_odds
from qwend.engine.base import Finished, Piece, Prefill
from qwend.types import TokenLogprob


def block(name: str, arguments: str) -> list[str]:
    return ["<tool_call>\n", '{"name": "', name, '", "arguments": ', arguments, "}", "\n</tool_call>"]


def handed_on(pieces: list[str], said: str = "", reason: str = "stop"):
    async def generated():
        yield Prefill(0)
        for text in pieces:
            yield Piece(text)
        yield Finished(reason)

    async def collect():
        return [item async for item in whole_calls(generated(), said)]

    items = asyncio.run(collect())
    text = "".join(i.text for i in items if isinstance(i, Piece))
    tokens = sum(i.tokens for i in items if isinstance(i, Piece))
    return text, items[-1], tokens


def test_whole_calls_are_handed_on_as_generated():
    pieces = block("f", '{"city": "Paris"}') + ["\n"] + block("f", '{"city": "Rome"}')
    text, finished, tokens = handed_on(pieces, "Paris and Rome")
    assert text == "".join(pieces) and finished == Finished("stop") and tokens == len(pieces)


def test_a_call_cut_off_is_dropped_with_finish_length_and_still_counted():
    pieces = block("f", '{"city": "Paris"}') + ["\n", "<tool_call>\n", '{"name": "f", "arguments": {"ci']
    text, finished, tokens = handed_on(pieces, "Paris", reason="length")
    assert text == "".join(block("f", '{"city": "Paris"}'))
    assert finished == Finished("length") and tokens == len(pieces)


def test_a_repeated_call_ends_the_answer_and_is_left_out():
    once = block("f", '{"city": "Paris"}')
    text, finished, _ = handed_on(once + ["\n"] + once + ["\n"] + once, "Paris")
    assert text == "".join(once) and finished == Finished("stop")


def test_a_later_call_with_a_number_nobody_said_ends_the_answer():
    first, second = block("n", '{"confidence": 0.95}'), block("n", '{"confidence": 0.99}')
    text, _, _ = handed_on(first + ["\n"] + second, "sample size at 95% confidence")
    assert text == "".join(first)
    said = "x^2 - 7x + 10 = 0, then 3x^2 + 6x - 9, for two of them"
    calls = block("q", '{"a": 1, "b": -7, "c": 10}') + block("q", '{"a": 3, "b": 6, "c": -9, "n": 2}')
    assert handed_on(calls, said)[0] == "".join(calls)


def test_a_call_whose_text_repeats_one_stretch_over_and_over_is_stopped():
    pieces = ["<tool_call>\n", '{"name": "f", "arguments": {"text": "'] + ["ha "] * REPEATED_SPAN
    text, finished, tokens = handed_on(pieces)
    assert text == "" and finished == Finished("length") and tokens < len(pieces)


def test_yes_odds_read_either_word_in_any_case_from_the_alternatives():
    first = TokenLogprob("yes", math.log(0.5), (), (("yes", math.log(0.5), ()), ("Yes", math.log(0.1), ()),
                                                   ("no", math.log(0.2), ()), (" No", math.log(0.1), ())))
    assert math.isclose(yes_odds(first), math.log(0.6 / 0.3))
    only_yes = TokenLogprob("yes", -0.1, (), (("yes", -0.1, ()), ("Sure", -3.0, ())))
    assert yes_odds(only_yes) == -0.1 - (-4.0)  # "no" unseen: a little below the least likely seen


def test_a_later_call_with_words_nobody_said_ends_the_answer():
    said = 'Tell me a joke about cats.\n{"properties": {"unit": {"enum": ["celsius", "fahrenheit"]}}}'
    first, second = block("w", '{"location": "New York"}'), block("c", '{"expression": "2 + 2"}')
    assert handed_on(first + second, said)[0] == "".join(first)
    paris, rome = block("w", '{"location": "Paris", "unit": "celsius"}'), block("w", '{"location": "Rome"}')
    assert handed_on(paris + rome, "Weather in Paris and Rome?\n" + said)[0] == "".join(paris + rome)


def test_values_the_schema_names_or_an_earlier_call_made_ground_later_calls():
    from qwend.chat.calls import schema_values

    schema = {"properties": {"unit": {"enum": ["celsius", "kelvin"], "default": "celsius"},
                             "symbol": {"type": "string", "description": "Ticker, e.g. AAPL"}}}
    assert list(schema_values(schema)) == ["celsius", "kelvin", "celsius"]  # never a description's example
    gym = [block("event", '{"title": "Gym", "date": "2025-03-10", "time": "14:00"}'),
           block("event", '{"title": "Gym", "date": "2025-03-17", "time": "14:00"}')]
    said = "Add Gym to my calendar on 2025-03-10 and again on 2025-03-17."
    assert handed_on(gym[0] + gym[1], said)[0] == "".join(gym[0] + gym[1])


def test_a_first_call_is_made_up_when_no_required_value_was_said_whatever_its_shape():
    from qwend.chat.calls import made_up
    from qwend.types import ToolSpec

    schema = {"type": "object", "properties": {"where": {}, "options": {}}, "required": ["where", "options"]}
    tools = [ToolSpec("get_weather", "", schema)]

    def call(arguments: str) -> str:
        return "".join(block("get_weather", arguments))

    # objects and lists as required values are read leaf by leaf (they crashed the check once)
    assert made_up(call('{"where": {"city": "New York"}, "options": ["celsius"]}'), tools, "What is 2 + 2?")
    assert not made_up(call('{"where": {"city": "Paris"}, "options": []}'), tools, "Weather in Paris?")
    assert not made_up(call('{"where": "nowhere"'), tools, "What is 2 + 2?")  # not whole: not judged here
