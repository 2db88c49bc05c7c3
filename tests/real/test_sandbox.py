"""The Python sandbox for real (bubblewrap, seccomp, rlimits): every escape and exhaustion is contained,
no process outlives its run, and the daemon keeps serving during and after each."""

import concurrent.futures
import os
from pathlib import Path

import httpx
import pytest

from qwend.settings import Settings
from qwend.tools.sandbox import Limits, Sandbox, SandboxUnavailable

SECRET = "LINEAR_API_KEY"


def sandbox_processes() -> list[str]:
    """Command lines of live sandboxed interpreters (their argv carries the rlimits)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"RLIMIT_NOFILE" in cmdline or cmdline.startswith(b"bwrap\0"):
            found.append(cmdline.decode(errors="replace"))
    return found


@pytest.fixture(scope="module")
def repl(daemon):
    client = httpx.Client(base_url=daemon, timeout=60)

    def run(code: str) -> dict:
        # imports are rewritten past the module list, which is a convenience, so the sandbox itself is tested
        for module in ("os", "subprocess", "socket", "threading"):
            code = code.replace(f"import {module}\n", f"{module} = __import__({module!r})\n")
        reply = client.post("/v1/tools/python_repl/invoke", json={"arguments": {"code": code}})
        assert reply.status_code == 200, reply.text
        assert client.get("/health").json()["status"] == "healthy"
        assert sandbox_processes() == []
        return reply.json()

    yield run
    client.close()


def failed_with(result: dict, *words: str) -> bool:
    return result["success"] is False and all(w in result["error"] for w in words)


def test_the_seed_example_runs(repl):
    code = "import math\nfibonacci = [0, 1]\nfor i in range(8):\n    fibonacci.append(fibonacci[-1] + fibonacci[-2])\nprint(f'Fibonacci sequence: {fibonacci}')"
    assert repl(code)["result"] == "Fibonacci sequence: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n"


def test_no_network(daemon, repl):
    port = httpx.URL(daemon).port  # the daemon itself: the sandbox's loopback is its own, empty one
    for target in ("('1.1.1.1', 443)", f"('127.0.0.1', {port})", "('169.254.169.254', 80)"):
        code = f"import socket\nsocket.create_connection({target}, timeout=3)"
        result = repl(f"__import__('builtins').exec({code!r})")  # around the import list: it is not the boundary
        assert failed_with(result, "Network is unreachable") or failed_with(result, "Connection refused"), result


def test_nothing_outside_the_tmpfs_is_writable(repl):
    for path in ("/usr/lib/qwend-escape", "/bin/x", "/dev/x", "/proc/x"):
        result = repl(f"open({path!r}, 'w')")
        assert result["success"] is False and ("Read-only" in result["error"] or "denied" in result["error"]
                                               or "No such file" in result["error"]), result
    assert repl("open('/tmp/ok', 'w').write('fine'); print(open('/tmp/ok').read())")["result"] == "fine\n"


def test_the_daemon_data_and_secrets_are_out_of_reach(repl):
    store = Settings(_env_file=None).store_dir
    model = next(store.glob("*.gguf"))
    assert failed_with(repl(f"open({str(model)!r}, 'rb').read(4)"), "No such file")
    assert failed_with(repl("open('/etc/passwd').read()"), "No such file")
    assert failed_with(repl(f"print(open({str(Path.home() / '.bash_history')!r}).read())"), "No such file")
    env = repl("import json\n__import__('builtins').print(sorted(__import__('os').environ))")["result"]
    assert SECRET not in env and "QWEND" not in env


def test_escaping_python_reaches_only_the_sandbox(repl):
    # the classic escape from restricted builtins: it works (the allow-list is not the boundary) and gains nothing
    escape = (
        "loader = [c for c in ().__class__.__base__.__subclasses__() if c.__name__ == 'BuiltinImporter'][0]\n"
        "os = loader.load_module('posix')\n"
        "print(os.getuid(), os.listdir('/'))\n"
        "print(os.system('id'))\n"
    )
    result = repl(escape)
    assert result["success"] is True
    uid, listing = result["result"].splitlines()[0].split(" ", 1)
    assert uid == "65534" and "home" not in listing and "etc" not in listing
    assert result["result"].splitlines()[1] != "0"  # system() cannot start a shell: no new processes


def test_fork_bomb_and_subprocesses_are_refused(repl):
    assert failed_with(repl("import os\nwhile True:\n    os.fork()"), "PermissionError")
    assert failed_with(repl("import subprocess\nsubprocess.Popen(['sleep', '1000'])"), "PermissionError")
    double_fork = "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        import time; time.sleep(1000)"
    assert failed_with(repl(double_fork), "PermissionError")
    assert repl("import threading\nt = threading.Thread(target=print, args=('threads work',))\nt.start(); t.join()")[
        "result"] == "threads work\n"


def test_memory_and_file_size_are_limited(repl):
    assert failed_with(repl("b = bytearray(4 * 1024**3)"), "MemoryError")
    assert failed_with(repl("open('/tmp/big', 'wb').write(b'0' * (100 << 20))"), "File too large")


def test_killing_everything_it_can_see_kills_only_the_sandbox(repl):
    # its parent is the PID namespace's init, which ignores SIGKILL from inside; the daemon is not visible
    assert repl("import os\nos.kill(os.getppid(), 9)\nprint(os.getppid())") == {
        "success": True, "result": "1\n", "error": None,
    }
    assert failed_with(repl("import os\nos.kill(-1, 9)"), "ProcessLookupError")  # nothing else is visible
    assert failed_with(repl("import os\nos.kill(0, 9)"), "killed by the sandbox")  # only itself to kill


def test_output_is_capped(repl):
    result = repl("print('x' * 10**8)")
    assert result["success"] is True and "[output truncated at 65536 bytes" in result["result"]
    assert len(result["result"]) < 70_000


def test_an_infinite_loop_is_killed_on_time_while_the_daemon_serves(daemon, repl):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(repl, "while True: pass")
        while not running.done():
            assert httpx.get(f"{daemon}/health", timeout=5).status_code == 200
        result = running.result()
    assert failed_with(result, "timed out after 10 s")


async def test_short_limits_and_no_leftovers():
    sandbox = Sandbox(Limits(wall_seconds=2, cpu_seconds=1))
    run = await sandbox.run_python("while True: pass")
    assert run.exit_code is not None and run.exit_code != 0  # RLIMIT_CPU stops it before the wall clock
    assert sandbox_processes() == []


async def test_without_bubblewrap_it_refuses(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailable, match="bubblewrap"):
        await Sandbox().run_python("print(1)")
    insecure = await Sandbox(allow_unsandboxed=True).run_python("print(1)")
    assert insecure.stdout == "1\n" and insecure.sandboxed is False


def test_bwrap_is_installed():
    assert os.path.exists("/usr/bin/bwrap"), "scripts/install installs bubblewrap"
