"""A root daemon's sandbox is not root on the host: bubblewrap starts as nobody, so the sandbox's uid maps to
host nobody, and no kernel setting under /proc (core_pattern is a way to run code as host root) opens for
writing. Runs only as root, as CI does: that is the case under test."""

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from qwend.tools import sandbox as sandbox_module
from qwend.tools.sandbox import Sandbox, SandboxUnavailable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tests what a daemon running as root gives its sandbox")

# Opens for writing, never writes: before the fix these opens succeeded as host root, and a test must not
# change the host's kernel settings even then. O_WRONLY without O_TRUNC, so not even a truncation is asked.
PROBE_KERNEL = """\
import json, os, sys
def writable(path, flags=os.O_WRONLY):
    try:
        os.close(os.open(path, flags))
        return True
    except OSError:
        return False
opened = [p for p in ("/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger", "/proc/sys/vm/drop_caches")
          if writable(p)]
for folder, _, files in os.walk("/proc/sys"):
    opened += [os.path.join(folder, f) for f in files if writable(os.path.join(folder, f))]
# host folders bound in: no file opens for appending, none can be made, no folder is writable
hosts = [p for p in (sys.executable, os.__file__) if writable(p, os.O_WRONLY | os.O_APPEND)]
hosts += [p for p in ("/usr/qwend-escape", "/usr/lib/qwend-escape", "/dev/qwend-escape")
          if writable(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)]
hosts += [p for p in ("/usr", "/usr/lib", "/usr/bin", "/dev", "/proc/sys/kernel") if os.access(p, os.W_OK)]
print(json.dumps({"uid": os.getuid(), "opened": opened, "host_paths": hosts}))
"""


@pytest.fixture
async def sandbox():
    sandbox = Sandbox()
    assert await sandbox.check() is None, "bubblewrap must work here as nobody (scripts/install installs it)"
    return sandbox


async def test_no_kernel_setting_or_host_path_opens_for_writing(sandbox):
    run = await sandbox.run_python(PROBE_KERNEL)
    assert run.exit_code == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["opened"] == [] and found["host_paths"] == [], found
    assert found["uid"] == 65534


async def test_the_kernel_knobs_are_read_only_even_for_a_sandbox_that_were_root(monkeypatch):
    # the second layer alone: were the uid drop ever lost, /proc/sys and its kin stay read-only mounts
    monkeypatch.setattr(sandbox_module, "_unprivileged", dict)
    run = await Sandbox().run_python(PROBE_KERNEL)
    assert run.exit_code == 0, run.stderr
    found = json.loads(run.stdout)
    assert found["opened"] == [] and found["host_paths"] == [], found


def sandbox_processes() -> list[str]:
    """The /proc entries of live sandbox processes: bubblewrap and the interpreter (their argv carries the
    rlimits)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if b"RLIMIT_NOFILE" in (entry / "cmdline").read_bytes():
                found.append(entry.name)
        except OSError:
            continue
    return found


def host_ids(pid: str) -> dict:
    """The ids of a process as the host sees them. Read from the host's user namespace, a uid_map's second
    column is the host uid; read from inside the sandbox it would be relative to bubblewrap's own parent
    namespace, whose root is already host nobody, so only this view says who the code is on the host."""
    proc = Path("/proc") / pid
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
    ids = {"uid": status["Uid"].split(), "gid": status["Gid"].split(), "groups": status["Groups"].split()}
    if os.readlink(proc / "ns/user") != os.readlink("/proc/self/ns/user"):
        ids["uid_map"] = [line.split()[1] for line in (proc / "uid_map").read_text().splitlines()]
        ids["gid_map"] = [line.split()[1] for line in (proc / "gid_map").read_text().splitlines()]
    return ids


async def test_the_sandboxed_code_is_not_root_on_the_host(sandbox):
    running = asyncio.create_task(sandbox.run_python("import time\nprint('up', flush=True)\ntime.sleep(3)"))
    seen: dict[str, dict] = {}
    while not running.done() and not any("uid_map" in ids for ids in seen.values()):
        for pid in sandbox_processes():
            try:
                seen[pid] = host_ids(pid)
            except (OSError, KeyError):
                continue  # it ended while being read
        await asyncio.sleep(0.05)
    run = await running
    assert run.stdout == "up\n", run.stderr
    assert any("uid_map" in ids for ids in seen.values()), f"never saw the sandboxed interpreter: {seen}"
    for pid, ids in seen.items():
        everything = ids["uid"] + ids["gid"] + ids["groups"] + ids.get("uid_map", []) + ids.get("gid_map", [])
        assert "0" not in everything, (pid, ids)


@pytest.fixture
def bwrap_without_userns():
    """A `bwrap` that works for root only, as where unprivileged user namespaces are off."""
    folder = Path(tempfile.mkdtemp(prefix="qwend-bwrap-"))
    folder.chmod(0o755)  # nobody must reach it, to be refused by it rather than by the folder
    script = folder / "bwrap"
    script.write_text(f'#!/bin/sh\n[ "$(id -u)" = 0 ] && exec {shutil.which("bwrap")} "$@"\n'
                      'echo "no user namespaces for uid $(id -u)" >&2\nexit 1\n')
    script.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


async def test_where_nobody_cannot_sandbox_it_refuses_rather_than_run_as_root(bwrap_without_userns, monkeypatch):
    monkeypatch.setenv("PATH", f"{bwrap_without_userns}:{os.environ['PATH']}")
    with pytest.raises(SandboxUnavailable, match="no user namespaces for uid 65534"):
        await Sandbox().run_python("print(1)")


async def test_even_the_insecure_unsandboxed_fallback_is_not_root(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no bubblewrap
    run = await Sandbox(allow_unsandboxed=True).run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
    assert run.sandboxed is False and run.stdout == "65534 65534 []\n", run.stderr
