"""GGUF model files: their header key/values, read without loading the model."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

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
