"""Request-scoped access to the Runtime, the one place routes reach daemon state from, who a request is
from (what the scheduler queues it by), and whose sessions it reaches (its API key's)."""

from __future__ import annotations

import hashlib
from typing import Annotated, get_args

from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from qwend.access import presented_key
from qwend.api.affinity import affinity_key
from qwend.errors import InvalidRequest
from qwend.runtime import Runtime
from qwend.sessions.store import Caller
from qwend.types import Priority, Requester


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


def requester(connection: HTTPConnection) -> Requester:
    """Who asks, from the path and headers alone. The client is the session for session routes (their
    `{session_id}`), else the `X-Qwend-Client` header, else the API key (`Authorization: Bearer`, `x-api-key`),
    else the remote address. The priority is the `X-Qwend-Priority` header: interactive or batch."""
    headers = connection.headers
    priority = headers.get("x-qwend-priority", "").strip().lower() or None
    if priority is not None and priority not in get_args(Priority):
        raise InvalidRequest(f"X-Qwend-Priority must be interactive or batch, not {priority!r}",
                             param="X-Qwend-Priority")
    key = presented_key(headers)
    client = (
        connection.path_params.get("session_id")
        or headers.get("x-qwend-client")
        or (key and "key " + hashlib.sha256(key.encode()).hexdigest()[:16])  # a digest: keys are secrets
        or (connection.client.host if connection.client else None)
    )
    return Requester(client, priority, affinity_key(connection.url.path, headers))


RequesterDep = Annotated[Requester, Depends(requester)]


def caller(connection: HTTPConnection) -> Caller:
    """Whose sessions and stored responses the request reaches, as the access guard found from its key;
    without API keys (no caller set), everyone's, as for a single user."""
    return connection.scope.get("state", {}).get("caller") or Caller()


CallerDep = Annotated[Caller, Depends(caller)]
