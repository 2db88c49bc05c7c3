"""What listings say about a model without loading it: size, digest, the window it was trained for, what it
can do (capabilities, as Ollama names them) and how its weights are stored. Read from the GGUF header, or a
folder's config.json and chat template; an upstream server's models have neither, so only their name."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwend.models.gguf import FILE_TYPES, read_gguf_header
from qwend.models.mmproj import find_mmproj
from qwend.models.store import LocalModel

MAX_CONFIG_BYTES = 1 << 20  # config.json files are a few kilobytes


@dataclass(frozen=True)
class ModelFacts:
    name: str
    path: Path | None
    size: int
    modified_at: float
    digest: str
    meta: dict[str, Any]  # the GGUF header's key/values (arrays as []); {} for folders
    context_length: int | None = None  # the trained window
    capabilities: tuple[str, ...] = ()  # completion or embedding, then tools, vision, thinking
    quantization: str | None = None  # Q4_K_M, bfloat16, bitsandbytes 4-bit, ...
    aliases: tuple[str, ...] = field(default=())
    error: str | None = None  # why the file or folder cannot be described (a damaged GGUF, a bad config.json)


def digest(catalog_sha256: str | None, name: str, size: int, mtime_ns: int) -> str:
    """The catalog's sha256 of the file where known; otherwise a hash of name, size and modification time,
    stable while the file is unchanged (hashing a multi-GB file on every listing would be too slow)."""
    return catalog_sha256 or hashlib.sha256(f"{name}\0{size}\0{mtime_ns}".encode()).hexdigest()


def read_facts(model: LocalModel) -> ModelFacts:
    """Blocking: reads the GGUF header (its arrays are skipped, not read) or the folder's small files. A file or
    folder that cannot be described gets `error` (and nothing read from it), so one damaged model leaves the
    listings of the others alone."""
    size, modified = model.size, model.modified
    base = dict(name=model.name, path=model.path, size=size, modified_at=modified,
                digest=digest(model.entry.sha256 if model.entry else None, model.name, size, int(modified * 1e9)),
                aliases=model.entry.aliases if model.entry else ())
    if model.path is None or not model.path.exists():
        return ModelFacts(**base, meta={})
    if model.path.is_file():
        return _gguf_facts(model.path, base)
    return _folder_facts(model.path, base)


def read_all_facts(models: list[LocalModel]) -> list[ModelFacts]:
    found = []
    for model in models:
        try:
            found.append(read_facts(model))
        except OSError:
            continue  # deleted while being listed
    return found


def _capabilities(template: str, *, embedding: bool = False, vision: bool = False) -> tuple[str, ...]:
    """Tools: the model's template renders them, or it has none and qwend's ChatML one (which does) is used."""
    found = ["embedding" if embedding else "completion"]
    found += ["tools"] * ("tools" in template or not template) + ["vision"] * vision
    found += ["thinking"] * ("<think>" in template)
    return tuple(found)


def _gguf_facts(path: Path, base: dict) -> ModelFacts:
    header = read_gguf_header(path)
    if header.error is not None:
        return ModelFacts(**base, meta={}, error=f"{path.name} is not a usable GGUF file: {header.error}")
    meta = header.meta
    arch = meta.get("general.architecture", "")
    template = meta.get("tokenizer.chat_template") or ""
    context = meta.get(f"{arch}.context_length")
    return ModelFacts(
        **base, meta=meta, context_length=int(context) if context else None,
        capabilities=_capabilities(template, embedding=f"{arch}.pooling_type" in meta and not template,
                                   vision=find_mmproj(path) is not None),
        quantization=FILE_TYPES.get(meta.get("general.file_type")),
    )


def _folder_facts(path: Path, base: dict) -> ModelFacts:
    try:
        if (path / "config.json").stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES:,} bytes")
        config = json.loads((path / "config.json").read_text())
        text = config.get("text_config", config)
        if not isinstance(text, dict):
            raise ValueError("text_config is not an object")
        return _read_folder(path, config, text, base)
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # not JSON, or not a config's shape
        return ModelFacts(**base, meta={}, error=f"{path.name}/config.json is not a usable model config: {exc}")


def _read_folder(path: Path, config: dict, text: dict, base: dict) -> ModelFacts:
    template = ""
    for name in ("chat_template.jinja", "chat_template.json", "tokenizer_config.json"):
        if (path / name).is_file():
            template += (path / name).read_text(errors="replace")
    quantized = config.get("quantization_config") or {}
    quantization = (f"{quantized.get('quant_method')} {quantized.get('bits', '')}".strip() if quantized
                    else config.get("torch_dtype") or config.get("dtype") or text.get("torch_dtype"))
    context = text.get("max_position_embeddings")
    return ModelFacts(**base, meta={}, context_length=int(context) if context else None,
                      capabilities=_capabilities(template, vision="vision_config" in config),
                      quantization=quantization)
