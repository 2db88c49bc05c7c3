import pytest

from qwend.chat.stops import StopMatcher


def run(stops, pieces):
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, hit = matcher.feed(piece)
        out.append(text)
        if hit:
            return "".join(out), True
    return "".join(out) + matcher.flush(), False


@pytest.mark.parametrize(
    "stops, pieces, expected",
    [
        ([], ["a", "b"], ("ab", False)),
        (["END"], ["hello ", "E", "N", "D", " after"], ("hello ", True)),
        (["END"], ["hello E", "NDING"], ("hello ", True)),
        (["END"], ["E", "N", "x"], ("ENx", False)),  # held back, then released when it cannot match
        (["END"], ["abc E"], ("abc E", False)),  # held at the end, flushed when the stream ends
        (["\n\n", "###"], ["one\n", "\ntwo"], ("one", True)),
        (["ab", "b"], ["xab"], ("x", True)),  # the earliest match wins
        ([""], ["text"], ("text", False)),  # empty stop strings are ignored
    ],
)
def test_stop_matcher(stops, pieces, expected):
    assert run(stops, pieces) == expected


def test_held_text_is_not_emitted_early():
    matcher = StopMatcher(["</answer>"])
    assert matcher.feed("42 </ans") == ("42 ", False)
    assert matcher.feed("wer>") == ("", True)
