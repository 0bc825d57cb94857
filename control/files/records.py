"""The rows of room files in SQLite (the ``files`` table of migration 2, :mod:`control.store`).

One row per stored file of a room: what the room page lists, what a pull by hash finds
(RFC 5547 §8.4: the selector names the SHA-1), what quotas sum and retention ages. The bytes
are in the spool under ``file_id`` (:mod:`control.files.spool`); the row is the index, the
spool's sidecar its backup (:meth:`control.files.rooms.RoomFiles.reconcile` rebuilds one from
the other after a crash).

Plain values only, as :class:`~control.store.HistoryStore`: the store knows nothing of MSRP.
Calls block briefly (one indexed query or one short transaction, no fsync in WAL/NORMAL) and
may come from the event loop or a disk thread; one lock guards the one connection.
"""

from __future__ import annotations

import datetime as _dt
import enum
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from control.store import from_us, open_database, to_us, transaction

__all__ = ["FileRecords", "FileStatus", "RoomFile"]


class FileStatus(enum.StrEnum):
    """A row's state (the CHECK of migration 2 lists the same values)."""

    STORED = "stored"  # whole, served, listed
    DELETING = "deleting"  # retention is removing it: no longer served
    MISSING = "missing"  # its bytes are gone (found at start-up): never served, kept as a record
    ORPHAN = "orphan"  # bytes found with no room to belong to: kept, never served


@dataclass(frozen=True, slots=True)
class RoomFile:
    """One file of a room, as the room page, conference-info and downloads see it.

    ``name`` is the sender's file name, exactly as given: metadata, never a path (it may hold
    ``/``, ``..``, NUL, any length the SDP carried). ``file_id`` is the server's name for it
    on disk. ``time`` is when the server stored it (UTC).
    """

    file_id: str
    room: str
    sender: str
    name: str
    content_type: str
    size: int
    sha1: str  # lower-case hex
    time: _dt.datetime
    status: FileStatus = FileStatus.STORED


_COLUMNS: Final = "file_id, room, sender, name, type, size, sha1, time_us, status"


def _row(row: tuple[object, ...]) -> RoomFile:
    file_id, room, sender, name, content_type, size, sha1, time_us, status = row
    assert isinstance(size, int) and isinstance(time_us, int)
    return RoomFile(
        file_id=str(file_id),
        room=str(room),
        sender=str(sender),
        name=str(name),
        content_type=str(content_type),
        size=size,
        sha1=str(sha1),
        time=from_us(time_us),
        status=FileStatus(str(status)),
    )


class FileRecords:
    """The ``files`` table: insert, find, list, sum, change status, delete."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._lock = threading.RLock()
        self.path = path

    @classmethod
    def open(cls, path: Path | str, *, synchronous_full: bool = False) -> FileRecords:
        """Open (creating and migrating as needed) the database at ``path``
        (``spool_dir / DATABASE_NAME``, the history's database)."""
        path = Path(path)
        return cls(open_database(path, synchronous_full=synchronous_full), path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, record: RoomFile) -> None:
        """Add a row and commit (raises :class:`sqlite3.Error`, e.g. a second row for the
        same ``file_id``)."""
        with self._lock, transaction(self._db):
            self._db.execute(
                f"INSERT INTO files ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.file_id,
                    record.room,
                    record.sender,
                    record.name,
                    record.content_type,
                    record.size,
                    record.sha1,
                    to_us(record.time),
                    str(record.status),
                ),
            )

    def get(self, file_id: str) -> RoomFile | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE file_id = ?", (file_id,)
            ).fetchone()
        return None if row is None else _row(row)

    def find(self, room: str, sha1_hex: str) -> RoomFile | None:
        """The room's newest stored file with this SHA-1 (hex, either case)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM files WHERE room = ? AND sha1 = ? AND status = ?"
                " ORDER BY time_us DESC, id DESC LIMIT 1",
                (room, sha1_hex.lower(), str(FileStatus.STORED)),
            ).fetchone()
        return None if row is None else _row(row)

    def of_room(
        self, room: str, *, status: FileStatus | None = FileStatus.STORED
    ) -> list[RoomFile]:
        """The room's files (stored ones by default; ``None``: every row), oldest first."""
        sql = f"SELECT {_COLUMNS} FROM files WHERE room = ?"
        args: list[object] = [room]
        if status is not None:
            sql += " AND status = ?"
            args.append(str(status))
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY time_us, id", args).fetchall()
        return [_row(row) for row in rows]

    def all(self) -> list[RoomFile]:
        """Every row of every room and status, oldest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM files ORDER BY time_us, id").fetchall()
        return [_row(row) for row in rows]

    def rooms(self) -> list[str]:
        """Rooms with stored files."""
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT room FROM files WHERE status = ?", (str(FileStatus.STORED),)
            )
            return [str(r[0]) for r in rows]

    def used(self, room: str) -> int:
        """Bytes the room's stored files take (what the room quota counts)."""
        with self._lock:
            row = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM files WHERE room = ? AND status = ?",
                (room, str(FileStatus.STORED)),
            ).fetchone()
        return int(row[0])

    def set_status(self, file_id: str, status: FileStatus) -> None:
        with self._lock, transaction(self._db):
            self._db.execute(
                "UPDATE files SET status = ? WHERE file_id = ?", (str(status), file_id)
            )

    def delete(self, file_id: str) -> None:
        with self._lock, transaction(self._db):
            self._db.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
