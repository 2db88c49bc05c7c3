"""MCP servers' tools through qwend's registry, over stdio and streamable HTTP, with a real SDK server."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from qwend.cli.local_server import free_port
from qwend.errors import InvalidToolArguments
from qwend.runtime import Runtime
from qwend.settings import Settings

ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def http_mcp_server():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.mcp_server", "http", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
async def runtime(tmp_path, http_mcp_server, monkeypatch):
    monkeypatch.setenv("QWEND_TEST_SECRET", "do-not-leak")
    config = {"mcpServers": {
        "local": {"command": sys.executable, "args": ["-m", "tests.mcp_server", "stdio"], "cwd": str(ROOT),
                  "env": {"GREETING": "hi"}},
        "remote": {"url": http_mcp_server},
        "broken": {"command": "/nonexistent/mcp-server"},
    }}
    (tmp_path / "mcp.json").write_text(json.dumps(config))
    runtime = Runtime.create(Settings(_env_file=None, data_dir=tmp_path))
    await runtime.start()
    yield runtime
    await runtime.close()


async def test_tools_of_both_transports_are_namespaced_and_callable(runtime):
    names = runtime.tools.names()
    for server in ("local", "remote"):
        assert {f"{server}.add", f"{server}.environment", f"{server}.refuse"} <= set(names)
        add = runtime.tools.get(f"{server}.add")
        assert add.description == "Add two integers." and add.source == f"mcp:{server}"
        assert add.parameters["required"] == ["a", "b"]
        result = await runtime.tools.invoke(f"{server}.add", {"a": 2, "b": 3})
        assert result.success and result.result == {"result": 5}
        refused = await runtime.tools.invoke(f"{server}.refuse", {"reason": "not today"})
        assert refused.success is False and "not today" in refused.error
        with pytest.raises(InvalidToolArguments, match="b"):
            await runtime.tools.invoke(f"{server}.add", {"a": 2})
    assert runtime.mcp.status["local"] == "connected" and runtime.mcp.status["broken"].startswith("not connected")
    assert not any(name.startswith("broken.") for name in names)


async def test_a_stdio_server_gets_only_its_configured_environment(runtime):
    assert (await runtime.tools.invoke("local.environment", {"name": "GREETING"})).result == {"result": "hi"}
    assert (await runtime.tools.invoke("local.environment", {"name": "QWEND_TEST_SECRET"})).result == {
        "result": "<unset>"
    }
