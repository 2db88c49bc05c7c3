"""JSON as small models write it in their answers: fenced, several values back to back, or cut off."""

from __future__ import annotations

import json
from typing import Any


def unfenced(text: str) -> str:
    """The inside of a ```json fence (the closing fence optional), or `text` itself when it is not fenced.
    String operations, not a regex: a lazy group between optional whitespace runs backtracked cubically."""
    if not text.startswith("```"):
        return text
    inside = text[3:].removeprefix("json").strip()
    return inside.removesuffix("```").strip()


def json_values(text: str) -> list[Any]:
    """One JSON value, a list of them, or several back to back; [] if the text is anything else."""
    decoder, values, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return []
        values.extend(value if isinstance(value, list) else [value])
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
    return values


def json_or_none(text: str) -> Any | None:
    """The JSON value in `text`, or None."""
    try:
        return json.loads(text.strip())
    except (ValueError, RecursionError):
        return None


def loads_repairing(text: str) -> tuple[Any, bool] | None:
    """(value, repaired) for a JSON object, closing one cut off at the end; None if hopeless."""
    text = text.strip()
    if (whole := json_or_none(text)) is not None:
        return whole, False
    for closing in ("}", "}}", "\"}}", "}}}", "\"}", "]}}"):
        try:
            return json.loads(text + closing), True
        except (ValueError, RecursionError):
            continue
    return None
