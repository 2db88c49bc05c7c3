"""GGUF model files: their header key/values, read without loading the model.

Any file in the models folder is read on every listing, so the header is read within bounds: each declared
count and length is checked against what is left of the file (and against limits no real model comes near)
before anything is read or skipped, arrays of arrays are refused, and the keys listings show must have the
types the GGUF spec gives them. A file that breaks a rule is reported with the reason, never raised.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
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
MAX_GGUF_KEYS = 1 << 16  # real models have a few dozen
MAX_GGUF_TENSORS = 1 << 20  # the largest models have tens of thousands
MAX_GGUF_ARRAY = 1 << 22  # the largest vocabularies have 262k tokens, merge lists about a million
_MIN_TENSOR_INFO = 24  # a name's length (8), dimension count (4), type (4) and offset (8)
# the keys listings and /api/show read, with their types in the GGUF spec (bool is no integer here)
_TYPED_KEYS: dict[str, type] = {"general.architecture": str, "general.size_label": str, "general.license": str,
                                "tokenizer.chat_template": str, "general.file_type": int,
                                "general.parameter_count": int}


@dataclass(frozen=True)
class GgufHeader:
    meta: dict[str, Any] = field(default_factory=dict)  # arrays as []; on an error, what came before it
    error: str | None = None  # why the file is not a readable GGUF file


class _Damaged(ValueError):
    pass


class _Reader:
    """Reads a header from a file of known size, refusing any length the rest of the file cannot hold."""

    def __init__(self, f, size: int) -> None:
        self.f, self.left = f, size

    def take(self, n: int) -> bytes:
        self.need(n)
        data = self.f.read(n)
        if len(data) < n:  # the file shrank while being read
            raise _Damaged("the header is truncated")
        self.left -= n
        return data

    def skip(self, n: int) -> None:
        self.need(n)
        self.f.seek(n, os.SEEK_CUR)
        self.left -= n

    def need(self, n: int) -> None:
        if n > self.left:
            raise _Damaged(f"the header is truncated (it declares {n:,} bytes where {self.left:,} are left)")

    def unpack(self, fmt: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        if n > MAX_GGUF_STRING:
            raise _Damaged(f"a string of {n:,} bytes (at most {MAX_GGUF_STRING:,} are read)")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind in _GGUF_SCALARS:
            (found,) = self.unpack(_GGUF_SCALARS[kind])
            # JSON has no NaN or infinity: such a float is shown as its name
            return found if not isinstance(found, float) or math.isfinite(found) else str(found)
        if kind == _GGUF_STRING:
            return self.string()
        if kind != _GGUF_ARRAY:
            raise _Damaged(f"unknown value type {kind}")
        item_kind, n = self.unpack("<IQ")
        if n > MAX_GGUF_ARRAY:
            raise _Damaged(f"an array of {n:,} items (at most {MAX_GGUF_ARRAY:,} are read)")
        if item_kind in _GGUF_SCALARS:
            self.skip(n * struct.calcsize(_GGUF_SCALARS[item_kind]))
        elif item_kind == _GGUF_STRING:  # tokenizer vocabularies: skipped without decoding them
            self.need(n * 8)
            for _ in range(n):
                (length,) = self.unpack("<Q")
                self.skip(length)
        else:
            raise _Damaged(f"an array of value type {item_kind} (arrays hold numbers or strings)")
        return []


def read_gguf_header(path: Path, *, wanted: frozenset[str] | None = None) -> GgufHeader:
    """A GGUF file's header key/values (arrays read as []), stopping once every key in `wanted` is read, and
    what is wrong with it, if anything (the file is not GGUF v2/v3, is damaged or cannot be read)."""
    found: dict[str, Any] = {}
    try:
        with open(path, "rb") as f:
            reader = _Reader(f, os.fstat(f.fileno()).st_size)
            if (magic := reader.take(4)) != b"GGUF":
                raise _Damaged(f"not a GGUF file (it starts with {magic!r})")
            (version,) = reader.unpack("<I")
            if version not in (2, 3):
                raise _Damaged(f"GGUF version {version} (qwend reads versions 2 and 3)")
            tensors, count = reader.unpack("<QQ")
            if tensors > MAX_GGUF_TENSORS or count > MAX_GGUF_KEYS:
                raise _Damaged(f"it declares {tensors:,} tensors and {count:,} keys (at most "
                               f"{MAX_GGUF_TENSORS:,} and {MAX_GGUF_KEYS:,} are read)")
            reader.need(tensors * _MIN_TENSOR_INFO)  # their descriptions follow the key/values
            for _ in range(count):
                key = reader.string()
                if key in found:
                    raise _Damaged(f"the key {key!r} appears twice")
                (kind,) = reader.unpack("<I")
                found[key] = reader.value(kind)
                if wanted is not None and wanted <= found.keys():
                    break
            _check_types(found)
    except _Damaged as exc:
        return GgufHeader(found, str(exc))
    except OSError as exc:
        return GgufHeader(found, f"it cannot be read: {exc.strerror or exc}")
    return GgufHeader(found)


def _check_types(meta: dict[str, Any]) -> None:
    arch = meta.get("general.architecture")
    expected = {**_TYPED_KEYS, f"{arch}.context_length": int} if isinstance(arch, str) else _TYPED_KEYS
    for key, kind in expected.items():
        if key in meta and (not isinstance(meta[key], kind) or isinstance(meta[key], bool)):
            raise _Damaged(f"{key} is {type(meta[key]).__name__} {meta[key]!r:.40}, not {kind.__name__}")


def read_gguf_metadata(path: Path, *, wanted: frozenset[str] | None = None) -> dict[str, Any]:
    """A GGUF file's header key/values (arrays read as []), stopping once every key in `wanted` is read.
    {} for a file that is not GGUF (v2+); what could be read for a damaged one."""
    return read_gguf_header(path, wanted=wanted).meta
