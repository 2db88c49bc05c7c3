"""`python_repl`: runs a Python snippet in the sandbox (qwend/tools/sandbox.py) and returns what it printed.

The module allow-list is a convenience that tells the model early what is there; the sandbox is the
security boundary, so code that gets around the list gains nothing. The daemon never parses the code: the
size cap is checked first, then the syntax, the imports and the echo of a last bare expression are handled
by the sandbox's bootstrap (qwend/tools/sandbox_boot.py), under the sandbox's limits.
"""

from __future__ import annotations

from qwend.tools.base import ToolContext, ToolError, tool
from qwend.tools.sandbox import CodeTooLarge, SandboxUnavailable

# Seed 001's list, plus standard-library modules of the same kind (pure computation, no I/O).
ALLOWED_MODULES = frozenset({
    "math", "json", "datetime", "random", "itertools", "collections", "statistics", "fractions", "decimal",
    "re", "string", "functools", "operator", "heapq", "bisect", "textwrap", "cmath", "time", "calendar",
    "dataclasses", "typing", "enum", "copy", "pprint", "unicodedata", "hashlib", "base64", "difflib",
})


# The sandbox's own wall clock (QWEND_SANDBOX_TIMEOUT, at most 300 s) stops a run first; this one also bounds
# the wait for a free sandbox (QWEND_SANDBOX_MAX_RUNNING).
@tool(timeout=310, group="code")
async def python_repl(code: str, context: ToolContext) -> str:
    """Execute Python code in a sandbox and return its printed output (stdout). Use print() to show results.

    Args:
        code: Python source to run; modules available: math, json, datetime, random, itertools, collections.
    """
    try:
        run = await context.sandbox.run_python(code, modules=ALLOWED_MODULES, echo=True)
    except CodeTooLarge as exc:
        raise ToolError(f"{exc} (QWEND_SANDBOX_MAX_CODE_KB); send a shorter program") from None
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


def _tail(text: str, label: str) -> str:
    return f"\n{label}:\n{text[-2000:]}" if text.strip() else ""
