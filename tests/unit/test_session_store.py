"""The session stores, SQLite and PostgreSQL, through one suite: records, turns, folds, migrations,
concurrency, tool switches, and surviving SIGKILL; then what only PostgreSQL does: several daemons sharing it."""

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from qwend.errors import InvalidRequest, QwendError, ResponseNotFound, SessionNotFound
from qwend.sessions.database import open_database
from qwend.sessions.responses import StoredResponse
from qwend.sessions.sqlite import database as sqlite_store
from qwend.sessions.sqlite.database import SqliteDatabase
from qwend.sessions.store import StoredMessage
from qwend.types import ToolCall

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgres"])
def database(request, tmp_path):
    """A new, empty database of each kind: a SQLite file's path, or a PostgreSQL database's URL."""
    if request.param == "sqlite":
        return tmp_path / "nested" / "sessions.db"
    return request.getfixturevalue("postgres_database")


async def opened(database):
    db = open_database(database)
    await db.start()
    return db


@pytest.fixture
async def db(database):
    db = await opened(database)
    yield db
    await db.close()


@pytest.fixture
def store(db):
    return db.sessions


def rows(database, table):
    """How many rows a table holds, read past the store."""
    if isinstance(database, Path):
        with sqlite3.connect(database) as db:
            return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    with psycopg.connect(database) as db:
        return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def user(text):
    return StoredMessage("user", text)


def _user_version(path):
    with sqlite3.connect(path) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


async def test_create_get_list_update_delete(store, database):
    first = await store.create("default", model="qwen", title="one", metadata={"k": 1})
    second = await store.create("coder")
    assert len(first.id) == 32 and first.created_at == first.updated_at
    assert await store.get(first.id) == first
    assert (second.model, second.title, second.metadata) == (None, None, {})
    assert [s.id for s in await store.list()] == [second.id, first.id]

    await store.append_turn(first.id, [user("hi")])
    assert [s.id for s in await store.list()] == [first.id, second.id]

    renamed = await store.update(first.id, title="renamed")
    assert (renamed.title, renamed.metadata, renamed.profile) == ("renamed", {"k": 1}, "default")
    assert renamed.updated_at > first.updated_at
    changed = await store.update(first.id, metadata={"k": 2})
    assert (changed.title, changed.metadata) == ("renamed", {"k": 2})

    await store.delete(first.id)
    assert [s.id for s in await store.list()] == [second.id]
    assert rows(database, "messages") == 0  # cascaded


async def test_unknown_session_raises_session_not_found(store):
    calls = [store.get("nope"), store.update("nope", title="x"), store.delete("nope"), store.messages("nope"),
             store.append_turn("nope", [user("hi")]), store.fold("nope", 1, StoredMessage("summary", "s"))]
    for call in calls:
        with pytest.raises(SessionNotFound) as raised:
            await call
        assert (raised.value.status, raised.value.type, raised.value.code) == (
            404, "invalid_request_error", "session_not_found")


async def test_turns_keep_order_tool_calls_and_tokens(store):
    session = await store.create("default")
    call = ToolCall("call_1", "calculator", '{"expression": "2+2"}')
    turn1 = [StoredMessage("system", "be brief"), user("what is 2+2?"),
             StoredMessage("assistant", "", reasoning="use the tool", tool_calls=(call,), prompt_tokens=30,
                           completion_tokens=12),
             StoredMessage("tool", "4", tool_call_id="call_1", name="calculator"),
             StoredMessage("assistant", "4.", prompt_tokens=50, completion_tokens=3)]
    stored1 = await store.append_turn(session.id, turn1)
    stored2 = await store.append_turn(session.id, [user("thanks"), StoredMessage("assistant", "welcome")])
    stored3 = await store.append_turn(session.id, [user("bye")])

    assert [m.turn for m in stored1 + stored2 + stored3] == [1] * 5 + [2] * 2 + [3]
    assert all(m.id is not None and m.created_at is not None for m in stored1)
    assert [replace(m, id=None, turn=None, created_at=None) for m in stored1] == turn1
    history = await store.messages(session.id)
    assert history == stored1 + stored2 + stored3
    assert history[2].tool_calls == (call,) and isinstance(history[2].tool_calls[0], ToolCall)
    assert (history[2].prompt_tokens, history[2].completion_tokens) == (30, 12)
    assert (await store.get(session.id)).updated_at == stored3[0].created_at


async def test_a_failing_turn_stores_nothing(store):
    session = await store.create("default")
    await store.append_turn(session.id, [user("kept")])
    before = await store.get(session.id)
    broken = [user("a"), user("b"), StoredMessage("user", None)]  # NOT NULL fails on the third insert
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        await store.append_turn(session.id, broken)
    assert [m.content for m in await store.messages(session.id)] == ["kept"]
    assert await store.get(session.id) == before
    assert (await store.append_turn(session.id, [user("next")]))[0].turn == 2
    with pytest.raises(ValueError):
        await store.append_turn(session.id, [])


async def test_fold_places_the_summary_between_folded_and_live_messages(store):
    session = await store.create("default")
    for n in range(1, 4):
        await store.append_turn(session.id, [user(f"q{n}"), StoredMessage("assistant", f"a{n}")])
    history = await store.messages(session.id)

    summary = await store.fold(session.id, history[3].id, StoredMessage("summary", "s1"))
    assert (summary.role, summary.turn, summary.folded, summary.id is not None) == ("summary", 2, False, True)
    await store.append_turn(session.id, [user("q4")])
    history = await store.messages(session.id)
    assert [(m.content, m.folded) for m in history] == [
        ("q1", True), ("a1", True), ("q2", True), ("a2", True), ("s1", False), ("q3", False), ("a3", False),
        ("q4", False)]

    # A second fold supersedes the first summary and lands before the live turn.
    await store.fold(session.id, history[6].id, StoredMessage("summary", "s2"))
    history = await store.messages(session.id)
    assert [m.content for m in history if not m.folded] == ["s2", "q4"]
    assert [m.content for m in history][-3:] == ["a3", "s2", "q4"]

    # Folding through the newest message puts the summary at the end; later turns follow it.
    await store.fold(session.id, history[-1].id, StoredMessage("summary", "s3"))
    await store.append_turn(session.id, [user("q5")])
    assert [m.content for m in await store.messages(session.id) if not m.folded] == ["s3", "q5"]

    other = await store.create("default")
    with pytest.raises(InvalidRequest):
        await store.fold(other.id, history[0].id, StoredMessage("summary", "x"))
    with pytest.raises(ValueError):
        await store.fold(session.id, history[0].id, StoredMessage("assistant", "x"))


async def test_tool_switches_are_kept(db, database):
    told = {}
    await db.switches.save("calculator", False)
    await db.switches.save("web_search", False)
    await db.switches.save("calculator", True)
    again = open_database(database)  # as after a restart
    await again.start()
    await again.switches.follow(told.update)
    await again.close()
    assert told == {"calculator": True, "web_search": False}


async def test_responses_are_stored_replaced_and_deleted(db):
    store = db.responses
    first = StoredResponse("resp_1", None, {"status": "in_progress"}, [{"type": "message"}], 1.5)
    await store.save(first)
    await store.save(replace(first, body={"status": "completed"}))
    assert await store.get("resp_1") == replace(first, body={"status": "completed"})
    await store.save(StoredResponse("resp_2", "resp_1", {}, [], 2.0))
    assert (await store.get("resp_2")).previous_id == "resp_1"
    await store.delete("resp_1")
    for call in (store.get("resp_1"), store.delete("resp_1")):
        with pytest.raises(ResponseNotFound):
            await call


async def test_sqlite_migrations_run_once_and_upgrade_old_databases(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    await (db := SqliteDatabase(path)).sessions.create("default", title="old")
    await db.close()
    known = len(sqlite_store.MIGRATIONS)
    assert _user_version(path) == known == 5

    applied = []

    def must_not_rerun(db):
        raise AssertionError("a step ran again")

    def next_pinned(db):
        applied.append(known + 1)
        db.execute("ALTER TABLE sessions ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0")

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", (*[must_not_rerun] * known, next_pinned))
    for _ in range(2):  # the second open applies nothing
        db = SqliteDatabase(path)
        assert [s.title for s in await db.sessions.list()] == ["old"]
        await db.close()
    assert applied == [known + 1] and _user_version(path) == known + 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT pinned FROM sessions").fetchall() == [(0,)]


async def test_a_failing_sqlite_migration_is_rolled_back(tmp_path, monkeypatch):
    path = tmp_path / "s.db"
    await SqliteDatabase(path).close()
    known = len(sqlite_store.MIGRATIONS)

    def v4_broken(db):
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", (*sqlite_store.MIGRATIONS, v4_broken))
    with pytest.raises(RuntimeError, match="boom"):
        SqliteDatabase(path)
    assert _user_version(path) == known
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []

    monkeypatch.setattr(sqlite_store, "MIGRATIONS", ())
    with pytest.raises(QwendError, match=f"schema version {known}"):
        SqliteDatabase(path)  # a database newer than the code is refused, not guessed at


async def test_concurrent_appends_never_interleave(store):
    session = await store.create("default")

    async def writer(task):
        for turn in range(5):
            await store.append_turn(session.id, [user(f"{task}-{turn}-{i}") for i in range(10)])

    await asyncio.gather(*(writer(task) for task in range(8)))
    history = await store.messages(session.id)
    assert len(history) == 8 * 5 * 10
    for turn in range(1, 41):
        messages = history[(turn - 1) * 10:turn * 10]
        assert {m.turn for m in messages} == {turn}
        labels = [m.content.rsplit("-", 1) for m in messages]
        assert len({prefix for prefix, _ in labels}) == 1
        assert [int(i) for _, i in labels] == list(range(10))


CRASH_CHILD = """
import asyncio, sys
from pathlib import Path
from qwend.sessions.database import open_database
from qwend.sessions.store import StoredMessage

async def main():
    database = sys.argv[1] if "://" in sys.argv[1] else Path(sys.argv[1])
    db = open_database(database)
    await db.start()
    store = db.sessions
    while True:
        turn = [StoredMessage("user", f"{i}:" + "x" * 500) for i in range(50)]
        print((await store.append_turn(sys.argv[2], turn))[0].turn, flush=True)

asyncio.run(main())
"""


async def test_sigkill_mid_write_leaves_only_whole_turns(database):
    db = await opened(database)
    session = await db.sessions.create("default")
    await db.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    committed = 0
    for _ in range(3):
        child = subprocess.Popen([sys.executable, "-c", CRASH_CHILD, str(database), session.id], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(3):  # at least three turns committed in this round
                line = child.stdout.readline()
                assert line, "the writer died before committing"
                committed = int(line)
            time.sleep(random.uniform(0.0, 0.1))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
        committed = max([committed, *map(int, child.stdout.read().split())])
        child.stdout.close()

        db = await opened(database)
        history = await db.sessions.messages(session.id)
        await db.close()
        turns = len(history) // 50
        assert len(history) == turns * 50 and turns >= committed  # whole turns, every reported one kept
        for n in range(turns):
            messages = history[n * 50:(n + 1) * 50]
            assert [m.turn for m in messages] == [n + 1] * 50
            assert [int(m.content.split(":")[0]) for m in messages] == list(range(50))
        if isinstance(database, Path):
            with sqlite3.connect(database) as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- owners: the API key that made a session or response (routes check it: tests/unit/test_session_owners.py)


def execute(database, sql):
    """Run one statement past the store."""
    if isinstance(database, Path):
        with sqlite3.connect(database) as db:
            db.execute(sql)
    else:
        with psycopg.connect(database) as db:
            db.execute(sql)


async def test_owners_are_kept_and_filter_the_list(store, db):
    mine = await store.create("default", owner="sha256:aaaa")
    theirs = await store.create("default", owner="sha256:bbbb")
    nobodys = await store.create("default")
    assert (await store.get(mine.id)).owner == "sha256:aaaa" and nobodys.owner is None
    assert [s.id for s in await store.list("sha256:aaaa")] == [mine.id]
    assert [s.id for s in await store.list("sha256:bbbb")] == [theirs.id]
    assert await store.list("") == [] and await store.list("sha256:cccc") == []
    assert {s.id for s in await store.list()} == {mine.id, theirs.id, nobodys.id}
    await store.append_turn(mine.id, [user("hi")])
    assert (await store.update(mine.id, title="kept")).owner == "sha256:aaaa"  # nothing else changes it

    await db.responses.save(StoredResponse("resp_1", None, {"id": "resp_1"}, [], 1.0, "sha256:aaaa"))
    await db.responses.save(StoredResponse("resp_2", "resp_1", {"id": "resp_2"}, [], 2.0))
    assert (await db.responses.get("resp_1")).owner == "sha256:aaaa"
    assert (await db.responses.get("resp_2")).owner is None


async def test_rows_from_before_owners_have_none(database, monkeypatch):
    from qwend.sessions.postgres import database as postgres_store

    module = sqlite_store if isinstance(database, Path) else postgres_store
    full = module.MIGRATIONS
    owners = next(i for i, step in enumerate(full) if step.__name__.endswith("_owners"))
    monkeypatch.setattr(module, "MIGRATIONS", full[:owners])  # the schema as it was before owners
    await (await opened(database)).close()
    execute(database, "INSERT INTO sessions (id, profile, created_at, updated_at) VALUES ('old', 'general', 1, 1)")
    execute(database, "INSERT INTO responses (id, created_at, body, items) VALUES ('resp_old', 1, '{}', '[]')")

    monkeypatch.setattr(module, "MIGRATIONS", full)
    db = await opened(database)
    try:
        assert [(s.id, s.owner) for s in await db.sessions.list()] == [("old", None)]
        assert await db.sessions.list("sha256:aaaa") == []
        assert (await db.responses.get("resp_old")).owner is None
    finally:
        await db.close()
