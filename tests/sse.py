"""Reading named SSE events (`event:` + JSON `data:`) the way a client of seed 000's stream would."""

import json
from collections.abc import Iterable


def named_events(lines: Iterable[str]) -> list[tuple[str, dict]]:
    events, name = [], None
    for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and name:
            events.append((name, json.loads(line.split(":", 1)[1])))
    return events


def data_lines(lines: Iterable[str]) -> list[str]:
    """The `data:` payloads of an unnamed SSE stream (OpenAI's), `[DONE]` included."""
    return [line.split(":", 1)[1].strip() for line in lines if line.startswith("data:")]
