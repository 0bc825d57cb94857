"""The room store: chat history (issue 8, item 4) in one SQLite database in the spool.

One file, ``<spool_dir>/chorus.sqlite3`` (:data:`DATABASE_NAME`), opened with the standard
library's :mod:`sqlite3`. Room file metadata (issue 9) lives in the same database, in the
``files`` table of migration 2 (``MIGRATIONS[1]``, :func:`_migrate_1_to_2`); its queries are
:class:`control.files.records.FileRecords`, which opens its own connection with
:func:`open_database` and writes through :func:`transaction`, the same helpers
:class:`HistoryStore` uses.

Why it is built this way:

- **Committed before it returns.** :meth:`HistoryStore.append` runs one transaction and commits
  it before returning, so the conference may answer the last chunk's 200 (RFC 4975 §7.1.2)
  knowing the message is kept. The journal is WAL with ``synchronous=NORMAL``: a committed
  transaction is in the WAL file when ``COMMIT`` returns, so it survives the *process* dying at
  any point (``kill -9``, a crash); only an operating-system crash or power loss may lose the
  last transactions (never corrupt the database), since NORMAL skips the fsync per commit. Pass
  ``synchronous_full=True`` to :meth:`HistoryStore.open` to fsync every commit and be durable
  across power loss too, at the price of one fsync per message.
- **WAL, so readers never wait for the writer**: another connection (a replay, a tool, a test)
  reads a consistent snapshot while appends go on.
- **Versioned migrations.** ``PRAGMA user_version`` is the schema version; :data:`MIGRATIONS`
  ``[n]`` takes version ``n`` to ``n + 1``. At open every missing one runs in order, each in its
  own transaction with the version bump (SQLite keeps ``user_version`` in the database header,
  written by the same transaction), so a crash mid-migration leaves the previous version
  whole. A database newer than this code refuses to open (:class:`StoreVersionError`): an old
  binary must never write through a schema it does not know.
- **Plain values only**: ``str``, ``bytes``, ``datetime``. The store knows nothing of MSRP, CPIM
  parsing or SIP; the conference turns a CPIM message into a :class:`StoredMessage`.
- **Retention** by count and age per room (:class:`Retention`). Every append prunes its own
  room at once (two indexed deletes: by count, and by age measured from the new message's
  arrival time), so a busy room never grows past its bound. A room that stops receiving
  messages keeps its old ones until :meth:`HistoryStore.prune` runs: the application owns a
  timer for that (or calls it at start-up); :meth:`HistoryStore.recent` filters by age anyway,
  so nothing too old is ever replayed.
- **Private messages** (RFC 7701 §5) are stored only when the store was opened with
  ``store_private=True`` (``[conference] store_private``); :meth:`HistoryStore.recent` never
  returns them either way.

Times are stored as integer microseconds since the Unix epoch, UTC: exact, sortable, no time
zone text to parse back. Naive datetimes are refused (a bug in the caller, not input).

The calls block (an append, pruning included, takes about 80 µs in WAL/NORMAL mode: one
short transaction, no fsync); they are meant to be called from the event loop thread
directly, which is the point: the 200 waits for the commit. One store may be used from any
thread (a periodic :meth:`HistoryStore.prune` through ``asyncio.to_thread``, say): its one
connection is guarded by a lock, so calls never interleave inside a transaction. Another
process opens its own store; WAL lets it read while this one writes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "DATABASE_NAME",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "HistoryStore",
    "Retention",
    "StoreError",
    "StoreVersionError",
    "StoredMessage",
    "from_us",
    "open_database",
    "to_us",
    "transaction",
]

DATABASE_NAME: Final = "chorus.sqlite3"
"""The database's file name inside ``[server] spool_dir``."""

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


class StoreError(Exception):
    """The database cannot be used (unreadable, or its schema is not ours)."""


class StoreVersionError(StoreError):
    """The database was written by a newer Chorus: refuse rather than write through it."""

    def __init__(self, found: int, supported: int, path: Path) -> None:
        super().__init__(
            f"{path}: database schema version {found} is newer than this Chorus supports "
            f"({supported}); refusing to open it (upgrade Chorus, or restore a backup)"
        )
        self.found = found
        self.supported = supported


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One chat message as kept: everything needed to send it again as CPIM (RFC 3862).

    ``time`` is the CPIM ``DateTime`` (UTC) as the sender gave it, replayed as such.
    ``received`` is when the server took the message (UTC); retention and ``max_age`` are
    measured on it, so a sender's clock cannot keep a message forever or expire it at once.
    When not given it is ``time``.
    ``headers`` are the other CPIM headers needed to rebuild the message (name, value pairs in
    order, e.g. ``("NS", "imdn <urn:ietf:params:imdn>")``), ``recipients`` the URIs of a
    private message's recipients (RFC 7701 §5), ``None`` for a public one.
    ``seq`` is the store's creation order, set on the messages it returns.
    """

    room: str
    message_id: str
    sender_uri: str
    sender_name: str | None
    time: _dt.datetime
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    recipients: tuple[str, ...] | None = None
    received: _dt.datetime | None = None
    seq: int | None = None

    @property
    def is_private(self) -> bool:
        return self.recipients is not None


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history a room keeps: at most ``keep`` messages, none older than ``max_age``
    seconds (``None``: no age limit)."""

    keep: int = 1000
    max_age: float | None = None


def _to_us(when: _dt.datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the store takes UTC-aware times only")
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_us(us: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(microseconds=us)


to_us = _to_us
"""A UTC-aware datetime as the integer microseconds every table stores (naive: ValueError)."""
from_us = _from_us


# --- migrations ------------------------------------------------------------------------------


def _migrate_0_to_1(db: sqlite3.Connection) -> None:
    """Chat history (issue 8, item 4).

    ``seq`` is the creation order (AUTOINCREMENT: never reused, even after pruning, so it stays
    a true order). The two indexes serve the three queries: the newest N of a room, and a
    room's messages older than an age.
    """
    db.execute(
        """
        CREATE TABLE chat_messages (
            seq          INTEGER PRIMARY KEY AUTOINCREMENT,
            room         TEXT    NOT NULL,
            message_id   TEXT    NOT NULL,
            sender_uri   TEXT    NOT NULL,
            sender_name  TEXT,
            sent_us      INTEGER NOT NULL,
            received_us  INTEGER NOT NULL,
            content_type TEXT    NOT NULL,
            body         BLOB    NOT NULL,
            headers      TEXT    NOT NULL DEFAULT '[]',
            recipients   TEXT
        )
        """
    )
    db.execute("CREATE INDEX chat_messages_room_seq ON chat_messages (room, seq)")
    db.execute("CREATE INDEX chat_messages_room_received ON chat_messages (room, received_us)")


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Room files (issue 9, item 1): one row per stored file of a room.

    ``file_id`` is the file's name on disk (``<sha1>.<token>`` in ``<spool_dir>/rooms/files``,
    chosen by the server); ``name`` is the sender's file name, metadata only, never a path.
    ``status`` is ``stored`` (served), ``deleting`` (retention is removing it), ``missing``
    (the row survived its bytes: never served, kept as a record) or ``orphan`` (bytes found
    on disk with no room: kept, never served). ``time_us`` is when the server stored it
    (microseconds since the epoch, UTC), which retention by age measures. The indexes serve
    the pull (a room's newest file with a hash), the listing and retention (a room's files
    by age), and quota sums (the same index).
    """
    db.execute(
        """
        CREATE TABLE files (
            id       INTEGER PRIMARY KEY AUTOINCREMENT,
            file_id  TEXT    NOT NULL UNIQUE,
            room     TEXT    NOT NULL,
            sender   TEXT    NOT NULL,
            name     TEXT    NOT NULL,
            type     TEXT    NOT NULL,
            size     INTEGER NOT NULL CHECK (size >= 0),
            sha1     TEXT    NOT NULL,
            time_us  INTEGER NOT NULL,
            status   TEXT    NOT NULL
                CHECK (status IN ('stored', 'deleting', 'missing', 'orphan'))
        )
        """
    )
    db.execute("CREATE INDEX files_room_sha1 ON files (room, sha1)")
    db.execute("CREATE INDEX files_room_time ON files (room, time_us)")


MIGRATIONS: Final[Sequence[Callable[[sqlite3.Connection], None]]] = (
    _migrate_0_to_1,
    _migrate_1_to_2,
)
"""``MIGRATIONS[n]`` takes schema version ``n`` to ``n + 1``; append, never edit."""

SCHEMA_VERSION: Final = len(MIGRATIONS)


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken with the write lock up front (``BEGIN IMMEDIATE``, so it
    never fails half-way on a lock upgrade): committed on success, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if db.in_transaction:
        db.execute("COMMIT")


def _use_wal(db: sqlite3.Connection, *, patience: float = 5.0) -> str:
    """Switch to WAL (kept in the file: later opens find it set) and return the mode.

    Changing the journal mode needs the database to itself, and SQLite answers BUSY at once,
    without its busy handler, when another connection is opening it at the same moment; so
    the switch is retried for up to ``patience`` seconds.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StoreVersionError(found, SCHEMA_VERSION, path)
    for version in range(found, SCHEMA_VERSION):
        with transaction(db):
            # Re-read under the write lock: another process may have migrated meanwhile.
            current = int(db.execute("PRAGMA user_version").fetchone()[0])
            if current > SCHEMA_VERSION:
                raise StoreVersionError(current, SCHEMA_VERSION, path)
            if current > version:
                continue
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")


def open_database(path: Path, *, synchronous_full: bool = False) -> sqlite3.Connection:
    """Open (creating and migrating as needed) the database at ``path``: WAL, autocommit mode
    (transactions are explicit, :func:`transaction`), usable from any thread (the caller
    guards it with a lock). Raises :class:`StoreVersionError` for a database newer than this
    code and :class:`StoreError` for a file that is not a usable database."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot open the database: {exc}") from exc
    try:
        # A busy_timeout lets two processes (or two connections) migrating at once take turns.
        db.execute("PRAGMA busy_timeout = 5000")
        mode = _use_wal(db)
        if mode != "wal":
            raise StoreError(f"{path}: the database cannot use WAL (journal_mode={mode})")
        db.execute(f"PRAGMA synchronous = {'FULL' if synchronous_full else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys = ON")
        _migrate(db, path)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise StoreError(f"{path}: not a usable database: {exc}") from exc
    except BaseException:
        db.close()
        raise
    return db


# --- the store -------------------------------------------------------------------------------

_COLUMNS: Final = (
    "seq, room, message_id, sender_uri, sender_name, sent_us, received_us, content_type, "
    "body, headers, recipients"
)


def _row_to_message(row: tuple[object, ...]) -> StoredMessage:
    (seq, room, message_id, sender_uri, sender_name, sent_us, received_us) = row[:7]
    content_type, body, headers, recipients = row[7:]
    assert isinstance(seq, int) and isinstance(sent_us, int) and isinstance(received_us, int)
    assert isinstance(headers, str) and isinstance(body, bytes)
    return StoredMessage(
        room=str(room),
        message_id=str(message_id),
        sender_uri=str(sender_uri),
        sender_name=None if sender_name is None else str(sender_name),
        time=_from_us(sent_us),
        content_type=str(content_type),
        body=body,
        headers=tuple((str(n), str(v)) for n, v in json.loads(headers)),
        recipients=None if recipients is None else tuple(json.loads(str(recipients))),
        received=_from_us(received_us),
        seq=seq,
    )


class HistoryStore:
    """Chat history of every room, in one SQLite database (see the module docstring)."""

    def __init__(
        self,
        db: sqlite3.Connection,
        path: Path,
        *,
        retention: Retention,
        store_private: bool,
    ) -> None:
        self._db = db
        self._lock = threading.RLock()  # one connection: calls from two threads take turns
        self.path = path
        self.retention = retention
        self.store_private = store_private

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        retention: Retention | None = None,
        store_private: bool = False,
        synchronous_full: bool = False,
    ) -> HistoryStore:
        """Open (creating and migrating as needed) the database at ``path``.

        ``path`` is the database file (``spool_dir / DATABASE_NAME``); its directory is created.
        Raises :class:`StoreVersionError` for a database newer than this code and
        :class:`StoreError` for a file that is not a usable database.
        """
        path = Path(path)
        db = open_database(path, synchronous_full=synchronous_full)
        return cls(db, path, retention=retention or Retention(), store_private=store_private)

    def close(self) -> None:
        """Close the database (a WAL checkpoint runs when the last connection closes)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def append(self, message: StoredMessage) -> int | None:
        """Store ``message`` and commit; return its ``seq`` (creation order).

        Returns ``None`` without storing a private message when ``store_private`` is off, so
        the caller may hand every message over. The room is pruned to its :class:`Retention`
        in the same transaction (by count; by age from this message's ``received`` time).
        """
        if message.is_private and not self.store_private:
            return None
        sent_us = _to_us(message.time)
        received_us = sent_us if message.received is None else _to_us(message.received)
        headers = json.dumps([[n, v] for n, v in message.headers], ensure_ascii=False)
        recipients = None if message.recipients is None else json.dumps(list(message.recipients))
        with self._lock, transaction(self._db):
            cursor = self._db.execute(
                "INSERT INTO chat_messages (room, message_id, sender_uri, sender_name, sent_us,"
                " received_us, content_type, body, headers, recipients)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    message.room,
                    message.message_id,
                    message.sender_uri,
                    message.sender_name,
                    sent_us,
                    received_us,
                    message.content_type,
                    bytes(message.body),
                    headers,
                    recipients,
                ),
            )
            seq = cursor.lastrowid
            assert seq is not None
            self._prune_room(
                message.room,
                keep=self.retention.keep,
                max_age=self.retention.max_age,
                now_us=received_us,
            )
        return seq

    def recent(
        self,
        room: str,
        *,
        limit: int,
        max_age: float | None = None,
        now: _dt.datetime,
    ) -> list[StoredMessage]:
        """The room's last ``limit`` public messages, oldest first, none received more than
        ``max_age`` seconds before ``now``. Private messages are never returned."""
        if limit <= 0:
            return []
        sql = f"SELECT {_COLUMNS} FROM chat_messages WHERE room = ? AND recipients IS NULL"
        args: list[object] = [room]
        if max_age is not None:
            sql += " AND received_us >= ?"
            args.append(_to_us(now) - int(max_age * 1_000_000))
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_row_to_message(row) for row in reversed(rows)]

    def rooms(self) -> list[str]:
        """Every room with stored messages."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT room FROM chat_messages")]

    def count(self, room: str | None = None) -> int:
        """How many messages are stored (public and private), in ``room`` or in all rooms."""
        sql = "SELECT COUNT(*) FROM chat_messages"
        args: tuple[str, ...] = ()
        if room is not None:
            sql, args = sql + " WHERE room = ?", (room,)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def prune(
        self,
        room: str | None,
        *,
        keep: int,
        max_age: float | None,
        now: _dt.datetime,
    ) -> int:
        """Apply retention to ``room`` (``None``: every room): keep its newest ``keep``
        messages, drop those received more than ``max_age`` seconds before ``now``.
        Returns how many were deleted. One transaction."""
        now_us = _to_us(now)
        with self._lock, transaction(self._db):
            targets = self.rooms() if room is None else [room]
            deleted = sum(
                self._prune_room(r, keep=keep, max_age=max_age, now_us=now_us) for r in targets
            )
        return deleted

    def _prune_room(self, room: str, *, keep: int, max_age: float | None, now_us: int) -> int:
        db = self._db
        deleted = 0
        # The seq of the keep-th newest message: everything below it goes (index on room, seq).
        row = db.execute(
            "SELECT seq FROM chat_messages WHERE room = ? ORDER BY seq DESC LIMIT 1 OFFSET ?",
            (room, max(keep, 0)),
        ).fetchone()
        if row is not None:
            deleted += db.execute(
                "DELETE FROM chat_messages WHERE room = ? AND seq <= ?", (room, row[0])
            ).rowcount
        if max_age is not None:
            deleted += db.execute(
                "DELETE FROM chat_messages WHERE room = ? AND received_us < ?",
                (room, now_us - int(max_age * 1_000_000)),
            ).rowcount
        return deleted
