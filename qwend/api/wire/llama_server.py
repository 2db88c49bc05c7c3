"""Seed 004 wire bodies (and the `GET /models` body it shares with seed 002)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from qwend.api.wire.openai import ChatCompletionRequest
from qwend.engine.manager import LoadedModel
from qwend.models.store import LocalModel


class SetModelBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    modelName: str = Field(min_length=1, description="A .gguf file name in the models folder, or any model name.")


class RestoreCacheBody(ChatCompletionRequest):
    """The messages and tools of the prefix to warm, as an OpenAI chat request."""

    pin: bool = Field(False, description="Keep this prefix's KV state for good (in RAM, and on disk across "
                      "restarts), whatever other conversations come in between (llama.cpp models).")


def models_body(on_disk: Sequence[LocalModel], loaded: Mapping[str, LoadedModel], current: str) -> dict[str, Any]:
    # Both seeds read `models`: seed 002 as the models loaded now, seed 004 as the GGUF files on disk. It is
    # what is loaded (so after an unload a client sees it gone; seed 004 always has its current model loaded,
    # under the name it was set by); the files on disk are `files`, each one a name `/setModel` accepts.
    return {
        "models": list(loaded),
        "loaded_models": [
            {"model_key": m.name, "file": _file(m.model), "loaded_at": m.loaded_at} for m in loaded.values()
        ],
        "files": [_file(m) for m in on_disk],
        "current_model": current,
    }


def _file(model: LocalModel) -> str:
    """A GGUF file's (or model folder's) name; an upstream server's model has only its id."""
    return model.path.name if model.path is not None else model.name
