from qwend.cli.evals.tools import CATEGORIES, _matches, load_cases


def test_cases_cover_every_category_with_at_least_80_in_all():
    data = load_cases()
    counts = {c: sum(case["category"] == c for case in data["cases"]) for c in CATEGORIES}
    assert sum(counts.values()) >= 80 and all(n >= 15 for n in counts.values())
    for case in data["cases"]:
        assert set(case["tools"]) <= set(data["tools"])
        assert (case["category"] == "irrelevant") == (case["expected"] == [])


def test_matching_normalises_and_tolerates_extra_arguments():
    expected = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert _matches(expected, [("get_weather", {"city": " paris ", "unit": "celsius"})])
    assert not _matches(expected, [("get_weather", {"city": "Lyon"})])
    assert not _matches(expected, [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Paris"})])
    assert _matches([{"name": "set_timer", "arguments": {"minutes": 5}}], [("set_timer", {"minutes": "5"})])


def test_parallel_calls_match_in_any_order():
    expected = [{"name": "f", "arguments": {"x": 1}}, {"name": "f", "arguments": {"x": 2}}]
    assert _matches(expected, [("f", {"x": 2}), ("f", {"x": 1})])
    assert not _matches(expected, [("f", {"x": 1}), ("f", {"x": 1})])
