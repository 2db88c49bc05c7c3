"""An OpenAI-compatible upstream server's models: listing them, and loading or unloading them where the
server has an API for it (Ollama, LM Studio, llama-server's router). Blocking calls: run them in a thread.

Any server that speaks `GET /v1/models` and `POST /v1/chat/completions` works (vLLM, SGLang, llama-cpp-python);
the kind only adds model lifecycle, and is detected from the paths the server answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from qwend.errors import InvalidRequest, ModelFetchError, ModelNotFound, UpstreamError
from qwend.models.store import LocalModel
from qwend.settings import Settings

log = logging.getLogger(__name__)

UpstreamKind = Literal["openai", "ollama", "lmstudio", "llama_server"]
LIST_TIMEOUT = httpx.Timeout(10.0, connect=3.0)


def upstream_headers(settings: Settings) -> dict[str, str]:
    key = settings.upstream_api_key
    return {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}


def connection_failed(url: str, exc: httpx.HTTPError) -> UpstreamError:
    """Seed 002's message for an upstream that is not there ("Could not connect to …: Connection refused")."""
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError) and "refused" in reason.lower():
        reason = "Connection refused"
    return UpstreamError(f"Could not connect to the upstream server at {url}: {reason}")


def upstream_failed(url: str, reply: httpx.Response) -> Exception:
    """The upstream's own error, as the matching qwend error."""
    try:
        body = reply.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        message = error.get("message") or error.get("detail") if isinstance(error, dict) else str(error)
    except ValueError:
        message = reply.text[:500]
    message = f"the upstream server answered {reply.status_code}: {message or reply.reason_phrase}"
    if reply.status_code == 404:
        return ModelNotFound(message, param="model")
    if 400 <= reply.status_code < 500:
        return InvalidRequest(message)
    return UpstreamError(f"{message} ({url})")


@dataclass
class UpstreamModels:
    """The model source of `--backend upstream`: the same methods as ModelStore, answered by the server."""

    settings: Settings
    kind: UpstreamKind | None = None  # detected on first use
    _client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.url = self.settings.upstream_url.rstrip("/")
        self.root = self.url.removesuffix("/v1")
        self._client = httpx.Client(headers=upstream_headers(self.settings), timeout=LIST_TIMEOUT)

    def resolve(self, name: str) -> LocalModel:
        """Any name: the upstream decides what exists when the model is loaded or used."""
        return LocalModel(name, None)

    find = resolve

    def list(self) -> list[LocalModel]:
        return [LocalModel(entry["id"], None) for entry in self.listing()]

    def listing(self) -> list[dict[str, Any]]:
        """The upstream's `GET /v1/models` entries. Raises UpstreamError when it cannot be reached."""
        return self._get(f"{self.url}/models").get("data") or []

    def entry(self, name: str) -> dict[str, Any]:
        """The listing entry of `name`; ModelNotFound when the upstream does not serve it."""
        listing = self.listing()
        for entry in listing:
            if entry.get("id") == name:
                return entry
        known = ", ".join(e.get("id", "?") for e in listing) or "none"
        raise ModelNotFound(f"the upstream server at {self.url} has no model {name!r}; it has: {known}", param="model")

    def first(self) -> str | None:
        listing = self.listing()
        return listing[0]["id"] if listing else None

    def pull(self, name: str, on_progress=None) -> LocalModel:
        if self.detect() != "ollama":
            raise ModelFetchError(f"the upstream server at {self.url} manages its own model files; "
                                  f"fetch {name!r} there")
        self._post(f"{self.root}/api/pull", {"model": name, "stream": False}, timeout=None)
        return LocalModel(name, None)

    def load(self, name: str) -> None:
        """Ask the upstream to load `name` now (a no-op where it has no API; it loads on first use)."""
        match self.detect():
            case "ollama":
                self._post(f"{self.root}/api/generate", {"model": name, "keep_alive": "5m"}, timeout=None)
            case "lmstudio":
                self._post(f"{self.root}/api/v1/models/load", {"model": name}, timeout=None)
            case "llama_server":
                self._post(f"{self.root}/models/load", {"model": name}, timeout=None)

    def unload(self, name: str) -> None:
        match self.detect():
            case "ollama":
                self._post(f"{self.root}/api/generate", {"model": name, "keep_alive": 0})
            case "lmstudio":
                self._post(f"{self.root}/api/v1/models/unload", {"instance_id": name})
            case "llama_server":
                self._post(f"{self.root}/models/unload", {"model": name})

    def detect(self) -> UpstreamKind:
        """Which server this is, from the paths it answers (once)."""
        if self.kind is None:
            self.kind = "openai"
            for kind, path, key in (("ollama", "/api/version", "version"), ("lmstudio", "/api/v1/models", "models")):
                try:
                    reply = self._client.get(f"{self.root}{path}")
                    if reply.status_code == 200 and key in reply.json():
                        self.kind = kind
                        break
                except (httpx.HTTPError, ValueError):
                    continue
            else:
                if any("status" in entry for entry in self.listing()):  # llama-server's router lists load states
                    self.kind = "llama_server"
            log.info("upstream %s is %s", self.url, self.kind)
        return self.kind

    def _get(self, url: str) -> dict[str, Any]:
        try:
            reply = self._client.get(url)
        except httpx.HTTPError as exc:
            raise connection_failed(self.url, exc) from None
        if reply.status_code != 200:
            raise upstream_failed(self.url, reply)
        return reply.json()

    def _post(self, url: str, body: dict[str, Any], timeout: float | None = 30.0) -> None:
        try:
            reply = self._client.post(url, json=body, timeout=httpx.Timeout(timeout, connect=3.0))
        except httpx.HTTPError as exc:
            raise connection_failed(self.url, exc) from None
        if reply.status_code >= 400:
            raise upstream_failed(self.url, reply)

    def close(self) -> None:
        self._client.close()
