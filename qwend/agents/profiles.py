"""Agent profiles: TOML files naming a system prompt, tools, a model and sampling defaults.

Built-in profiles ship in `qwend/agents/profiles/`; files in the user's folder (`QWEND_PROFILES_DIR`,
default `<data_dir>/profiles`) are read after them, so a user file named like a built-in one replaces it.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qwend.errors import InvalidRequest, ProfileNotFound
from qwend.types import SamplingParams

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "profiles"
SAMPLING_FIELDS = {f.name for f in fields(SamplingParams)} - {"stop"}


class _ProfileFile(BaseModel):
    """The TOML file's shape, checked at the edge."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    description: str = ""
    system_prompt: str = ""
    tools: list[str] = Field(default_factory=list)
    model: str | None = None
    model_size: Literal["small", "medium", "large"] | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    max_tool_steps: int = Field(5, ge=0, le=50)
    tool_chaining: bool = False


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    system_prompt: str
    tools: tuple[str, ...]
    model: str | None
    model_size: str | None
    sampling: dict[str, Any]
    max_tool_steps: int
    tool_chaining: bool  # may call again after successful results (else: answer from them)
    source: str  # "builtin" or the file's path

    def sampling_params(self) -> SamplingParams:
        """The profile's sampling defaults (a request's SamplingOverrides go over them)."""
        return SamplingParams(**self.sampling)

    def public(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "system_prompt": self.system_prompt,
            "tools": list(self.tools), "model": self.model, "model_size": self.model_size,
            "sampling": self.sampling, "max_tool_steps": self.max_tool_steps, "tool_chaining": self.tool_chaining,
            "source": self.source,
        }


def load_profile(path: Path, source: str) -> Profile:
    try:
        data = _ProfileFile.model_validate(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ValueError(f"profile {path}: {exc}") from exc
    unknown = set(data.sampling) - SAMPLING_FIELDS
    if unknown:
        raise ValueError(f"profile {path}: unknown sampling fields {sorted(unknown)}")
    return Profile(
        name=data.name, description=data.description.strip(), system_prompt=data.system_prompt.strip(),
        tools=tuple(data.tools), model=data.model, model_size=data.model_size, sampling=data.sampling,
        max_tool_steps=data.max_tool_steps, tool_chaining=data.tool_chaining, source=source,
    )


class Profiles:
    """The profiles known to this daemon, read once at start (and again by `reload()`)."""

    def __init__(self, user_dir: Path) -> None:
        self.user_dir = user_dir
        self._profiles: dict[str, Profile] = {}
        self.reload()

    def reload(self) -> None:
        found: dict[str, Profile] = {}
        sources = [(p, "builtin") for p in sorted(BUILTIN_DIR.glob("*.toml"))]
        if self.user_dir.is_dir():
            sources += [(p, str(p)) for p in sorted(self.user_dir.glob("*.toml"))]
        for path, source in sources:
            try:
                profile = load_profile(path, source)
            except ValueError as exc:
                log.error("%s; skipped", exc)
                continue
            found[profile.name] = profile
        self._profiles = found

    def names(self) -> list[str]:
        return list(self._profiles)

    def all(self) -> list[Profile]:
        return list(self._profiles.values())

    def get(self, name: str | None) -> Profile:
        if not name:
            raise InvalidRequest("a profile is required; GET /v1/profiles lists them", param="profile")
        try:
            return self._profiles[name]
        except KeyError:
            known = ", ".join(self._profiles) or "none"
            raise ProfileNotFound(f"no profile named {name!r}; known: {known}", param="profile") from None
