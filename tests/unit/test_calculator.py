"""The calculator: seed 001's examples, and injections and huge numbers refused without evaluating them."""

import pytest

from qwend.tools.base import ToolError
from qwend.tools.calculator import calculator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("2**10 + sqrt(144)", "1036"),  # seed 001's example
        ("sqrt(16) * 5", "20"),
        ("2**16", "65536"),
        ("2**8 + sqrt(16) * pi", "268.566370614359"),
        ("sin(pi/2) + cos(0)", "2"),
        ("log(e) + exp(0)", "2"),
        ("1/3", "0.333333333333333"),
        ("2^10", "1024"),
        ("-(3 - 5) % 3", "2"),
        ("tan(pi/4)", "1"),
        ("5!", "120"),
        ("factorial(5) / 4", "30"),
        ("15/100 * 240", "36"),
        ("9/4", "2.25"),
        ("sum(2, 3, 5, 7) / 4", "4.25"),  # aggregates, as models write them
        ("mean([2, 3, 5, 7])", "4.25"),
        ("average(1, 2)", "1.5"),
        ("max(3, 9, 2) - min((4, 1))", "8"),
    ],
)
def test_seed_capabilities(expression, value):
    assert calculator(expression) == value


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("__import__('os').system('touch /tmp/qwend-pwned')", "only plain calls"),
        ("().__class__.__base__.__subclasses__()", "only plain calls"),
        ("lambda: 0", "Lambda is not allowed"),
        ("x.__class__", "Attribute is not allowed"),
        ("open('/etc/passwd')", "unknown function 'open'"),
        ("Symbol('__import__(\"os\")')", "unknown function 'Symbol'"),
        ("'a' * 10", "Constant is not allowed"),
        ("2**2**2**2**2**10", "exponent too large"),
        ("10**10**10", "exponent too large"),
        ("(2**9999)**9999", "result too large"),
        ("factorial(10**9)", "factorial takes one whole number from 0 to 1000"),
        ("factorial(2.5)", "factorial takes one whole number"),
        ("isprime(10**10**6)", "unknown function 'isprime'"),
        ("1" * 1001, "longer than 1000"),
        ("-" * 60 + "1", "nested deeper"),
        ("1/0", "division by zero"),
        ("log(0)", "undefined or infinite"),
        ("2 +", "not a valid expression"),
        ("sum()", "sum needs at least one number"),
        ("sum([1, [2]])", "List is not allowed"),
    ],
)
def test_refusals(expression, reason):
    with pytest.raises(ToolError, match=reason.replace("(", r"\(")):
        calculator(expression)


def test_nothing_was_executed():
    import os

    assert not os.path.exists("/tmp/qwend-pwned")
