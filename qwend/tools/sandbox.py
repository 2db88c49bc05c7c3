"""Runs untrusted Python in a separate process inside bubblewrap, with limits, and kills it on time.

Layers, outermost first (why each: research/reliability.md section 2):
- bubblewrap: new user, PID, network, IPC, UTS and mount namespaces; the system and the interpreter bound
  read-only; a size-capped tmpfs as the only writable place and the working directory; no `/etc`, no home,
  no daemon data; a cleared environment; no capabilities; dies with the daemon.
- a seccomp filter (qwend/tools/seccomp.py): no new processes, no ptrace, mount, namespaces, bpf, ...
- rlimits set by a bootstrap before the code runs: CPU time, address space, file size, open files, no core.
- a wall-clock timeout that kills the whole process group; the PID namespace takes every descendant with
  it when its init dies.
- stdout and stderr read incrementally and capped; a run that overflows the cap is stopped.

Without bubblewrap the sandbox refuses to run, unless `allow_unsandboxed_code` is set, which then runs a
plain child process with the same rlimits (and says so in every result).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from qwend.tools.seccomp import sandbox_filter

# Runs inside the sandbox before the user's code: the limits are set with soft == hard, so the code cannot
# raise them again. The code arrives on stdin, never on a command line or in a file the host wrote.
_BOOTSTRAP = """\
import json, resource, sys
limits = json.loads(sys.argv[1])
for name, value in limits.items():
    resource.setrlimit(getattr(resource, name), (value, value))
code = sys.stdin.read()
sys.stdin.close()
sys.argv = ["<sandbox>"]
del json, resource, limits, name, value
try:
    exec(compile(code, "<sandbox>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit:
    raise
except BaseException as error:  # the traceback starts at the user's code, not at this bootstrap
    import traceback
    traceback.print_exception(type(error), error, error.__traceback__.tb_next)
    sys.exit(1)
"""


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 512 << 20
    file_bytes: int = 16 << 20
    tmpfs_bytes: int = 64 << 20
    output_bytes: int = 64 << 10
    open_files: int = 64

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


class Sandbox:
    """One per runtime. `check()` probes bubblewrap once; `run_python()` runs one snippet."""

    def __init__(self, limits: Limits | None = None, *, allow_unsandboxed: bool = False) -> None:
        self.limits = limits or Limits()
        self.allow_unsandboxed = allow_unsandboxed
        self._problem: str | None = None
        self._checked = False
        self._bwrap = "bwrap"  # its full path once probed

    async def check(self) -> str | None:
        """Why the sandbox cannot run here, or None when it can (probed once, then remembered)."""
        if not self._checked:
            self._problem = await self._probe()
            self._checked = True
        return self._problem

    async def run_python(self, code: str, limits: Limits | None = None) -> SandboxRun:
        limits = limits or self.limits
        problem = await self.check()
        if problem and not self.allow_unsandboxed:
            raise SandboxUnavailable(f"the Python sandbox cannot start: {problem}")
        sandboxed = problem is None
        interpreter = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")
        command = [interpreter, "-I", "-S", "-c", _BOOTSTRAP, json.dumps(limits.rlimits())]
        if not sandboxed:
            return await _run(command, code, limits, pass_fds=(), sandboxed=False)
        seccomp = _filter_pipe()
        try:
            argv = _bwrap_argv(self._bwrap, limits, seccomp) + command
            return await _run(argv, code, limits, pass_fds=() if seccomp is None else (seccomp,))
        finally:
            if seccomp is not None:
                os.close(seccomp)

    async def _probe(self) -> str | None:
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return "bubblewrap (bwrap) is not installed"
        self._bwrap = bwrap
        try:
            argv = _bwrap_argv(bwrap, self.limits, None) + ["/bin/true"]
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await asyncio.wait_for(process.communicate(), 10)
        except (OSError, asyncio.TimeoutError) as exc:
            return f"bubblewrap did not start: {exc}"
        if process.returncode != 0:
            return f"bubblewrap failed: {stderr.decode(errors='replace').strip()}"
        return None


def _filter_pipe() -> int | None:
    """The read end of a pipe holding the compiled seccomp filter (a few hundred bytes) for bwrap to load."""
    program = sandbox_filter()
    if program is None:
        return None
    read_end, write_end = os.pipe()
    os.write(write_end, program)
    os.close(write_end)
    return read_end


def _bwrap_argv(bwrap: str, limits: Limits, seccomp_fd: int | None) -> list[str]:
    prefix = str(Path(sys.base_prefix).resolve())
    argv = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--clearenv", "--cap-drop", "ALL",
        "--uid", "65534", "--gid", "65534",
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
        "--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
        "--size", str(limits.tmpfs_bytes), "--tmpfs", "/tmp", "--chdir", "/tmp",
        "--setenv", "HOME", "/tmp", "--setenv", "PATH", "/usr/bin:/bin", "--setenv", "LANG", "C.UTF-8",
    ]
    if not prefix.startswith("/usr/"):
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
        start_new_session=True, pass_fds=pass_fds, env={}, cwd=None if sandboxed else "/tmp",
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
