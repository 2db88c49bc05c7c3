"""The one exception tree; each protocol maps it once to its own error shape.

QwendError
├── InvalidRequest          400  a body that cannot be served as sent
│   ├── ContextOverflow     400  the prompt (plus max_tokens) does not fit the context window
│   └── InvalidToolArguments 400 arguments that fail a tool's schema (names the argument)
├── NotFound                404
│   ├── ModelNotFound            a model name that resolves to nothing on disk or in the catalog
│   ├── SessionNotFound          a session id that no session store knows
│   ├── ProfileNotFound          a profile name that no profile file defines
│   └── ToolNotFound             a tool name that is not registered (or is switched off by configuration)
├── Busy                    429  the model's queue is full; carries retry_after seconds (the Retry-After header)
├── InsufficientMemory      503  a model that would not fit the memory budget, even with idle models unloaded
├── ModelFetchError         500  a pull that failed (offline, pip error, missing file)
│   └── ChecksumMismatch         the assembled file's sha256 is not the pinned one
└── BackendError            500  the inference engine failed
    └── UpstreamError       502  the upstream server is unreachable, or failed (seed 002: "Could not connect to …")
"""

from __future__ import annotations


class QwendError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(QwendError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextOverflow(InvalidRequest):
    code = "context_length_exceeded"


class InvalidToolArguments(InvalidRequest):
    code = "invalid_tool_arguments"


class NotFound(QwendError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class SessionNotFound(NotFound):
    code = "session_not_found"


class ProfileNotFound(NotFound):
    code = "profile_not_found"


class ToolNotFound(NotFound):
    code = "tool_not_found"


class ResponseNotFound(NotFound):
    code = "response_not_found"


class Busy(QwendError):
    # a rate limit, not an outage: the request is fine and the daemon healthy, it only has to come back later
    # (503 stays for what cannot be served at all, like a model that does not fit)
    status = 429
    type = "rate_limit_error"
    code = "busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsufficientMemory(QwendError):
    status = 503
    type = "server_error"
    code = "insufficient_memory"


class DatabaseUnavailable(QwendError):
    """The session database cannot be reached (PostgreSQL down, or the database gone)."""

    status = 503
    type = "server_error"
    code = "database_unavailable"


class ModelFetchError(QwendError):
    code = "model_fetch_failed"


class ChecksumMismatch(ModelFetchError):
    code = "checksum_mismatch"


class BackendError(QwendError):
    code = "backend_error"


class UpstreamError(BackendError):
    status = 502
    code = "upstream_error"
