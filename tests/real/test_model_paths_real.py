"""A real `qwend serve` (llama.cpp, the real default model) with a damaged GGUF in its models folder and a
model file outside it: the listings and /api/show keep working, the damaged file is listed with its error,
and no name reaches the file outside (tests/unit/test_model_paths.py has every rule in process)."""

import struct
import subprocess
import sys

import httpx
import pytest

from tests.conftest import Daemon

NESTED = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<I", 9) \
    + struct.pack("<IQ", 9, 1) * 2000  # arrays of arrays, 2000 deep: the old reader recursed until it broke
HELLO = {"messages": [{"role": "user", "content": "hi"}], "stream": False, "max_tokens": 4}


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("paths")
    (workdir / "models").mkdir()
    (workdir / "models" / "broken.gguf").write_bytes(NESTED)
    (workdir / "outside").mkdir()
    (workdir / "outside" / "victim.gguf").symlink_to(model_path)  # a loadable model, outside both folders
    daemon = Daemon(workdir).start()
    yield daemon, workdir
    daemon.stop()


def test_listings_list_the_damaged_file_with_its_error(served):
    daemon, _ = served
    tags = {m["name"]: m for m in httpx.get(f"{daemon.url}/api/tags").json()["models"]}
    openai = {m["id"]: m for m in httpx.get(f"{daemon.url}/v1/models").json()["data"]}
    for listing in (tags, openai):
        assert "error" not in listing["qwen2.5-coder:0.5b"]
        assert "broken.gguf is not a usable GGUF file" in listing["broken.gguf"]["error"]
    assert "broken.gguf" in httpx.get(f"{daemon.url}/models").json()["files"]
    shown = httpx.post(f"{daemon.url}/api/show", json={"model": "qwen2.5-coder:0.5b"}, timeout=60)
    assert shown.status_code == 200 and shown.json()["details"]["family"] == "qwen2"
    bad = httpx.post(f"{daemon.url}/api/show", json={"model": "broken.gguf"}, timeout=60)
    assert bad.status_code == 400 and "not a usable GGUF file" in bad.json()["error"]


def test_no_name_reaches_a_file_outside_the_folders(served):
    daemon, workdir = served
    outside = workdir / "outside" / "victim.gguf"
    for name in (f"hf:x/y:{outside}", "hf:x/y:../../../outside/victim.gguf"):
        reply = httpx.post(f"{daemon.url}/v1/chat/completions", json={**HELLO, "model": name}, timeout=60)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "model"
    for name in (str(outside), "../outside/victim.gguf"):
        reply = httpx.post(f"{daemon.url}/v1/chat/completions", json={**HELLO, "model": name}, timeout=60)
        assert reply.status_code == 404
        reply = httpx.request("DELETE", f"{daemon.url}/api/delete", json={"model": name})
        assert reply.status_code == 404 and set(reply.json()) == {"error"}
    assert outside.is_symlink() and outside.resolve().is_file()
    loaded = [m["name"] for m in httpx.get(f"{daemon.url}/api/ps").json()["models"]]
    assert loaded == ["qwen2.5-coder:0.5b"]


def test_pull_of_malformed_hub_names_is_400(served):
    daemon, _ = served
    names = ("hf:", "hf:x", "hf:/etc", "hf:a/b/c/d", "hf:a/b:", "hf:../x/y", "hf:a/..", "hf:ä/b", "hf:" + "a" * 500)
    for name in names:
        reply = httpx.post(f"{daemon.url}/api/pull", json={"model": name, "stream": False}, timeout=60)
        assert reply.status_code == 400 and set(reply.json()) == {"error"}, (name, reply.text)


def test_the_models_command_shows_the_damaged_file(served):
    daemon, workdir = served
    result = subprocess.run([sys.executable, "-m", "qwend", "models"], capture_output=True, text=True, cwd=workdir,
                            env={**daemon.env, "COLUMNS": "300"}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "qwen2.5-coder:0.5b" in result.stdout
    assert "broken.gguf" in result.stdout and "error: broken.gguf is not a usable GGUF file" in result.stdout
