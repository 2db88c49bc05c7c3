"""GGUF model files: their header key/values, read without loading the model, and stable facts about them."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwend.models.store import LocalModel


@dataclass(frozen=True)
class ModelFacts:
    """A model file as listings report it."""

    name: str
    path: Path
    size: int
    modified_at: float
    digest: str
    meta: dict[str, Any]  # the GGUF header's key/values (arrays as [])


def digest(catalog_sha256: str | None, name: str, size: int, mtime_ns: int) -> str:
    """The catalog's sha256 of the file where known; otherwise a hash of name, size and modification time,
    stable while the file is unchanged (hashing a multi-GB file on every listing would be too slow)."""
    return catalog_sha256 or hashlib.sha256(f"{name}\0{size}\0{mtime_ns}".encode()).hexdigest()


# llama.cpp's llama_ftype values, as Ollama names them
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4",
}
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
MAX_GGUF_STRING = 16 << 20  # chat templates are kilobytes; a larger length is a damaged file


def read_gguf_metadata(path: Path, *, wanted: frozenset[str] | None = None) -> dict[str, Any]:
    """A GGUF file's header key/values (arrays read as []), stopping once every key in `wanted` is read.
    {} for a file that is not GGUF (v2+); what could be read for a damaged one."""
    found: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            magic, version = struct.unpack("<4sI", _read(f, 8))
            if magic != b"GGUF" or version < 2:
                return {}
            _, count = struct.unpack("<QQ", _read(f, 16))
            for _ in range(count):
                key = _gguf_string(f)
                (kind,) = struct.unpack("<I", _read(f, 4))
                found[key] = _gguf_value(f, kind)
                if wanted is not None and wanted <= found.keys():
                    break
    except (OSError, ValueError, struct.error):
        pass
    return found


def _read(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) < n:
        raise ValueError("truncated GGUF header")
    return data


def _gguf_string(f) -> str:
    (n,) = struct.unpack("<Q", _read(f, 8))
    if n > MAX_GGUF_STRING:
        raise ValueError("GGUF string too long")
    return _read(f, n).decode("utf-8", errors="replace")


def _gguf_value(f, kind: int) -> Any:
    if kind in _GGUF_SCALARS:
        fmt = _GGUF_SCALARS[kind]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if kind == _GGUF_STRING:
        return _gguf_string(f)
    if kind != _GGUF_ARRAY:
        raise ValueError(f"unknown GGUF value type {kind}")
    item_kind, n = struct.unpack("<IQ", _read(f, 12))
    if item_kind in _GGUF_SCALARS:
        f.seek(n * struct.calcsize(_GGUF_SCALARS[item_kind]), 1)
    else:  # tokenizer vocabularies: skip the strings without decoding them
        for _ in range(n):
            if item_kind == _GGUF_STRING:
                (length,) = struct.unpack("<Q", _read(f, 8))
                f.seek(length, 1)
            else:
                _gguf_value(f, item_kind)
    return []


def read_facts(model: LocalModel, wanted: frozenset[str] | None) -> ModelFacts:
    """What the file says about a model (blocking: reads the GGUF header; folders and upstream models have
    none to read)."""
    size, modified = model.size, model.modified
    digest_ = digest(model.entry.sha256 if model.entry else None, model.name, size, int(modified * 1e9))
    gguf = model.path is not None and model.path.is_file()
    return ModelFacts(model.name, model.path, size, modified, digest_,
                      read_gguf_metadata(model.path, wanted=wanted) if gguf else {})


def read_all_facts(models: list[LocalModel], wanted: frozenset[str] | None = None) -> list[ModelFacts]:
    found = []
    for model in models:
        try:
            found.append(read_facts(model, wanted))
        except OSError:
            continue  # deleted while being listed
    return found
