"""Runs untrusted Python in a separate process inside bubblewrap, with limits, and kills it on time.

Layers, outermost first (why each: research/reliability.md section 2):
- the host user: a daemon running as root (CI, many containers) starts bubblewrap as nobody (65534:65534,
  no supplementary groups), so bubblewrap builds its user namespace unprivileged and the sandbox's uid maps
  to host nobody, never to host root: no kernel setting, root-owned file or capability is reachable as
  root. Where nobody cannot create a user namespace the sandbox refuses rather than run as root. When the
  daemon's own interpreter lies where nobody may not enter (pyenv or uv under /root), the system's Python
  of the same version (else /usr/bin/python3) runs the code; the probe picks the first that starts.
- bubblewrap: new user, PID, network, IPC, UTS and mount namespaces; the system and the interpreter bound
  read-only; a size-capped tmpfs as the only writable place and the working directory; no `/etc`, no home,
  no daemon data; a cleared environment; no capabilities; dies with the daemon. The kernel's knobs under
  /proc (sys, sysrq-trigger, irq, bus, ...) are bound read-only over the sandbox's own /proc as well.
- a seccomp filter (qwend/tools/seccomp.py): no new processes, no ptrace, mount, namespaces, bpf, ...
- rlimits set by a bootstrap before the code runs: CPU time, address space, file size, open files, no core.
- a wall-clock timeout that kills the whole process group; the PID namespace takes every descendant with
  it when its init dies.
- stdout and stderr read incrementally and capped; a run that overflows the cap is stopped.

Input size and concurrency, so that no run costs the daemon work in proportion to its input: a program over
`Limits.code_bytes` is refused before anything reads it; the parsing (syntax, imports, the echo of a last
expression) happens inside the sandbox (qwend/tools/sandbox_boot.py), under its limits; and at most
`max_running` sandboxes live at once per runtime, later runs waiting their turn. The wall clock starts when
a run's sandbox starts, so the wait does not count against it (the tool's own timeout covers both).

Without bubblewrap the sandbox refuses to run, unless `allow_unsandboxed_code` is set, which then runs a
plain child process with the same rlimits, as nobody too when the daemon is root (and says so in every
result).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwend.tools.sandbox_boot import SOURCE as BOOTSTRAP
from qwend.tools.seccomp import sandbox_filter

_NOBODY = 65534  # the host uid and gid a root daemon's sandboxes run as
# Kernel knobs under /proc that bubblewrap's own cover misses (it skips directories that look read-only).
_PROC_KNOBS = ("sys", "sysrq-trigger", "irq", "bus", "fs", "acpi")
_PROBE = "import ast, json, resource, traceback"  # what sandbox_boot.py needs of the interpreter


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 512 << 20
    file_bytes: int = 16 << 20
    tmpfs_bytes: int = 64 << 20
    output_bytes: int = 64 << 10
    open_files: int = 64
    code_bytes: int = 256 << 10  # the largest program, in UTF-8 bytes; refused before it is read

    def rlimits(self) -> dict[str, int]:
        return {
            "RLIMIT_CPU": self.cpu_seconds,
            "RLIMIT_AS": self.memory_bytes,
            "RLIMIT_FSIZE": self.file_bytes,
            "RLIMIT_NOFILE": self.open_files,
            "RLIMIT_CORE": 0,
        }


@dataclass(frozen=True)
class SandboxRun:
    stdout: str
    stderr: str
    exit_code: int | None  # negative: killed by that signal
    timed_out: bool = False
    truncated: bool = False
    seconds: float = 0.0
    sandboxed: bool = True


class SandboxUnavailable(Exception):
    """The sandbox cannot start here (no bubblewrap, or user namespaces are off)."""


class CodeTooLarge(Exception):
    """The program is over `Limits.code_bytes`; it was not run."""


class Sandbox:
    """One per runtime. `check()` probes bubblewrap once; `run_python()` runs one snippet."""

    def __init__(self, limits: Limits | None = None, *, allow_unsandboxed: bool = False, max_running: int = 2) -> None:
        self.limits = limits or Limits()
        self.allow_unsandboxed = allow_unsandboxed
        self.max_running = max_running
        self._slots = asyncio.Semaphore(max_running)
        self._probing = asyncio.Lock()
        self._problem: str | None = None
        self._checked = False
        self._bwrap = "bwrap"  # its full path once probed
        self._interpreter: tuple[str, str] | None = None  # (path, prefix to bind) once probed
        self._no_interpreter = ""  # why no interpreter starts unsandboxed, when that is the fallback

    async def check(self) -> str | None:
        """Why the sandbox cannot run here, or None when it can (probed once, then remembered)."""
        async with self._probing:  # runs that arrive together probe once
            if not self._checked:
                self._problem = await self._probe()
                self._checked = True
        return self._problem

    async def run_python(
        self, code: str, limits: Limits | None = None, *, modules: Iterable[str] | None = None, echo: bool = False
    ) -> SandboxRun:
        """Run `code`; `modules` lists the only top-level modules it may import, `echo` shows the value of a
        last bare expression. A syntax error or a refused import is a failed run whose stderr says why."""
        limits = limits or self.limits
        _check_size(code, limits.code_bytes)  # before anything reads it
        problem = await self.check()
        if problem and not self.allow_unsandboxed:
            raise SandboxUnavailable(f"the Python sandbox cannot start: {problem}")
        if self._interpreter is None:
            raise SandboxUnavailable(f"no Python interpreter starts here as nobody: {self._no_interpreter}")
        interpreter, prefix = self._interpreter
        options = {"rlimits": limits.rlimits(), "modules": None if modules is None else sorted(modules), "echo": echo}
        command = [interpreter, "-I", "-S", "-c", BOOTSTRAP, json.dumps(options)]
        async with self._slots:  # the wall clock starts inside _run, once a slot is free
            if problem:
                return await _run(command, code, limits, pass_fds=(), sandboxed=False)
            seccomp = _filter_pipe()
            try:
                argv = _bwrap_argv(self._bwrap, limits, seccomp, prefix) + command
                return await _run(argv, code, limits, pass_fds=() if seccomp is None else (seccomp,))
            finally:
                if seccomp is not None:
                    os.close(seccomp)

    async def _probe(self) -> str | None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            problem: str | None = "bubblewrap (bwrap) is not installed"
        else:
            self._bwrap = bwrap
            problem = await self._pick(lambda prefix: _bwrap_argv(bwrap, self.limits, None, prefix))
            problem = problem and f"bubblewrap failed: {problem}"
        if problem and self.allow_unsandboxed:
            self._no_interpreter = await self._pick(lambda prefix: []) or ""
        return problem

    async def _pick(self, wrap: Callable[[str], list[str]]) -> str | None:
        """Remember the first interpreter that starts inside `wrap(prefix)` as the user runs will have; else
        say why none did."""
        problems = []
        for interpreter, prefix in _interpreters():
            problem = await _starts(wrap(prefix) + [interpreter, "-I", "-S", "-c", _PROBE])
            if problem is None:
                self._interpreter = (interpreter, prefix)
                return None
            problems.append(f"{interpreter}: {problem}")
        return "; ".join(problems)


def _interpreters() -> list[tuple[str, str]]:
    """(interpreter, its prefix) to try, the daemon's own first; the others live under /usr, which every
    sandbox binds, so a root daemon whose own sits under /root (mode 700) still finds one nobody can run."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    own = str(Path(sys.base_prefix) / "bin" / version)
    found = [(own, str(Path(sys.base_prefix).resolve()))]
    for path in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", "/usr/bin/python3"):
        if path != own and os.path.exists(path):
            found.append((path, "/usr"))
    return found


async def _starts(argv: list[str]) -> str | None:
    """Why `argv` did not run to success as the user runs will have, or None when it did."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env={}, cwd="/", **_unprivileged(),
        )
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    except (OSError, asyncio.TimeoutError) as exc:
        return f"did not start: {exc!r}"
    if process.returncode != 0:
        return stderr.decode(errors="replace").strip() or f"exit status {process.returncode}"
    return None


def _unprivileged() -> dict[str, Any]:
    """Arguments that make a root daemon's child drop to nobody, with no groups, before it execs: bubblewrap
    then builds its user namespace unprivileged, so root inside it is nobody outside. Other users keep theirs."""
    if os.geteuid() != 0:
        return {}
    return {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}


def _check_size(code: str, most: int) -> None:
    # len() first: a str has no more characters than UTF-8 bytes, and it copies nothing of a huge one
    if len(code) > most or len(code.encode()) > most:
        raise CodeTooLarge(f"the program is over {most} bytes (UTF-8), the most one run takes; it was not run")


def _filter_pipe() -> int | None:
    """The read end of a pipe holding the compiled seccomp filter (a few hundred bytes) for bwrap to load."""
    program = sandbox_filter()
    if program is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, program)
    os.close(write_end)
    return read_end


def _bwrap_argv(bwrap: str, limits: Limits, seccomp_fd: int | None, prefix: str) -> list[str]:
    argv = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
        "--uid", "65534", "--gid", "65534",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", *(a for knob in _PROC_KNOBS for a in ("--ro-bind-try", f"/proc/{knob}", f"/proc/{knob}")),
        "--dev", "/dev", "--remount-ro", "/dev",
        "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp", "--chdir", "/tmp",
        "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
    ]
    if prefix != "/usr" and not prefix.startswith("/usr/"):
        argv += ["--ro-bind", prefix, prefix]  # the interpreter lives outside /usr (pyenv, a custom build)
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    return argv


async def _run(
    argv: list[str], code: str, limits: Limits, *, pass_fds: tuple[int, ...], sandboxed: bool = True
) -> SandboxRun:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True, pass_fds=pass_fds, env={}, cwd="/" if sandboxed else "/tmp", **_unprivileged(),
    )
    output = _CappedOutput(limits.output_bytes, process)
    timed_out = False
    try:
        async with asyncio.timeout(limits.wall_seconds):
            await _feed(process, code)
            await asyncio.gather(output.drain(process.stdout, "stdout"), output.drain(process.stderr, "stderr"))
            await process.wait()
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(process)
        await process.wait()
    return SandboxRun(
        stdout=output.text("stdout"), stderr=output.text("stderr"),
        exit_code=process.returncode, timed_out=timed_out, truncated=output.truncated,
        seconds=round(time.monotonic() - started, 3), sandboxed=sandboxed,
    )


async def _feed(process: asyncio.subprocess.Process, code: str) -> None:
    assert process.stdin is not None
    try:
        process.stdin.write(code.encode())
        await process.stdin.drain()
        process.stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it exited before reading everything; its exit code and stderr say why


class _CappedOutput:
    """Keeps at most `cap` bytes of stdout and stderr together; past that, stops the run."""

    def __init__(self, cap: int, process: asyncio.subprocess.Process) -> None:
        self.cap = cap
        self.process = process
        self.parts: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.truncated = False

    async def drain(self, stream: asyncio.StreamReader | None, name: str) -> None:
        assert stream is not None
        while chunk := await stream.read(65536):
            room = self.cap - sum(len(p) for p in self.parts.values())
            self.parts[name] += chunk[: max(room, 0)]
            if len(chunk) > room:
                self.truncated = True
                _kill_group(self.process)
                return

    def text(self, name: str) -> str:
        return self.parts[name].decode(errors="replace")


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
