"""The parsers of model output finish in linear time and never raise on pathological text (reliability.md
checklist item 31; the rest of the robustness suite: tests/unit/test_unsafe_code.py,
tests/real/test_robustness.py)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable

import pytest

from qwend.agents import react
from qwend.chat import parser, xml_calls
from qwend.chat.stops import StopMatcher
from qwend.tools import code_generator
from qwend.types import ToolSpec

# Each case runs in a forked process with a deadline: a catastrophic regex holds the GIL inside one C call,
# so a thread's join(timeout) could not return before it ends. The bound is generous: what is tested is
# linear behaviour (milliseconds here), not speed.

DEADLINE_S = 5.0
SIZE = 100_000
PATHOLOGICAL = {
    "open calls": '<tool_call>{"name": "' * (SIZE // 20),
    "unclosed call": "<tool_call>" + "{" * SIZE,
    "deep objects": '{"a":' * (SIZE // 5),
    "deep lists": "[{" + "[" * SIZE,
    "deep braces": "{{{{" * (SIZE // 4),
    "call of deep arguments": '<tool_call>{"name": "f", "arguments": ' + "[" * SIZE + "</tool_call>",
    "spaces in a fence": "```json\n{" + " " * SIZE + "x",
    "spaces": " " * SIZE + "x",
    "quotes": '"' * SIZE,
    "escaped quotes": '{"name": "' + '\\"' * (SIZE // 2),
    "close tags in a string": '<tool_call>{"name": "f", "arguments": {"s": "' + "</tool_call>" * (SIZE // 12),
    "think tags": "<think>" * (SIZE // 7),
    "name fragments": '"name": ' * (SIZE // 8) + " " * SIZE,
    "labels": "Action: " * (SIZE // 8) + "\nAction Input: " + " " * SIZE,
    "fences": "```python\n" * (SIZE // 10) + "x",
    "newlines and spaces": " \n" * (SIZE // 2),
    # Qwen3-Coder's form (chat/xml_calls.py)
    "open functions": "<tool_call>\n" + "<function=" * (SIZE // 10),
    "a long function name": "<tool_call>\n<function=" + "f" * SIZE,
    "open parameters": "<tool_call>\n<function=f>\n" + "<parameter=s>\n" * (SIZE // 14),
    "a long open value": "<tool_call>\n<function=f>\n<parameter=s>\n" + "</parameter" * (SIZE // 11),
    "many parameters": "<tool_call>\n<function=f>\n" + "<parameter=s>\nx\n</parameter>\n" * (SIZE // 30),
    "spaces in a function": "<tool_call>\n<function=f>\n" + " " * SIZE + "x",
}
TOOLS = (ToolSpec("f", "a tool", {"type": "object", "properties": {"s": {"type": "string"}}}),)


def _feed_whole(text: str, **options) -> None:
    output = parser.OutputParser(TOOLS, **options)
    output.feed(text)
    output.finish()


def _feed_pieces(text: str, **options) -> None:
    output = parser.OutputParser(TOOLS, **options)
    for at in range(0, len(text), 16):  # token-sized pieces, as a stream delivers them
        output.feed(text[at:at + 16])
    output.finish()


def _take_pieces(arguments, text: str) -> None:
    for at in range(0, len(text), 16):
        arguments.take(text[at:at + 16])


def _stops(text: str) -> None:
    matcher = StopMatcher(["</tool_call>", "Observation:", "\n\n\n"])
    for at in range(0, len(text), 16):
        matcher.feed(text[at:at + 16])
    matcher.flush()


PARSERS: dict[str, Callable[[str], object]] = {
    "OutputParser lenient": _feed_whole,
    "OutputParser trusted": lambda text: _feed_whole(text, trusted=True),
    "OutputParser streamed": _feed_pieces,
    "OutputParser streamed, trusted": lambda text: _feed_pieces(text, trusted=True),
    "OutputParser no tools": lambda text: parser.OutputParser().feed(text),
    "OutputParser in reasoning": lambda text: _feed_whole(text, in_reasoning=True),
    "xml_call": lambda text: xml_calls.xml_call(text.removeprefix("<tool_call>\n"), {"f": TOOLS[0]}),
    "XmlArguments streamed": lambda text: _take_pieces(xml_calls.XmlArguments(TOOLS[0]), text),
    "call_intent": parser.call_intent,
    "called_name": parser.called_name,
    "react.parse_step": lambda text: react.parse_step(text, {"f": {"type": "object"}, "calculator": {}}),
    "react.parse_input": react.parse_input,
    "code_generator.extract_code": code_generator.extract_code,
    "stop strings": _stops,
}


def _run(job: Callable[[], object], sender) -> None:
    try:
        job()
        sender.send(None)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which asserts there was none
        sender.send(f"{type(exc).__name__}: {str(exc)[:200]}")


def within_deadline(job: Callable[[], object]) -> str | None:
    """Run `job` in a forked process; the exception it raised (None: none). Fails past DEADLINE_S."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_run, args=(job, sender), daemon=True)
    process.start()
    try:
        if not receiver.poll(DEADLINE_S):
            pytest.fail(f"still running after {DEADLINE_S} s: not linear")
        return receiver.recv()
    finally:
        process.kill()
        process.join()


@pytest.mark.parametrize("name", list(PARSERS))
def test_parsers_are_linear_and_never_raise_on_pathological_output(name):
    function = PARSERS[name]
    failures = {}
    for case, text in PATHOLOGICAL.items():
        if (error := within_deadline(lambda: function(text))) is not None:
            failures[case] = error
    assert failures == {}


# every module-level regex of the modules that read model output, with how the code applies it (an anchored
# match of `\s*...` is linear where a search of it is quadratic); a new regex must be listed here
OUTPUT_REGEXES = {
    "qwend.chat.parser._CALL_HEAD": "match",
    "qwend.chat.parser._NAMED": "search",
    "qwend.agents.react._LABEL": "finditer",
    "qwend.agents.react._NAME": "match",
    "qwend.tools.code_generator._FENCE": "findall",
    "qwend.chat.xml_calls._FUNCTION_HEAD": "match",
    "qwend.chat.xml_calls._FUNCTION_NAME": "search",
    "qwend.chat.xml_calls._PARAMETER_OPEN": "match",
    "qwend.chat.xml_calls._SPACE": "match",
    "qwend.chat.xml_calls._FUNCTION_TAG_SO_FAR": "fullmatch",
}


def _module_patterns() -> dict[str, object]:
    found = {}
    for module in (parser, xml_calls, react, code_generator):
        for name, value in vars(module).items():
            if hasattr(value, "pattern") and hasattr(value, "finditer"):
                found[f"{module.__name__}.{name}"] = value
    return found


def test_every_output_regex_is_listed():
    assert set(_module_patterns()) == set(OUTPUT_REGEXES)


@pytest.mark.parametrize("name", list(OUTPUT_REGEXES))
def test_every_output_regex_is_linear(name):
    pattern, use = _module_patterns()[name], OUTPUT_REGEXES[name]

    def scan_all() -> None:
        for text in PATHOLOGICAL.values():
            result = getattr(pattern, use)(text)
            if use == "finditer":
                list(result)

    assert within_deadline(scan_all) is None
