import json
from collections import Counter

import httpx
import jsonschema
import pytest

from qwend.cli.evals.scoring import (
    Outcome, arguments_match, leaks_markup, parse_content_calls, score, summarise, totals, value_matches,
)
from qwend.cli.evals.tools import CATEGORIES, _matches, load_cases, run_case


def _variants(value):
    """Every concrete value an expected value stands for, one any_of choice at a time (the others first); a
    null choice (the argument may be left out) drops the key."""
    if isinstance(value, dict) and set(value) == {"any_of"}:
        return [v for option in value["any_of"] for v in _variants(option)]
    if isinstance(value, dict):
        base = {k: _variants(v)[0] for k, v in value.items()}
        variants = [base] + [{**base, k: alt} for k, v in value.items() for alt in _variants(v)[1:]]
        return [{k: v for k, v in variant.items() if v is not None} for variant in variants]
    if isinstance(value, list):
        base = [_variants(v)[0] for v in value]
        return [base] + [base[:i] + [alt] + base[i + 1:] for i, v in enumerate(value) for alt in _variants(v)[1:]]
    return [value]


def test_cases_cover_every_category_and_expected_calls_validate_against_the_tools():
    data = load_cases()
    cases, tools = data["cases"], data["tools"]
    counts = Counter(case["category"] for case in cases)
    assert set(counts) == set(CATEGORIES)
    assert len(cases) >= 220 and counts["irrelevant"] >= 50 and all(n >= 30 for n in counts.values()), counts
    ids = [case["id"] for case in cases]
    assert len(ids) == len(set(ids))
    for tool in tools.values():
        jsonschema.Draft202012Validator.check_schema(tool["function"]["parameters"])
    assert {name for case in cases for name in case["tools"]} == set(tools)  # every tool is offered somewhere
    for case in cases:
        where = case["id"]
        assert set(case["tools"]) <= set(tools), where
        assert len(case["tools"]) == len(set(case["tools"])), where
        assert (case["category"] == "irrelevant") == (case["expected"] == []), where
        assert case["messages"][-1]["role"] == "user", where
        for call in case["expected"]:
            assert call["name"] in case["tools"], where
            schema = tools[call["name"]]["function"]["parameters"]
            for arguments in _variants(call["arguments"]):
                jsonschema.validate(arguments, schema)
                assert arguments_match(call["arguments"], arguments), where
        names = [call["name"] for call in case["expected"]]
        if case["category"] == "single":
            assert len(case["tools"]) == 1 and len(names) == 1, where
        elif case["category"] == "choose":
            assert 3 <= len(case["tools"]) <= 5 and len(names) == 1, where
        elif case["category"] == "parallel":
            assert len(names) >= 2 and len(set(names)) == 1, where
        elif case["category"] == "parallel_multiple":
            assert len(set(names)) >= 2, where
        elif case["category"] == "multi_turn":
            assert any(m.get("tool_calls") for m in case["messages"]), where
        call_ids = {c["id"] for m in case["messages"] for c in m.get("tool_calls") or []}
        assert {m["tool_call_id"] for m in case["messages"] if m["role"] == "tool"} == call_ids, where


def test_matching_normalises_and_tolerates_extra_arguments():
    expected = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert _matches(expected, [("get_weather", {"city": " paris ", "unit": "celsius"})])
    assert not _matches(expected, [("get_weather", {"city": "Lyon"})])
    assert not _matches(expected, [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Paris"})])
    assert _matches([{"name": "set_timer", "arguments": {"minutes": 5}}], [("set_timer", {"minutes": "5"})])
    assert _matches([{"name": "f", "arguments": {"x": 0.1}}], [("f", {"x": 0.1000000001})])
    assert not _matches(expected, [("get_weather", "Paris")])


def test_parallel_calls_match_in_any_order():
    expected = [{"name": "f", "arguments": {"x": 1}}, {"name": "f", "arguments": {"x": 2}}]
    assert _matches(expected, [("f", {"x": 2}), ("f", {"x": 1})])
    assert not _matches(expected, [("f", {"x": 1}), ("f", {"x": 1})])


def test_any_of_nested_objects_and_lists():
    city = {"any_of": ["New York", "New York City", "NYC"]}
    assert value_matches(city, "new york city ") and value_matches(city, "NYC")
    assert not value_matches(city, "Newark")
    guests = {"adults": 2, "children": {"any_of": [1, "one"]}}
    assert value_matches(guests, {"adults": 2, "children": 1, "pets": 0})
    assert not value_matches(guests, {"adults": 2}) and not value_matches(guests, 2)
    assert value_matches([1, 2.5, 3], [3, 1, "2.5"])  # lists compare in any order
    assert not value_matches([1, 2], [1, 2, 2]) and not value_matches([1, 2], [1, 1])
    assert value_matches(["rice", {"any_of": ["chickpeas", "garbanzo beans"]}], ["Garbanzo beans", "Rice"])


def test_an_any_of_with_null_lets_an_optional_argument_be_left_out():
    expected = [{"name": "area", "arguments": {"radius": 2, "unit": {"any_of": ["cm", None]}}}]
    assert _matches(expected, [("area", {"radius": 2})]) and _matches(expected, [("area", {"radius": 2, "unit": "cm"})])
    assert not _matches(expected, [("area", {"radius": 2, "unit": "m"})])
    assert not _matches([{"name": "area", "arguments": {"radius": 2, "unit": "cm"}}], [("area", {"radius": 2})])
    assert value_matches({"guests": {"adults": 1, "children": {"any_of": [0, None]}}}, {"guests": {"adults": 1}})


def test_lenient_reading_of_calls_written_as_text():
    call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    tagged = f"<tool_call>\n{json.dumps(call)}\n</tool_call>\n<tool_call>{json.dumps(call)}</tool_call>"
    assert parse_content_calls(tagged) == [("get_weather", {"city": "Paris"})] * 2
    assert parse_content_calls(f"<tool_call>{json.dumps(call)}") == [("get_weather", {"city": "Paris"})]  # unclosed
    assert parse_content_calls(json.dumps(call)) == [("get_weather", {"city": "Paris"})]
    assert parse_content_calls(json.dumps([call, {"name": "f", "parameters": {"x": 1}}])) == [
        ("get_weather", {"city": "Paris"}), ("f", {"x": 1})]
    assert parse_content_calls(f"Sure:\n```json\n{json.dumps(call)}\n```") == [("get_weather", {"city": "Paris"})]
    as_string = {"function": {"name": "f", "arguments": json.dumps({"x": 1})}}
    assert parse_content_calls(json.dumps(as_string)) == [("f", {"x": 1})]
    assert parse_content_calls("It is 18°C in Paris.") == []
    assert parse_content_calls('{"city": "Paris"}') == [] and parse_content_calls('{"name": "Ottawa"}') == []
    assert parse_content_calls("Use {braces} like this") == []
    assert parse_content_calls(None) == []


def test_leaks_are_markup_or_calls_in_content():
    assert leaks_markup('<tool_call>{"name": "f", "arguments": {}}</tool_call>')
    assert leaks_markup("<tools>\n[...]\n</tools>") and leaks_markup("<tool_call")
    assert leaks_markup('{"name": "f", "arguments": {"x": 1}}')
    assert not leaks_markup("The answer is 4.") and not leaks_markup(None)


TOOLS = {"set_timer": {"type": "function", "function": {"name": "set_timer", "parameters": {
    "type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]}}}}
CASE = {"id": "t", "category": "single", "tools": ["set_timer"], "messages": [{"role": "user", "content": "5 min"}],
        "expected": [{"name": "set_timer", "arguments": {"minutes": 5}}]}


def _wire(name, arguments):
    return {"tool_calls": [{"id": "c", "type": "function", "function": {"name": name, "arguments": arguments}}]}


def test_invalid_calls_are_counted_and_never_correct():
    assert score(CASE, TOOLS, _wire("set_timer", '{"minutes": 5}'), lenient=False) == {
        "well_formed": True, "correct": True, "called": True, "invalid": 0, "leaked": False}
    for message in (_wire("set_timer", '{"minutes": "5"}'),  # matches, but not valid against the schema
                    _wire("set_timer", "[5]"), _wire("set_timer", "{oops"), _wire("set_alarm", '{"minutes": 5}'),
                    _wire("set_timer", "{}")):
        got = score(CASE, TOOLS, message, lenient=False)
        assert got["invalid"] == 1 and got["called"] and not got["correct"] and not got["well_formed"], message
    no_call = {**CASE, "category": "irrelevant", "expected": []}
    assert score(no_call, TOOLS, {"content": "Hello!"}, lenient=False)["correct"]
    assert not score(no_call, TOOLS, _wire("set_timer", '{"minutes": 5}'), lenient=False)["correct"]


def test_lenient_scoring_reads_calls_from_content_only_when_asked():
    message = {"content": '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>'}
    strict = score(CASE, TOOLS, message, lenient=False)
    assert not strict["called"] and not strict["correct"] and strict["leaked"]
    lenient = score(CASE, TOOLS, message, lenient=True)
    assert lenient["called"] and lenient["correct"] and lenient["invalid"] == 0 and lenient["leaked"]


def test_run_case_sends_the_temperature_and_records_tokens_and_time():
    bodies = []

    def answer(request):
        bodies.append(json.loads(request.content))
        message = {"role": "assistant", "content": '{"name": "set_timer", "arguments": {"minutes": 5}}'}
        return httpx.Response(200, json={"choices": [{"message": message, "finish_reason": "length"}],
                                         "usage": {"completion_tokens": 17}})

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        greedy = run_case(client, "http://x", CASE, TOOLS, {}, temperature=0.0, lenient=True)
        default = run_case(client, "http://x", CASE, TOOLS, {"constrained_decoding": False}, temperature=None)
    assert bodies[0]["temperature"] == 0 and "temperature" not in bodies[1]
    assert bodies[1]["constrained_decoding"] is False and bodies[0]["tools"] == [TOOLS["set_timer"]]
    assert greedy.correct and greedy.leaked and greedy.truncated and greedy.completion_tokens == 17
    assert greedy.seconds >= 0 and not default.called and not default.correct


def test_run_case_reports_http_errors():
    with httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(500))) as client:
        outcome = run_case(client, "http://x", CASE, TOOLS, {})
    assert outcome.error and not outcome.correct


def test_summary_rates_counts_and_token_stats():
    outcomes = [
        Outcome("single", True, True, True, completion_tokens=10, seconds=1.0),
        Outcome("single", False, False, True, invalid=2, leaked=True, truncated=True, completion_tokens=30,
                seconds=3.0),
        Outcome("irrelevant", False, True, False, completion_tokens=5, seconds=0.5),
        Outcome("irrelevant", False, False, False, error="ConnectError: refused"),
    ]
    table = summarise(outcomes)
    single = table["single"]
    assert single["n"] == 2 and single["correct"] == 0.5 and single["invalid_calls"] == 2
    assert single["leaks"] == 1 and single["truncated"] == 1
    assert single["completion_tokens"] == {"mean": 20, "max": 30} and single["seconds"] == {"mean": 2.0, "max": 3.0}
    assert table["irrelevant"]["no_call"] == 1.0 and table["irrelevant"]["errors"] == 1
    assert table["irrelevant"]["seconds"] == {"mean": 0.5, "max": 0.5}
    assert totals(table)["n"] == 4 and totals(table)["correct"] == pytest.approx(0.5)
    json.dumps(table)  # the report is JSON-able


def test_report_prints_a_column_per_server_and_the_counts_below():
    from rich.console import Console

    from qwend.cli.evals.tools import print_report

    table = summarise([Outcome("single", True, True, True, completion_tokens=12, seconds=0.4),
                       Outcome("irrelevant", False, True, False, leaked=True, completion_tokens=40, seconds=1.5)])
    servers = {label: {"lenient": label == "llama_cpp.server", "categories": table, "totals": totals(table)}
               for label in ("qwend (grammar)", "llama_cpp.server")}
    report = {"model": "m", "temperature": None, "repeats": 3, "max_tokens": 256, "servers": servers}
    console = Console(record=True, width=200)
    print_report(report, console)
    text = console.export_text()
    assert "temperature server default, 3 runs per case" in " ".join(text.split())
    assert "qwend (grammar)" in text and "llama_cpp.server" in text and "100% no call" in text
    assert "calls with invalid arguments" in text and "so leaks are expected" in " ".join(text.split())
    assert "12/12 tok 0.4/0.4 s" in text and "40/40 tok 1.5/1.5 s" in text
    json.dumps(report)
