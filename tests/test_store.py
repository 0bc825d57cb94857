"""The chat history store (control/store.py): schema migrations, order, retention, privacy,
durability across kill -9, and WAL readers beside a writer."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from control.store import (
    DATABASE_NAME,
    SCHEMA_VERSION,
    HistoryStore,
    Retention,
    StoredMessage,
    StoreError,
    StoreVersionError,
)

T0 = dt.datetime(2026, 12, 2, 12, 0, 0, tzinfo=dt.UTC)
ROOM = "sip:room@chorus.test"


def msg(
    n: int,
    *,
    room: str = ROOM,
    at: dt.datetime | None = None,
    recipients: tuple[str, ...] | None = None,
) -> StoredMessage:
    when = at if at is not None else T0 + dt.timedelta(seconds=n)
    return StoredMessage(
        room=room,
        message_id=f"m{n}",
        sender_uri=f"sip:user{n % 3}@chorus.test",
        sender_name=f"nick{n % 3}",
        time=when,
        content_type="text/plain",
        body=f"hello {n}".encode(),
        recipients=recipients,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / DATABASE_NAME


def test_open_migrates_empty_database_to_current_version(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "chat_messages" in tables
    raw.close()


def test_fields_roundtrip_exactly(db_path: Path) -> None:
    original = StoredMessage(
        room=ROOM,
        message_id="abc",
        sender_uri="sip:alice@chorus.test",
        sender_name="Älice",
        time=dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        content_type="image/png",
        body=bytes(range(256)) + b"\r\n\x00",
        headers=(("NS", "imdn <urn:ietf:params:imdn>"), ("imdn.Message-ID", "x1")),
        received=T0,
    )
    with HistoryStore.open(db_path) as store:
        seq = store.append(original)
        [got] = store.recent(ROOM, limit=10, now=T0)
    assert got.seq == seq
    assert got.time == original.time  # the same instant, given back in UTC
    assert got.time.utcoffset() == dt.timedelta(0)
    assert got.received == T0
    assert (got.message_id, got.sender_uri, got.sender_name, got.content_type) == (
        "abc",
        "sip:alice@chorus.test",
        "Älice",
        "image/png",
    )
    assert got.body == original.body
    assert got.headers == original.headers
    assert got.recipients is None


def test_reopen_keeps_data(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        for n in range(5):
            store.append(msg(n))
    with HistoryStore.open(db_path) as store:
        assert [m.message_id for m in store.recent(ROOM, limit=10, now=T0)] == [
            f"m{n}" for n in range(5)
        ]


def test_recent_is_oldest_first_by_creation_order_and_per_room(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        # Creation order wins over the sender's DateTime (a skewed clock cannot reorder).
        store.append(msg(1, at=T0 + dt.timedelta(hours=1)))
        store.append(msg(2, at=T0))
        store.append(msg(3, room="sip:other@chorus.test"))
        store.append(msg(4))
        got = store.recent(ROOM, limit=10, now=T0)
    assert [m.message_id for m in got] == ["m1", "m2", "m4"]
    seqs = [m.seq for m in got]
    assert seqs == sorted(seqs)


def test_recent_limit_gives_the_newest(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        for n in range(10):
            store.append(msg(n))
        assert [m.message_id for m in store.recent(ROOM, limit=3, now=T0)] == ["m7", "m8", "m9"]
        assert store.recent(ROOM, limit=0, now=T0) == []


def test_recent_max_age_uses_received_time(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        for n in range(10):
            # received n minutes after T0; the sender's DateTime claims far in the future
            m = msg(n, at=T0 + dt.timedelta(days=365))
            store.append(StoredMessage(**{**_fields(m), "received": T0 + dt.timedelta(minutes=n)}))
        now = T0 + dt.timedelta(minutes=10)
        got = store.recent(ROOM, limit=100, max_age=180.0, now=now)
    assert [m.message_id for m in got] == ["m7", "m8", "m9"]


def _fields(m: StoredMessage) -> dict[str, object]:
    return {f: getattr(m, f) for f in StoredMessage.__dataclass_fields__}


def test_append_prunes_its_room_by_count(db_path: Path) -> None:
    with HistoryStore.open(db_path, retention=Retention(keep=5)) as store:
        for n in range(3):
            store.append(msg(n, room="sip:other@chorus.test"))
        for n in range(20):
            store.append(msg(n))
        assert store.count(ROOM) == 5
        assert [m.message_id for m in store.recent(ROOM, limit=100, now=T0)] == [
            f"m{n}" for n in range(15, 20)
        ]
        assert store.count("sip:other@chorus.test") == 3


def test_append_prunes_its_room_by_age(db_path: Path) -> None:
    with HistoryStore.open(db_path, retention=Retention(keep=100, max_age=60.0)) as store:
        store.append(msg(0, at=T0))
        store.append(msg(1, at=T0 + dt.timedelta(seconds=30)))
        store.append(msg(2, at=T0 + dt.timedelta(seconds=90)))
        # m0 is 90 s older than m2 and goes; m1 (60 s) stays
        assert store.count(ROOM) == 2


def test_prune_every_room_by_count_and_age(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        for n in range(10):
            store.append(msg(n, room="sip:a@x", at=T0 + dt.timedelta(minutes=n)))
            store.append(msg(n, room="sip:b@x", at=T0 + dt.timedelta(minutes=n)))
        deleted = store.prune(None, keep=4, max_age=None, now=T0)
        assert deleted == 12
        assert store.count("sip:a@x") == store.count("sip:b@x") == 4
        now = T0 + dt.timedelta(minutes=10)
        assert store.prune("sip:a@x", keep=100, max_age=150.0, now=now) == 2
        assert [m.message_id for m in store.recent("sip:a@x", limit=9, now=now)] == ["m8", "m9"]
        assert store.count("sip:b@x") == 4


def test_private_not_stored_by_default(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store:
        assert store.append(msg(1, recipients=("sip:bob@chorus.test",))) is None
        assert store.count() == 0


def test_private_stored_when_asked_but_never_in_recent(db_path: Path) -> None:
    with HistoryStore.open(db_path, store_private=True) as store:
        store.append(msg(1))
        seq = store.append(msg(2, recipients=("sip:bob@chorus.test", "sip:carol@chorus.test")))
        store.append(msg(3))
        assert seq is not None
        assert store.count(ROOM) == 3
        assert [m.message_id for m in store.recent(ROOM, limit=10, now=T0)] == ["m1", "m3"]
    raw = sqlite3.connect(db_path)
    (recipients,) = raw.execute(
        "SELECT recipients FROM chat_messages WHERE seq=?", (seq,)
    ).fetchone()
    assert recipients == '["sip:bob@chorus.test", "sip:carol@chorus.test"]'
    raw.close()


def test_naive_datetime_is_refused(db_path: Path) -> None:
    with HistoryStore.open(db_path) as store, pytest.raises(ValueError, match="naive"):
        store.append(msg(1, at=dt.datetime(2026, 1, 1)))


def test_newer_schema_version_is_refused(db_path: Path) -> None:
    HistoryStore.open(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreVersionError, match="newer than this Chorus supports") as info:
        HistoryStore.open(db_path)
    assert info.value.found == SCHEMA_VERSION + 1
    assert info.value.supported == SCHEMA_VERSION


def test_failed_migration_leaves_previous_version(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import control.store as store_module

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration failed")

    monkeypatch.setattr(store_module, "MIGRATIONS", (*store_module.MIGRATIONS, broken))
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration failed"):
        HistoryStore.open(db_path)
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables and "chat_messages" in tables
    raw.close()


def test_migrations_run_in_order_once_and_keep_data(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database at version 1 with messages meets a build with two more migrations: both
    run, in order, each once; the messages are still there; reopening runs nothing."""
    import control.store as store_module

    with HistoryStore.open(db_path) as store:
        store.append(msg(1))
    ran: list[int] = []

    def add_column(db: sqlite3.Connection) -> None:
        ran.append(SCHEMA_VERSION + 1)
        db.execute("ALTER TABLE chat_messages ADD COLUMN edited INTEGER NOT NULL DEFAULT 0")

    def add_table(db: sqlite3.Connection) -> None:
        assert ran == [SCHEMA_VERSION + 1]  # after the one before it
        ran.append(SCHEMA_VERSION + 2)
        db.execute("CREATE TABLE later (x INTEGER)")

    monkeypatch.setattr(
        store_module, "MIGRATIONS", (*store_module.MIGRATIONS, add_column, add_table)
    )
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 2)
    with HistoryStore.open(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION + 2
        assert [m.message_id for m in store.recent(ROOM, limit=5, now=T0)] == ["m1"]
        store.append(msg(2))
    assert ran == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]
    HistoryStore.open(db_path).close()
    assert ran == [SCHEMA_VERSION + 1, SCHEMA_VERSION + 2]


def test_concurrent_first_opens_migrate_once(db_path: Path) -> None:
    """Several processes (here threads, each with its own connection) opening a new database
    at once: each migration runs once, under the write lock, and every open succeeds."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        stores = list(pool.map(lambda _: HistoryStore.open(db_path), range(4)))
    try:
        assert {s.schema_version for s in stores} == {SCHEMA_VERSION}
        stores[0].append(msg(1))
        assert [m.message_id for m in stores[3].recent(ROOM, limit=5, now=T0)] == ["m1"]
    finally:
        for store in stores:
            store.close()


def test_not_a_database_is_a_store_error(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    db_path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable database"):
        HistoryStore.open(db_path)


def test_reader_reads_while_writer_holds_a_transaction(db_path: Path) -> None:
    """WAL: a second connection reads the committed state while a write is in progress."""
    writer = HistoryStore.open(db_path)
    writer.append(msg(0))
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("BEGIN IMMEDIATE")  # a writer holding the write lock, uncommitted
    raw.execute(
        "INSERT INTO chat_messages (room, message_id, sender_uri, sent_us, received_us,"
        " content_type, body) VALUES (?, 'uncommitted', 's', 0, 0, 't', x'')",
        (ROOM,),
    )
    reader = HistoryStore.open(db_path)
    assert [m.message_id for m in reader.recent(ROOM, limit=10, now=T0)] == ["m0"]
    raw.execute("COMMIT")
    assert [m.message_id for m in reader.recent(ROOM, limit=10, now=T0)] == ["m0", "uncommitted"]
    raw.close()
    reader.close()
    writer.close()


def test_concurrent_reader_thread_sees_a_growing_prefix(db_path: Path) -> None:
    HistoryStore.open(db_path).close()
    total = 300
    seen: list[list[int]] = []
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            with HistoryStore.open(db_path) as reader:
                while not done.is_set():
                    got = reader.recent(ROOM, limit=total, now=T0)
                    seen.append([int(m.message_id[1:]) for m in got])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    with HistoryStore.open(db_path) as writer:
        for n in range(total):
            writer.append(msg(n))
    done.set()
    thread.join()
    assert errors == []
    assert seen, "the reader ran"
    for snapshot in seen:  # every read is a consistent prefix: no gaps, no reordering
        assert snapshot == list(range(len(snapshot)))
    with HistoryStore.open(db_path) as reader:
        assert len(reader.recent(ROOM, limit=total, now=T0)) == total


def test_one_store_shared_by_threads(db_path: Path) -> None:
    """Opened in one thread (as through asyncio.to_thread), used from others at once: the
    calls take turns on the one connection, nothing is lost or interleaved."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        store = pool.submit(HistoryStore.open, db_path, retention=Retention(keep=10**6)).result()
        rooms = [f"sip:room{i}@chorus.test" for i in range(4)]

        def fill(room: str) -> list[int | None]:
            out = []
            for n in range(100):
                out.append(store.append(msg(n, room=room)))
                store.prune(None, keep=10**6, max_age=None, now=T0)
            return out

        seqs = [s for part in pool.map(fill, rooms) for s in part]
    assert len(set(seqs)) == 400 and None not in seqs
    for room in rooms:
        assert [m.message_id for m in store.recent(room, limit=1000, now=T0)] == [
            f"m{n}" for n in range(100)
        ]
    store.close()


_WRITER = """
import datetime as dt, sys
from control.store import HistoryStore, Retention, StoredMessage
store = HistoryStore.open(sys.argv[1], retention=Retention(keep=10**9))
t0 = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
n = 0
while True:
    seq = store.append(StoredMessage(
        room="sip:room@chorus.test", message_id=f"k{n}", sender_uri="sip:a@x",
        sender_name=None, time=t0, content_type="text/plain", body=b"x" * 200))
    print(seq, f"k{n}", flush=True)
    n += 1
"""


def test_every_acknowledged_append_survives_kill_9(db_path: Path) -> None:
    HistoryStore.open(db_path).close()
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db_path)],
        stdout=subprocess.PIPE,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    printed: list[str] = []
    for line in proc.stdout:
        printed.append(line.split()[1].decode())
        if len(printed) == 500:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Whole lines already in the pipe before the kill were acknowledged too (the last one may
    # be cut short by the kill: it does not count).
    tail = proc.stdout.read().split(b"\n")[:-1]
    printed += [line.split()[1].decode() for line in tail]
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with HistoryStore.open(db_path, retention=Retention(keep=10**6)) as store:
        stored = {m.message_id for m in store.recent(ROOM, limit=10**6, now=T0)}
    assert len(printed) >= 500
    missing = [p for p in printed if p not in stored]
    assert missing == []


# ---- migration 2: the files table (issue 9, room files) -------------------------------------


def test_migration_2_adds_the_files_table_with_the_columns_issue_9_names(db_path: Path) -> None:
    HistoryStore.open(db_path).close()
    raw = sqlite3.connect(db_path)
    columns = [r[1] for r in raw.execute("PRAGMA table_info(files)")]
    indexes = {r[1] for r in raw.execute("PRAGMA index_list(files)")}
    raw.close()
    assert SCHEMA_VERSION >= 2
    assert {"room", "sender", "name", "type", "size", "sha1", "time_us", "status"} <= set(columns)
    assert "file_id" in columns  # the on-disk name, chosen by the server
    assert {"files_room_sha1", "files_room_time"} <= indexes


def test_a_version_1_database_keeps_its_history_through_migration_2(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database written by the build before room files (schema 1, messages in it) opens
    at version 2 with the messages untouched and an empty files table."""
    import control.store as store_module

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        patch.setattr(store_module, "SCHEMA_VERSION", 1)
        with HistoryStore.open(db_path) as old:
            old.append(msg(1))
            old.append(msg(2))
            assert old.schema_version == 1
    with HistoryStore.open(db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [m.message_id for m in store.recent(ROOM, limit=10, now=T0)] == ["m1", "m2"]
    raw = sqlite3.connect(db_path)
    assert raw.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 0
    with pytest.raises(sqlite3.IntegrityError):  # the status CHECK of migration 2
        raw.execute(
            "INSERT INTO files (file_id, room, sender, name, type, size, sha1, time_us, status)"
            " VALUES ('x', 'r', 's', 'n', 't', 1, 'h', 0, 'bogus')"
        )
    raw.close()
