"""python_repl's bounds on input size and concurrency, in the real sandbox: an oversized program is refused
before anything parses it, the daemon never parses a program at all (the sandbox does, under its limits),
a program that breaks the parser is a tool error, and no more sandboxes live at once than the cap allows."""

import ast
import asyncio
import os

import pytest

from qwend.settings import Settings
from qwend.tools import sandbox as sandbox_module
from qwend.tools.sandbox import CodeTooLarge, Limits, Sandbox
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend


@pytest.fixture
def runtime(tmp_path):
    return fake_runtime(tmp_path, FakeBackend("hi"), sandbox_max_code_kb=1, sandbox_max_running=3)


async def repl(runtime, code: str) -> dict:
    return (await runtime.tools.invoke("python_repl", {"code": code})).to_dict()


def test_the_settings_reach_the_sandbox(runtime):
    assert runtime.sandbox.limits.code_bytes == 1024 and runtime.sandbox.max_running == 3
    defaults = Settings(_env_file=None)
    assert defaults.sandbox_max_code_kb == 256 and defaults.sandbox_max_running == (os.cpu_count() or 1)


def parses_of(monkeypatch, programs: set[str]) -> list[str]:
    """The programs among `programs` that `ast.parse` is called with in this process, from now on."""
    seen: list[str] = []
    real_parse = ast.parse

    def watched(source, *args, **kwargs):
        if source in programs:
            seen.append(source)
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", watched)
    return seen


async def test_oversized_code_is_refused_before_anything_reads_it(runtime, monkeypatch):
    started = []

    async def watched_run(*args, **kwargs):
        started.append(args)
        return await real_run(*args, **kwargs)

    real_run = sandbox_module._run
    monkeypatch.setattr(sandbox_module, "_run", watched_run)
    programs = ("x" * 1025, "é" * 513, "x" * (5 << 20))  # 513 characters, 1026 UTF-8 bytes; then 5 MiB
    parsed = parses_of(monkeypatch, set(programs))
    for code in programs:
        result = await repl(runtime, code)
        assert result["success"] is False and "over 1024 bytes" in result["error"], result
        assert "QWEND_SANDBOX_MAX_CODE_KB" in result["error"]
    assert parsed == [] and started == []
    with pytest.raises(CodeTooLarge):
        await Sandbox(Limits(code_bytes=10)).run_python("print('eleven')")


async def test_the_client_is_told_why(runtime):
    async with client_for(runtime) as client:
        reply = await client.post("/v1/tools/python_repl/invoke", json={"arguments": {"code": "1" * 2000}})
    assert reply.status_code == 200
    body = reply.json()
    assert body["success"] is False and "over 1024 bytes" in body["error"]


@pytest.mark.parametrize("code", [
    "(" * 100_000 + ")" * 100_000,  # the parser's nesting limit: a SyntaxError
    "-" * 200_000 + "1",  # deep unary nesting: runs the parser out of memory or recursion
    "a" + ".b" * 100_000,  # a deep attribute chain: RecursionError in the compiler
    "[" * 60_000 + "]" * 60_000,
    "print(1)\0",  # a NUL byte: ValueError or SyntaxError, depending on the interpreter
])
async def test_code_that_breaks_the_parser_is_a_tool_error(tmp_path, code):
    runtime = fake_runtime(tmp_path, FakeBackend("hi"))
    result = await repl(runtime, code)
    assert result["success"] is False
    assert "SyntaxError" in result["error"] or "cannot be parsed" in result["error"] or "killed" in result["error"]
    assert await repl(runtime, "print(6 * 7)") == {"success": True, "result": "42\n", "error": None}


async def test_the_daemon_never_parses_the_code_and_its_loop_keeps_running(tmp_path, monkeypatch):
    runtime = fake_runtime(tmp_path, FakeBackend("hi"))
    await runtime.sandbox.check()

    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    clock = asyncio.create_task(ticker())
    big = "values = [\n" + "    1,\n" * 36_000 + "]\nlen(values)"  # just under the 256 KiB cap
    assert len(big.encode()) < 256 << 10
    parsed = parses_of(monkeypatch, {big, "import os"})
    try:
        result = await repl(runtime, big)
        refused = await repl(runtime, "import os")  # the imports are checked all the same, in the sandbox
    finally:
        clock.cancel()
        monkeypatch.undo()
    assert ticks > 0 and parsed == []
    assert result == {"success": True, "result": "36000\n", "error": None}
    assert refused["success"] is False and "module 'os' is not available" in refused["error"]


async def test_concurrent_runs_never_exceed_the_cap(monkeypatch):
    live = peak = 0
    real_run = sandbox_module._run

    async def counted(*args, **kwargs):
        nonlocal live, peak
        live += 1
        peak = max(peak, live)
        try:
            return await real_run(*args, **kwargs)
        finally:
            live -= 1

    monkeypatch.setattr(sandbox_module, "_run", counted)
    for cap in (1, 2):
        live = peak = 0
        sandbox = Sandbox(max_running=cap)
        runs = await asyncio.gather(*(sandbox.run_python("print('done')") for _ in range(cap + 2)))
        assert [run.stdout for run in runs] == ["done\n"] * (cap + 2)
        # the first `cap` runs start together, before any can end; the others wait for a free sandbox
        assert peak == cap


async def test_waiting_for_a_sandbox_does_not_spend_the_wall_clock():
    sandbox = Sandbox(Limits(wall_seconds=3), max_running=1)
    await sandbox.check()
    async with sandbox._slots:  # every sandbox busy for longer than a run's whole wall clock
        waiting = asyncio.create_task(sandbox.run_python("print('ran')"))
        await asyncio.sleep(4)
        assert not waiting.done()
    run = await waiting
    assert run.timed_out is False and run.stdout == "ran\n"
