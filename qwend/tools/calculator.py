"""`calculator`: arithmetic with SymPy, without ever handing the text to `eval` or `sympify`.

The expression is parsed with Python's `ast` and walked node by node: numbers, `+ - * / ** %`, unary signs,
the names `pi`, `e`, `E`, `I` and calls of the listed functions. SymPy objects are built from those nodes
directly, so no string reaches SymPy's parser (which `eval`s). Size bounds keep it fast: the text length,
the nesting depth, every exponent and the bits of every exact power are capped before computing.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any

from qwend.tools.base import ToolError, tool

MAX_LENGTH = 1000
MAX_DEPTH = 40
MAX_EXPONENT = 10_000
MAX_RESULT_BITS = 100_000  # about 30,000 decimal digits
MAX_FACTORIAL = 1000
FUNCTIONS = ("sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "log", "ln", "exp", "abs", "floor",
             "ceiling", "sinh", "cosh", "tanh", "factorial")
# of any count of numbers, written as arguments or one list: models reach for them ("sum(2, 3, 5) / 3")
AGGREGATES = ("sum", "mean", "average", "avg", "min", "max")
CONSTANTS = ("pi", "e", "E", "I")


@tool(timeout=5)
def calculator(expression: str) -> str:
    """Evaluate a mathematical expression: + - * / ** (power), sqrt, sin, cos, tan, log, exp, pi, e,
    sum, mean, min, max.

    Args:
        expression: Mathematical expression to evaluate, for example "2**10 + sqrt(144)".
    """
    try:
        return format_value(evaluate(expression))
    except (OverflowError, ValueError, ArithmeticError, TypeError) as exc:
        raise ToolError(f"cannot evaluate: {exc}") from None


def evaluate(expression: str) -> Any:
    """The SymPy value of `expression`, or ToolError saying what is not allowed."""
    if len(expression) > MAX_LENGTH:
        raise ToolError(f"expression is longer than {MAX_LENGTH} characters")
    text = re.sub(r"(\d+)\s*!", r"factorial(\1)", expression.strip().replace("^", "**"))  # 5! as people write it
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not a valid expression: {exc.msg}") from None
    except (ValueError, RecursionError):
        raise ToolError("not a valid expression") from None
    return _Builder().build(tree.body, 0)


def format_value(value: Any) -> str:
    """Exact integers as integers (`1036`), everything else as a 15-digit number (`16.5663706143592`)."""
    import sympy

    if value.is_Integer:
        return str(int(value))
    numeric = sympy.N(value, 15)
    if numeric.is_Integer or (numeric.is_Float and abs(numeric) < 1e15 and numeric == int(numeric)):
        return str(int(numeric))
    if numeric.free_symbols or not numeric.is_number:
        raise ToolError("the expression has no numeric value")
    if numeric.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise ToolError(f"the result is undefined or infinite ({numeric})")
    text = str(numeric)
    if numeric.is_Float and "e" not in text:
        text = text.rstrip("0").rstrip(".")  # 2.25, not 2.25000000000000
    return text


class _Builder:
    def __init__(self) -> None:
        import sympy

        self.sympy = sympy
        self.functions = {name: getattr(sympy, name) for name in FUNCTIONS if name not in ("ln", "abs")}
        self.functions |= {"ln": sympy.log, "abs": sympy.Abs}
        self.constants = {"pi": sympy.pi, "e": sympy.E, "E": sympy.E, "I": sympy.I}
        mean = lambda *values: sympy.Add(*values) / len(values)  # noqa: E731
        self.aggregates = {"sum": lambda *values: sympy.Add(*values), "mean": mean, "average": mean, "avg": mean,
                           "min": sympy.Min, "max": sympy.Max}

    def build(self, node: ast.AST, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ToolError(f"expression is nested deeper than {MAX_DEPTH} levels")
        sympy = self.sympy
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return sympy.Integer(node.value) if isinstance(node.value, int) else sympy.Float(node.value)
        if isinstance(node, ast.Name):
            if node.id in self.constants:
                return self.constants[node.id]
            raise ToolError(f"unknown name {node.id!r}; allowed: {', '.join(CONSTANTS)}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
            operand = self.build(node.operand, depth + 1)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = self.build(node.left, depth + 1), self.build(node.right, depth + 1)
            return self._binary(node.op, left, right)
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.keywords:
                raise ToolError(f"only plain calls of {', '.join(FUNCTIONS + AGGREGATES)} are allowed")
            if node.func.id in self.aggregates:
                return self._aggregate(node.func.id, node.args, depth)
            function = self.functions.get(node.func.id)
            if function is None:
                raise ToolError(f"unknown function {node.func.id!r}; allowed: {', '.join(FUNCTIONS + AGGREGATES)}")
            arguments = [self.build(arg, depth + 1) for arg in node.args]
            if node.func.id == "factorial" and not (
                len(arguments) == 1 and arguments[0].is_Integer and 0 <= arguments[0] <= MAX_FACTORIAL
            ):
                raise ToolError(f"factorial takes one whole number from 0 to {MAX_FACTORIAL}")
            return function(*arguments)
        raise ToolError(f"{type(node).__name__} is not allowed in an expression")

    def _aggregate(self, name: str, arguments: list[ast.expr], depth: int) -> Any:
        """sum/mean/min/max of numbers given as arguments, or as one list or tuple of them."""
        if len(arguments) == 1 and isinstance(arguments[0], (ast.List, ast.Tuple)):
            arguments = arguments[0].elts
        if not arguments:
            raise ToolError(f"{name} needs at least one number")
        return self.aggregates[name](*(self.build(arg, depth + 1) for arg in arguments))

    def _binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, (ast.Div, ast.Mod)):
            if right == 0:
                raise ToolError("division by zero")
            return left / right if isinstance(op, ast.Div) else left % right
        if isinstance(op, ast.Pow):
            _check_power(left, right)
            return left**right
        raise ToolError(f"operator {type(op).__name__} is not allowed")


def _check_power(base: Any, exponent: Any) -> None:
    """Refuse powers whose exact result would be huge, before SymPy computes them."""
    if not exponent.is_number:
        return
    size = abs(complex(exponent.evalf(15))) if exponent.is_finite else math.inf
    if size > MAX_EXPONENT:
        raise ToolError(f"exponent too large (limit {MAX_EXPONENT})")
    if base.is_Rational and exponent.is_Rational:
        magnitude = max(abs(base.p), abs(base.q), 2)
        if math.log2(magnitude) * size > MAX_RESULT_BITS:
            raise ToolError(f"result too large (limit {MAX_RESULT_BITS} bits)")
