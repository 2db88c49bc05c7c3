"""Which multimodal projector (an mmproj GGUF) belongs to a GGUF model: found beside it, by name."""

from __future__ import annotations

from pathlib import Path


def find_mmproj(model: Path) -> Path | None:
    """The projector beside a GGUF model: `mmproj*.gguf` named after the model (`mmproj-<model>[-<quant>].gguf`,
    as Hugging Face repositories publish them), or the only one in a folder that holds just this model (LM
    Studio's layout). None when there is none, or when it is unclear which model a projector belongs to."""
    projectors = sorted(p for p in model.parent.glob("*.gguf") if p.name.lower().startswith("mmproj"))
    base = _base_name(model.stem)
    named = [p for p in projectors if _base_name(p.stem.lower().removeprefix("mmproj").lstrip("-_.")) == base]
    if len(named) == 1:
        return named[0]
    models = [p for p in model.parent.glob("*.gguf") if not p.name.lower().startswith("mmproj")]
    return projectors[0] if len(projectors) == 1 and models == [model] else None


def _base_name(stem: str) -> str:
    """A GGUF file's name without its quantisation suffix, dots as dashes: "Qwen2.5-VL-3B-Q4_K_M" -> "qwen2-5-vl-3b"."""
    head, sep, last = stem.lower().replace(".", "-").rpartition("-")
    quantised = last.startswith(("q", "iq", "f", "bf")) and any(c.isdigit() for c in last) and "b" not in last[1:]
    return head if sep and quantised else stem.lower().replace(".", "-")
