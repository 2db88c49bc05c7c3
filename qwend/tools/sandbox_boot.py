"""The first code a sandboxed interpreter runs: qwend/tools/sandbox.py passes `SOURCE` with `-c`.

It sets the rlimits (soft == hard, so the code cannot raise them again), reads the program from stdin (never
from a command line or a file the host wrote), parses it, checks its imports against an optional module
list, and runs it. The parsing is here, not in the daemon, so that a huge or deeply nested program spends
the sandbox's CPU and memory limits, never the daemon's event loop or memory, and a parser crash kills
only the sandbox. It may run on an older interpreter than the daemon's (the system's python3 when a root
daemon's own lies where nobody may enter): standard library only, no newer syntax.

It is a string, not code of this package: it calls exec, which only the sandbox may do, and the daemon
never imports it as code (tests/unit/test_unsafe_code.py scans the package for such calls).
"""

SOURCE = r'''
import ast
import json
import resource
import sys
import traceback

FILENAME = "<sandbox>"


class Refused(Exception):
    """The program is not run; the message says why, for the caller."""


def main():
    options = json.loads(sys.argv[1])
    for name, value in options["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    code = sys.stdin.read()
    sys.stdin.close()
    sys.argv = [FILENAME]
    try:
        body, last = prepare(code, options.get("modules"), options.get("echo", False))
    except Refused as refusal:
        sys.stderr.write("%s\n" % refusal)
        sys.exit(1)
    del code
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(body, namespace)
        if last is not None:
            value = eval(last, namespace)
            if value is not None:
                print(repr(value))
    except SystemExit:
        raise
    except BaseException as error:  # the traceback starts at the program's code, not at this bootstrap
        traceback.print_exception(type(error), error, _program_frames(error.__traceback__))
        sys.exit(1)


def prepare(code, modules=None, echo=False):
    """`code` compiled as (body, last): `last` is its final bare expression, compiled apart so that its value
    can be shown as the interactive interpreter does (None when `echo` is off or there is none)."""
    try:
        tree = ast.parse(code, FILENAME)
        if modules is not None:
            check_imports(tree, frozenset(modules))
        last = None
        if echo and tree.body and isinstance(tree.body[-1], ast.Expr):
            last = compile(ast.Expression(tree.body.pop().value), FILENAME, "eval")
        return compile(tree, FILENAME, "exec"), last
    except SyntaxError as error:
        raise Refused("SyntaxError: %s (line %s)" % (error.msg, error.lineno)) from None
    except (RecursionError, MemoryError, ValueError) as error:  # too deeply nested or too big; ValueError: NUL
        detail = "%s: %s" % (type(error).__name__, error) if str(error) else type(error).__name__
        raise Refused("the program cannot be parsed: %s" % detail) from None


def check_imports(tree, modules):
    """Refuse an import of a top-level module outside `modules`: a convenience that tells the model early
    what is there; the sandbox around it is the boundary."""
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        for name in names:
            if name.split(".")[0] not in modules:
                raise Refused("module %r is not available in python_repl; available: %s"
                              % (name, ", ".join(sorted(modules))))


def _program_frames(tb):
    first = tb
    while tb is not None and tb.tb_frame.f_code.co_filename != FILENAME:
        tb = tb.tb_next
    return tb or first


if __name__ == "__main__":
    main()
'''
