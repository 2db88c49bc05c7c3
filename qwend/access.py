"""API keys: several, named, kept only as sha256 digests (`<data_dir>/api-keys`, `qwend keys ...`) or given in
the environment (`QWEND_API_KEYS`, `QWEND_OPERATOR_KEYS`, plain or `sha256:<hex>`), and the rule for when a
daemon may serve without. A key owns the sessions and responses it creates; an operator's key reaches all.

The keys qwend makes are 256 random bits, so a plain sha256 (no salt, no stretching) is what protects them:
there is nothing to guess. A key someone picks by hand is only as strong as they made it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qwend.private_files import private_dir
from qwend.settings import Settings

KEY_PREFIX = "qwend-"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    sha256: str
    operator: bool = False  # reaches every key's sessions and stored responses

    @property
    def owner(self) -> str:
        """The id recorded on what the key creates: a prefix of its digest (as `qwend keys list` shows it), so
        ownership follows the key itself, not a name that could be reused or a position in a list."""
        return "sha256:" + self.sha256[:16]


class ApiKeys:
    """The keys a daemon accepts. Empty: every request is let in (the loopback default)."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, settings: Settings) -> ApiKeys:
        keys = read_key_file(settings.api_keys_file)
        for prefix, entries, operator in (("env", settings.api_keys, False),
                                          ("operator", settings.operator_keys, True)):
            for number, entry in enumerate(entries, 1):
                value = entry.get_secret_value().strip()
                sha = value[7:].lower() if value.startswith("sha256:") else digest(value)
                keys.append(ApiKey(f"{prefix}-{number}", sha, operator))
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def identify(self, presented: str | None) -> ApiKey | None:
        """The key `presented` is, compared in constant time against every digest (no early exit to time); a
        key listed both plainly and as an operator's is the operator's."""
        if not presented:
            return None
        sha = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(sha, key.sha256) and (found is None or key.operator):
                found = key
        return found


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: `Authorization: Bearer <key>` (OpenAI, Ollama clients) or `x-api-key`
    (Anthropic's)."""
    bearer = headers.get("authorization", "")
    if bearer[:7].lower() == "bearer ":
        return bearer[7:].strip()
    return headers.get("x-api-key") or None


def read_key_file(path: Path) -> list[ApiKey]:
    if not path.exists():
        return []
    return [ApiKey(k["name"], k["sha256"], k.get("operator") is True) for k in json.loads(path.read_text())["keys"]]


def _write_key_file(path: Path, keys: list[ApiKey]) -> None:
    private_dir(path.parent)  # the data folder, maybe made here first (`qwend keys create` before any serve)
    partial = path.with_suffix(".partial")
    # digests only, yet still private: a digest list tells an attacker which keys exist
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        # "operator" only where true: a file without it (older qwends wrote none) means plain keys
        json.dump({"keys": [{"name": k.name, "sha256": k.sha256} | ({"operator": True} if k.operator else {})
                            for k in keys]}, out, indent=2)
    partial.replace(path)


def create_key(path: Path, name: str, *, operator: bool = False) -> str:
    """Add a key called `name` (an operator's: it reaches every key's sessions) to the key file and return
    it: the only time it is ever shown."""
    keys = read_key_file(path)
    if any(k.name == name for k in keys):
        raise ValueError(f"a key called {name!r} exists already; remove it first")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    _write_key_file(path, [*keys, ApiKey(name, digest(key), operator)])
    return key


def remove_key(path: Path, name: str) -> None:
    keys = read_key_file(path)
    if not any(k.name == name for k in keys):
        raise ValueError(f"no key called {name!r}")
    _write_key_file(path, [k for k in keys if k.name != name])


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_problem(settings: Settings, keys: ApiKeys) -> str | None:
    """Why the daemon must not start as configured, or None: a non-loopback address needs API keys (thousands
    of keyless Ollama servers sit open on the internet), unless `allow_insecure_bind` says it is meant."""
    if is_loopback(settings.host) or keys or settings.allow_insecure_bind:
        return None
    return (f"refusing to serve on {settings.host} without an API key: anyone who can reach it could use it. "
            "Create one with `qwend keys create NAME` (or set QWEND_API_KEYS), or bind to 127.0.0.1; "
            "QWEND_ALLOW_INSECURE_BIND=true serves without a key anyway.")
