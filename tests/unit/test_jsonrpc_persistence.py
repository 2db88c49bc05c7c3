"""Seed 003 sessions and what they keep: `message` alone starts afresh unless the session was created
`persistent`, and a generation cut off by a disconnect keeps its question (and the answer so far, marked
stopped) where the session keeps turns. Helpers and the scripted daemon: test_jsonrpc_api.py."""

from __future__ import annotations

import asyncio

from tests.unit.test_jsonrpc_api import LONG, make, request, session, stored, until  # noqa: F401 (make: a fixture)


def test_message_alone_starts_afresh_in_a_session_not_made_persistent(make):
    client, runtime, backend = make("Hello.", "I cannot know.")
    sid = session(client)
    with client.websocket_connect(f"/ws/{sid}") as ws:
        for message in ("hi", "what did I say?"):
            request(ws, "generate", {"message": message})
            ws.receive_json()
            until(ws)
    assert backend.prompts[-1] == "<user>what did I say?<assistant>"
    assert stored(client, runtime, sid) == []


def test_a_disconnect_cancels_the_generation_and_keeps_the_question(make):
    client, runtime, backend = make(LONG, delay=0.01)
    sid, plain = session(client, {"persistent": True}), session(client)
    for socket in (sid, plain):
        with client.websocket_connect(f"/ws/{socket}") as ws:
            request(ws, "generate", {"message": "talk a lot"})
            ws.receive_json()
            until(ws, "text_chunk")
        client.portal.call(asyncio.sleep, 0.2)  # the server side notices the close and cancels
        assert backend.active == 0
    assert backend.stopped_early == 2
    kept = stored(client, runtime, sid)  # a persistent session keeps the question, and the answer marked stopped
    assert [(m.role, m.content, m.stopped) for m in kept][0] == ("user", "talk a lot", False)
    assert kept[1].role == "assistant" and kept[1].stopped and LONG.startswith(kept[1].content)
    assert stored(client, runtime, plain) == []  # the seed's own sessions store nothing
