"""The response store interface and its record: responses of OpenAI's Responses API, kept (with `store`) so
that a later response can continue one (`previous_response_id`) and a client can read or delete it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from qwend.errors import ResponseNotFound
from qwend.sessions.store import Caller


@dataclass(frozen=True)
class StoredResponse:
    """One response of OpenAI's Responses API: its answer as the API shows it (`body`), and the items it
    added to its conversation (its input items, then every item it produced, server-side tool calls and
    their results included), which a later response with `previous_id` set to this one continues."""

    id: str
    previous_id: str | None
    body: dict[str, Any]
    items: list[dict[str, Any]]
    created_at: float
    owner: str | None = None  # as SessionRecord.owner


def response_not_found(response_id: str) -> ResponseNotFound:
    return ResponseNotFound(f"response {response_id!r} does not exist (or was not stored: store false)",
                            param="response_id")


def response_from_row(row: Mapping[str, Any]) -> StoredResponse:
    """A responses row (sqlite3.Row or a psycopg dict row) as a record."""
    return StoredResponse(row["id"], row["previous_id"], json.loads(row["body"]), json.loads(row["items"]),
                          row["created_at"], row["owner"])


class ResponseStore(Protocol):
    """Where stored responses live. Responses record their owner; routes reach one through `response_for`."""

    async def save(self, response: StoredResponse) -> None:
        """Store a response, or replace it (a response in progress is stored again when it ends)."""
        ...

    async def get(self, response_id: str) -> StoredResponse:
        """A stored response, whoever owns it (`response_for` checks); raises ResponseNotFound."""
        ...

    async def delete(self, response_id: str) -> None:
        """Forget a response (responses that continue it keep their own items); raises ResponseNotFound."""
        ...


async def response_for(store: ResponseStore, response_id: str, caller: Caller) -> StoredResponse:
    """A stored response, if `caller` may reach it; else ResponseNotFound, as for an unknown id."""
    response = await store.get(response_id)
    if not caller.sees(response.owner):
        raise response_not_found(response_id)
    return response
