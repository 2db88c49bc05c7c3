"""Model names become paths only inside the store or the models folder (or a folder the settings name), on
every engine and route; malformed names are 400s, never 500s; a damaged GGUF in the models folder is listed
with its error while the other models stay usable, and its header is read within bounds."""

from __future__ import annotations

import struct

import pytest

from qwend.engine import manager
from qwend.errors import InvalidRequest, ModelNotFound
from qwend.models import gguf
from qwend.models.facts import read_all_facts
from qwend.models.sources import HubFile, hub_failed
from qwend.models.store import ModelStore
from qwend.runtime import Runtime
from qwend.settings import Settings
from tests.conftest import client_for, fake_runtime
from tests.fakes import FakeBackend
from tests.unit.test_ollama_api import META, assert_error, gguf_file
from tests.unit.test_openai_api import assert_openai_error

BAD_HUB_NAMES = [
    "hf:", "hf:x", "hf:/etc", "hf:/etc/passwd", "hf:a/b/c/d", "hf:a/b:", "hf:../x/y", "hf:a/..", "hf:./b",
    "hf:a--b/c", "hf:a/b..c", "hf:-a/b", "hf:a/b.", "hf:ä/b", "hf:a/b:ü.gguf", "hf:a /b", "hf:a/b:c:d.gguf",
    "hf:x/y:/abs/evil.gguf", "hf:x/y:../../a.gguf", "hf:x/y:sub/a.gguf", "hf:x/y:a.bin",
    "hf:" + "a" * 60 + "/" + "b" * 60, "hf:a/b:" + "c" * 300 + ".gguf", "hf:" + "a" * 5000 + "/b",
]
BAD_NAMES = ["a\0b.gguf", "a\\..\\b.gguf", "x\n.gguf", "m" * 2000]


def model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


# ---- names ----


@pytest.mark.parametrize("folders", [False, True])
@pytest.mark.parametrize("name", BAD_HUB_NAMES + BAD_NAMES)
def test_malformed_names_are_invalid_requests(tmp_path, name, folders):
    store = ModelStore(tmp_path / "store", tmp_path / "models", folders=folders)
    for call in (store.resolve, store.find, store.pull, store.remove):
        with pytest.raises(InvalidRequest):
            call(name)


def test_hub_names_that_follow_the_rules_resolve_inside_the_store(tmp_path):
    store = ModelStore(tmp_path / "store", tmp_path / "models")
    hub = store.resolve("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf")
    assert hub.path == tmp_path / "store" / "hf" / "Qwen" / "Qwen2.5-0.5B-Instruct-GGUF" / hub.path.name
    assert store.resolve("hf:a_b/c.d-e").path is None  # not pulled yet
    folder = ModelStore(tmp_path / "store", tmp_path / "models", folders=True).resolve("hf:o/r")
    assert folder.path == tmp_path / "store" / "hf" / "o" / "r"


def test_an_absolute_file_in_a_hub_name_is_never_loaded(tmp_path):
    evil = tmp_path / "abs" / "evil.gguf"
    evil.parent.mkdir()
    gguf_file(evil, META)
    store = ModelStore(tmp_path / "store", tmp_path / "models")
    with pytest.raises(InvalidRequest):
        store.find(f"hf:x/y:{evil}")
    with pytest.raises(ModelNotFound):
        store.find(str(evil))


def test_symlinks_out_of_the_folders_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    gguf_file(outside / "x.gguf", META)
    victim = model_folder(outside / "victim")
    models = tmp_path / "models"
    models.mkdir()
    (models / "link.gguf").symlink_to(outside / "x.gguf")
    (models / "victim").symlink_to(victim)
    hub = tmp_path / "store" / "hf"
    hub.mkdir(parents=True)
    (hub / "owner").symlink_to(outside)  # <store>/hf/owner/x.gguf is outside's file
    store, folders = ModelStore(tmp_path / "store", models), ModelStore(tmp_path / "store", models, folders=True)
    for name in ("link.gguf", "hf:owner/victim", "hf:owner/x:x.gguf"):
        with pytest.raises((ModelNotFound, InvalidRequest)):
            store.find(name)
    for name in ("victim", "hf:owner/victim"):
        with pytest.raises(ModelNotFound):
            folders.remove(name)
    assert store.list() == [] and folders.list() == []
    assert (outside / "x.gguf").is_file() and victim.is_dir()


# ---- deletion ----


def test_delete_through_dot_dot_leaves_a_folder_outside_alone(tmp_path):
    victim = model_folder(tmp_path / "outside" / "victim")
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    store = ModelStore(tmp_path / "data" / "store", models, folders=True)
    for name in (f"{models}/../../outside/victim", str(victim), "../outside/victim", ".", "..", "~"):
        with pytest.raises(ModelNotFound):
            store.remove(name)
    assert (victim / "config.json").is_file()


def test_delete_removes_only_models_where_qwend_keeps_them(tmp_path):
    models = tmp_path / "models"
    mine = model_folder(models / "mine")
    pulled = model_folder(tmp_path / "store" / "hf" / "o" / "r")
    store = ModelStore(tmp_path / "store", models, folders=True)
    assert [m.name for m in store.list()] == ["hf:o/r", "mine"]
    assert store.remove("mine").path == mine and not mine.exists()
    assert store.remove("hf:o/r").path == pulled and not pulled.exists()
    assert (tmp_path / "store" / "hf" / "o").is_dir()  # only the model folder itself


async def test_api_delete_refuses_paths_on_the_folder_engines(tmp_path):
    victim = model_folder(tmp_path / "outside" / "victim")
    models = tmp_path / "models"
    model_folder(models / "mine")
    runtime = Runtime.create(Settings(_env_file=None, data_dir=tmp_path / "data", models_dir=models, model="mine",
                                      backend="transformers"))
    assert runtime.store.folders
    async with client_for(runtime) as client:
        for name in (f"{models}/../outside/victim", str(victim)):
            reply = await client.request("DELETE", "/api/delete", json={"model": name})
            assert_error(reply, 404, "not found")
        reply = await client.request("DELETE", "/api/delete", json={"model": "hf:x/y:/abs/evil.gguf"})
        assert_error(reply, 400, "Hugging Face")
    assert (victim / "config.json").is_file()


# ---- routes ----


async def test_chat_naming_a_file_outside_loads_nothing(tmp_path, monkeypatch):
    evil = tmp_path / "abs" / "evil.gguf"
    evil.parent.mkdir()
    gguf_file(evil, META)
    loads = []
    monkeypatch.setattr(manager, "backend_loader", lambda name: lambda model, settings: loads.append(model))
    runtime = fake_runtime(tmp_path, FakeBackend())
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": False}
    async with client_for(runtime) as client:
        reply = await client.post("/v1/chat/completions", json={**chat, "model": f"hf:x/y:{evil}"})
        assert_openai_error(reply, 400, param="model")
        reply = await client.post("/api/chat", json={**chat, "model": f"hf:x/y:../../../abs/{evil.name}"})
        assert_error(reply, 400)
        reply = await client.post("/v1/chat/completions", json={**chat, "model": str(evil)})
        assert_openai_error(reply, 404, param="model")
        refused = await client.post("/models/load", json={"model_key": f"hf:x/y:{evil}"})  # the seed's 200 body
        assert refused.json()["loaded"] is False and "no folders" in refused.json()["error"]
        assert (await client.post("/setModel", json={"modelName": f"hf:x/y:{evil}"})).status_code == 400
        assert (await client.post("/api/models/a%00b/load")).status_code == 400
    assert loads == []


@pytest.mark.parametrize("name", BAD_HUB_NAMES + BAD_NAMES)
async def test_pull_of_a_malformed_name_is_400_in_ollamas_shape(tmp_path, name):
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        for stream in (True, False):
            assert_error(await client.post("/api/pull", json={"model": name, "stream": stream}), 400)


async def test_ollamas_latest_tag_on_a_hub_name_is_dropped(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    model_file = tmp_path / "data" / "models" / "hf" / "o" / "r" / "m.gguf"
    model_file.parent.mkdir(parents=True)
    gguf_file(model_file, META)
    async with client_for(runtime) as client:
        assert (await client.post("/api/pull", json={"model": "hf:o/r:latest"})).json() == {"status": "success"}
        assert_error(await client.post("/api/pull", json={"model": "hf:o/r:x:latest"}), 400, "hf:o/r:x:latest")


async def test_pull_of_a_well_formed_hub_name_reaches_the_hub(tmp_path, monkeypatch):
    def offline(self, dest_dir):
        assert dest_dir == tmp_path / "data" / "models" / "hf" / "o" / "r"
        raise hub_failed(self.repo, OSError("no network"), "use a bundled model")
    monkeypatch.setattr(HubFile, "fetch", offline)
    async with client_for(fake_runtime(tmp_path, FakeBackend())) as client:
        assert_error(await client.post("/api/pull", json={"model": "hf:o/r", "stream": False}), 500, "offline")


# ---- damaged GGUF files ----


def header(tensors: int, keys: int, body: bytes = b"") -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, keys) + body


def key(name: str, kind: int, payload: bytes) -> bytes:
    return struct.pack("<Q", len(name)) + name.encode() + struct.pack("<I", kind) + payload


NESTED = key("a", 9, struct.pack("<IQ", 9, 1) * 2000)
DAMAGED = {  # file name: (contents, what the error says)
    "random.gguf": (bytes(range(256)) * 4, "not a GGUF file"),
    "short.gguf": (b"GGU", "truncated"),
    "truncated.gguf": (header(0, 3)[:15], "truncated"),
    "tensors.gguf": (header(2**63, 0), "9,223,372,036,854,775,808 tensors"),
    "keys.gguf": (header(0, 2**64 - 1), "keys"),
    "string.gguf": (header(0, 1, struct.pack("<Q", 2**63) + b"x" * 32), "a string of"),
    "array.gguf": (header(0, 1, key("a", 9, struct.pack("<IQ", 0, 2**60))), "an array of"),
    "bytes.gguf": (header(0, 1, key("a", 9, struct.pack("<IQ", 0, 2**20))), "truncated"),
    "strings.gguf": (header(0, 1, key("a", 9, struct.pack("<IQ", 8, 3) + struct.pack("<Q", 2**64 - 1))),
                     "truncated"),
    "nested.gguf": (header(0, 1, NESTED), "array of value type 9"),
    "version.gguf": (b"GGUF" + struct.pack("<IQQ", 99, 0, 0), "version 99"),
    "types.gguf": (header(0, 2, key("general.architecture", 8, struct.pack("<Q", 1) + b"q")
                          + key("general.parameter_count", 8, struct.pack("<Q", 2) + b"xx")), "not int"),
    "template.gguf": (header(0, 1, key("tokenizer.chat_template", 4, struct.pack("<I", 7))), "not str"),
    "twice.gguf": (header(0, 2, key("k", 4, struct.pack("<I", 1)) * 2), "appears twice"),
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_a_damaged_header_is_an_error_not_an_exception(tmp_path, name):
    data, says = DAMAGED[name]
    (tmp_path / name).write_bytes(data)
    found = gguf.read_gguf_header(tmp_path / name)  # no OverflowError, RecursionError or MemoryError either
    assert says in found.error


def test_nan_and_infinity_are_shown_as_names(tmp_path):
    (tmp_path / "m.gguf").write_bytes(header(0, 2, key("a", 6, struct.pack("<f", float("nan")))
                                             + key("b", 12, struct.pack("<d", float("inf")))))
    assert gguf.read_gguf_header(tmp_path / "m.gguf") == gguf.GgufHeader({"a": "nan", "b": "inf"})


@pytest.fixture
def damaged_runtime(tmp_path):
    runtime = fake_runtime(tmp_path, FakeBackend())
    models = runtime.settings.models_dir
    gguf_file(models / "fake.gguf", META)
    gguf_file(models / "good.gguf", META)
    for name, (data, _) in DAMAGED.items():
        (models / name).write_bytes(data)
    return runtime


def test_listing_facts_carry_each_damaged_files_error(damaged_runtime):
    found = {f.name: f for f in read_all_facts(damaged_runtime.store.list())}
    assert set(found) == {"fake.gguf", "good.gguf", *DAMAGED}
    assert found["good.gguf"].error is None and found["good.gguf"].context_length == 32768
    assert all(found[name].error.startswith(f"{name} is not a usable GGUF file: ") for name in DAMAGED)


async def test_every_listing_keeps_working_beside_damaged_files(damaged_runtime):
    async with client_for(damaged_runtime) as client:
        tags = {m["name"]: m for m in (await client.get("/api/tags")).json()["models"]}
        openai = {m["id"]: m for m in (await client.get("/v1/models")).json()["data"]}
        cortex = {m["name"]: m for m in (await client.get("/api/models")).json()["models"]}
        files = (await client.get("/models")).json()["files"]
        shown = await client.post("/api/show", json={"model": "fake.gguf"})
        bad = await client.post("/api/show", json={"model": "nested.gguf"})
    for listing in (tags, openai, cortex):
        assert set(listing) == {"fake.gguf", "good.gguf", *DAMAGED}
        assert "error" not in listing["good.gguf"]
        assert "array of value type 9" in listing["nested.gguf"]["error"]
    assert tags["good.gguf"]["details"]["family"] == "qwen2"
    assert set(files) == {"fake.gguf", "good.gguf", *DAMAGED}  # seed 004's plain list of files on disk
    assert shown.status_code == 200 and shown.json()["details"]["family"] == "qwen2"
    assert_error(bad, 400, "nested.gguf", "not a usable GGUF file")
