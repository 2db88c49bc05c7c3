"""What only the PostgreSQL store does: several daemons (here, several stores) share one database. They migrate
it once between them, write one session's turns without interleaving, run one turn of a session at a time,
and hear each other's tool switches. The suite every store passes is tests/unit/test_session_store.py."""

import asyncio

import psycopg
import pytest

from qwend.cli.local_server import free_port
from qwend.errors import DatabaseUnavailable, QwendError
from qwend.sessions.postgres import connections
from qwend.sessions.postgres import database as postgres
from qwend.sessions.postgres.connections import describe
from qwend.sessions.postgres.database import PostgresDatabase
from qwend.sessions.store import StoredMessage


async def started(db, told):
    await db.start()
    await db.switches.follow(told)
    return db


async def daemons(url, n, told=None):
    """`n` databases on one, started at once as daemons starting together would."""
    told = {} if told is None else told
    dbs = [PostgresDatabase(url) for _ in range(n)]
    await asyncio.gather(*(started(db, told.setdefault(i, {}).update) for i, db in enumerate(dbs)))
    return dbs


def schema_version(url):
    with psycopg.connect(url) as db:
        return db.execute("SELECT version FROM qwend_schema").fetchone()[0]


async def test_daemons_starting_together_migrate_once(postgres_database, monkeypatch):
    applied = []
    original, *later = postgres.MIGRATIONS
    known = len(postgres.MIGRATIONS)

    async def v1_counted(db):
        applied.append(1)
        await original(db)

    monkeypatch.setattr(postgres, "MIGRATIONS", (v1_counted, *later))
    stores = await daemons(postgres_database, 4)
    assert applied == [1] and schema_version(postgres_database) == known

    async def next_pinned(db):
        applied.append(known + 1)
        await db.execute("ALTER TABLE sessions ADD COLUMN pinned BOOLEAN NOT NULL DEFAULT FALSE")

    monkeypatch.setattr(postgres, "MIGRATIONS", (v1_counted, *later, next_pinned))
    await stores[0].sessions.create("default", title="old")
    upgraded = await daemons(postgres_database, 3)
    assert applied == [1, known + 1] and schema_version(postgres_database) == known + 1
    assert [s.title for s in await upgraded[0].sessions.list()] == ["old"]
    for store in stores + upgraded:
        await store.close()


async def test_a_failing_migration_is_rolled_back_and_a_newer_schema_refused(postgres_database, monkeypatch):
    await (await daemons(postgres_database, 1))[0].close()
    known = len(postgres.MIGRATIONS)

    async def broken(db):
        await db.execute("CREATE TABLE half_done (x INTEGER)")
        raise RuntimeError("boom")

    monkeypatch.setattr(postgres, "MIGRATIONS", (*postgres.MIGRATIONS, broken))
    with pytest.raises(RuntimeError, match="boom"):
        await daemons(postgres_database, 1)
    assert schema_version(postgres_database) == len(postgres.MIGRATIONS) - 1
    with psycopg.connect(postgres_database) as db:
        assert db.execute("SELECT to_regclass('half_done')").fetchone()[0] is None

    monkeypatch.setattr(postgres, "MIGRATIONS", ())
    with pytest.raises(QwendError, match=f"schema version {known}"):
        await daemons(postgres_database, 1)  # a database newer than the code is refused, not guessed at


async def test_turns_written_by_two_daemons_never_interleave(postgres_database):
    a_db, b_db = await daemons(postgres_database, 2)
    a, b = a_db.sessions, b_db.sessions
    session = await a.create("default")

    async def writer(store, name):
        for turn in range(10):
            await store.append_turn(session.id, [StoredMessage("user", f"{name}-{turn}-{i}") for i in range(5)])

    await asyncio.gather(writer(a, "a"), writer(b, "b"), writer(a, "c"), writer(b, "d"))
    history = await b.messages(session.id)
    assert len(history) == 4 * 10 * 5
    for turn in range(1, 41):
        messages = history[(turn - 1) * 5:turn * 5]
        assert {m.turn for m in messages} == {turn}
        assert len({m.content.rsplit("-", 1)[0] for m in messages}) == 1
    await a_db.close()
    await b_db.close()


async def test_one_turn_of_a_session_at_a_time_across_daemons(postgres_database):
    a_db, b_db = await daemons(postgres_database, 2)
    a, b = a_db.sessions, b_db.sessions
    first, other = await a.create("default"), await a.create("default")
    trace = []

    async def turn(store, session, name, seconds=0.3):
        async with store.turn_lock(session.id):
            trace.append(f"{name}+")
            await asyncio.sleep(seconds)
            trace.append(f"{name}-")

    await asyncio.gather(turn(a, first, "A"), turn(b, first, "B"))
    assert trace in (["A+", "A-", "B+", "B-"], ["B+", "B-", "A+", "A-"])

    trace.clear()  # other sessions do not wait
    await asyncio.gather(turn(a, first, "A"), turn(b, other, "B"))
    assert trace[:2] in (["A+", "B+"], ["B+", "A+"])

    # a turn given up while it waits leaves no lock behind
    async with a.turn_lock(first.id):
        waiting = asyncio.create_task(turn(b, first, "never"))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await asyncio.wait_for(turn(b, first, "B", 0), timeout=5)

    # a daemon that dies lets go of the turns it held
    crashed = await started(PostgresDatabase(postgres_database), lambda switches: None)
    held = crashed.sessions.turn_lock(first.id)
    await held.__aenter__()
    await crashed.close()  # its connections go, as they would with the process
    await asyncio.wait_for(turn(a, first, "A", 0), timeout=5)
    await a_db.close()
    await b_db.close()


async def eventually(check) -> bool:
    for _ in range(100):  # a notification, not a poll: it arrives within milliseconds, 5 s at most
        if check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_tool_switches_reach_every_daemon(postgres_database):
    told = {}
    a, b = await daemons(postgres_database, 2, told)
    await a.switches.save("calculator", False)
    assert await eventually(lambda: told[0].get("calculator") is False and told[1].get("calculator") is False)
    await b.switches.save("calculator", True)
    assert await eventually(lambda: told[0]["calculator"] is True and told[1]["calculator"] is True)
    await a.close()
    await b.close()


async def test_lost_connections_are_replaced_and_a_lost_database_is_a_503(postgres_database, postgres_url,
                                                                          monkeypatch):
    monkeypatch.setattr(connections, "CONNECT_TIMEOUT_S", 1.0)
    [db] = await daemons(postgres_database, 1)
    store = db.sessions
    session = await store.create("default")
    name = postgres_database.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as admin:  # as a restarted server would
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
    assert (await store.get(session.id)).id == session.id  # the pool saw the dead connection and made another

    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        try:
            with pytest.raises(DatabaseUnavailable) as raised:
                await store.get(session.id)
            assert raised.value.status == 503 and f"/{name} cannot be reached" in raised.value.message
        finally:
            admin.execute(f"CREATE DATABASE {name}")  # for the fixture to drop
            await db.close()


async def test_an_unreachable_database_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(connections, "CONNECT_TIMEOUT_S", 1.0)
    url = f"postgresql://qwend:secret@127.0.0.1:{free_port()}/qwend"
    with pytest.raises(QwendError) as raised:
        await PostgresDatabase(url).start()
    assert "could not connect to the PostgreSQL database at 127.0.0.1:" in raised.value.message
    assert "secret" not in raised.value.message and describe(url).endswith("/qwend")
