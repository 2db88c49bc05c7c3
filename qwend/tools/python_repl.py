"""`python_repl`: runs a Python snippet in the sandbox (qwend/tools/sandbox.py) and returns what it printed.

The module allow-list is a convenience that tells the model early what is there; the sandbox is the
security boundary, so code that gets around the list gains nothing.
"""

from __future__ import annotations

import ast

from qwend.tools.base import ToolContext, ToolError, tool
from qwend.tools.sandbox import SandboxUnavailable

# Seed 001's list, plus standard-library modules of the same kind (pure computation, no I/O).
ALLOWED_MODULES = frozenset({
    "math", "json", "datetime", "random", "itertools", "collections", "statistics", "fractions", "decimal",
    "re", "string", "functools", "operator", "heapq", "bisect", "textwrap", "cmath", "time", "calendar",
    "dataclasses", "typing", "enum", "copy", "pprint", "unicodedata", "hashlib", "base64", "difflib",
})


@tool(timeout=310, group="code")  # the sandbox's own wall clock (QWEND_SANDBOX_TIMEOUT, at most 300 s) stops it first
async def python_repl(code: str, context: ToolContext) -> str:
    """Execute Python code in a sandbox and return its printed output (stdout). Use print() to show results.

    Args:
        code: Python source to run; modules available: math, json, datetime, random, itertools, collections.
    """
    _check_imports(code)
    try:
        run = await context.sandbox.run_python(_echo_last_expression(code))
    except SandboxUnavailable as exc:
        raise ToolError(f"{exc}; install bubblewrap, or set QWEND_ALLOW_UNSANDBOXED_CODE=true at your own risk")
    limit = context.sandbox.limits
    if run.timed_out:
        raise ToolError(f"timed out after {limit.wall_seconds:g} s; the run was killed{_tail(run.stdout, 'output')}")
    if run.truncated:
        return run.stdout + f"\n[output truncated at {limit.output_bytes} bytes; the run was stopped]"
    if run.exit_code != 0:
        detail = run.stderr.strip() or f"exit status {run.exit_code}"
        if run.exit_code is not None and (run.exit_code < 0 or run.exit_code > 128):
            detail = f"killed by the sandbox (signal {abs(run.exit_code) % 128}): a resource limit was hit"
        raise ToolError(detail + _tail(run.stdout, "output before the error"))
    return run.stdout


def _check_imports(code: str) -> None:
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ToolError(f"SyntaxError: {exc.msg} (line {exc.lineno})") from None
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            if name.split(".")[0] not in ALLOWED_MODULES:
                allowed = ", ".join(sorted(ALLOWED_MODULES))
                raise ToolError(f"module {name!r} is not available in python_repl; available: {allowed}")


def _echo_last_expression(code: str) -> str:
    """`code` that also prints the repr of its last statement when that is a bare expression (not None), as the
    interactive interpreter does: the small model often sends `123 * 456` without print() and, given no
    output, guessed a wrong number. Lines before it are kept as written, so error line numbers stay true."""
    body = ast.parse(code).body
    if not body or not isinstance(body[-1], ast.Expr):
        return code
    last = body[-1]
    lines = code.splitlines(keepends=True)
    start = lines[last.lineno - 1].encode()[: last.col_offset].decode()  # offsets count UTF-8 bytes
    head = "".join(lines[: last.lineno - 1]) + start
    return (f"{head}__qwend_value = ({ast.get_source_segment(code, last)})\n"
            "if __qwend_value is not None:\n    print(repr(__qwend_value))\n")


def _tail(text: str, label: str) -> str:
    return f"\n{label}:\n{text[-2000:]}" if text.strip() else ""
