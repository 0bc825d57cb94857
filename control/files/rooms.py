"""Files in rooms (issue 9, item 1): one store per node, each room seeing only its own files.

A participant pushes a file into a room (RFC 5547 §8: a ``sendonly`` file-transfer m-line);
anyone in that room later pulls it by hash (§8.4: a ``recvonly`` offer whose selector names the
SHA-1). :class:`RoomFiles` keeps them:

- **Bytes** in ``<spool_dir>/rooms/files`` (a :class:`~control.files.spool.FileSpool` of its own,
  so echo's store, which indexes every sidecar of ``<spool_dir>/files``, never sees a room's
  file), named ``<sha1>.<token>`` by the server, written to a temporary file, fsync'ed, renamed
  into place (the spool's rules). The room is metadata, in the sidecar and the row: never part
  of a path, and neither is the sender's file name (``../../etc/passwd``, NUL, 10 KB names are
  stored and returned exactly as given).
- **Rows** in the node's SQLite database (the ``files`` table of migration 2,
  :class:`~control.files.records.FileRecords`): room, sender, name, type, size, sha1, time,
  status. A pull finds the room's newest ``stored`` row with that hash: another room's file is
  not found.
- **The sender's 200** on the last chunk (RFC 4975 §7.1.2) waits for both: the stream layer's
  :meth:`~control.streams.filestore.FileStore.settle` runs :meth:`_RoomIndex.keep` in the disk
  thread, which commits the file (rename) and then inserts its row; a failed insert deletes the
  file again, so the sender never hears 200 for a file the room does not list.
- **Quotas.** Per file (``[files] max_file_bytes``): an offer announcing more is refused (port
  0), a transfer growing past it is stopped (MSRP 413, the spool's cap). Per room
  (``[files] room_quota_bytes``, the sum of the room's stored files): an offer that would not
  fit is refused (port 0) and, since an offer's size may be absent or two uploads may race, the
  check is made again, binding, under the room's lock just before the rename; a refused file
  is answered **MSRP 413** with the comment ``room quota exceeded (insufficient storage)`` and
  its temporary file deleted. Why 413 and not 507: MSRP's status codes (RFC 4975 §10, the
  registry of §15.2) have no "insufficient storage"; 413 is the one that tells the sender to
  stop sending this message without blaming its content (§7.3), which is what a full room
  means. The log line names the quota, the room, the size and the use ("room quota").
  A SIP-level refusal (a lone file m-line) is the application's: :meth:`RoomFiles.refusal`
  says why.
- **Retention** (:meth:`RoomFiles.expire`, run by the application on a timer): files older
  than ``[files] retain_max_age`` go, then each room's oldest files until its total is at most
  ``[files] retain_room_bytes``. Deleting marks the row ``deleting`` (no longer served),
  removes the sidecar and the bytes, then the row. A puller already sending keeps its open
  descriptor (POSIX): the bytes it reads stay whole.
- **When a room ends** its files stay (``[files] after_room_ends = "keep"``, the default)
  or go (``"delete"``): :meth:`RoomFiles.room_ended`.
- **Start-up deletes no completed file** (:meth:`RoomFiles.reconcile`): crash temporaries go
  (the spool's :meth:`~control.files.spool.FileSpool.prepare`); a file on disk with no row gets
  its row back from its sidecar (room and all), or, with no room known, an ``orphan`` row (kept,
  never served); a file that lost only its sidecar gets it back from its row; a row whose
  file is gone becomes ``missing`` (kept as a record, never served);
  a retention deletion the crash interrupted is undone when the bytes are still there (the next
  :meth:`RoomFiles.expire` decides again), and its row dropped when they are not.

Readers: :class:`FileSource` (``lookup``, ``list``) is what the web server's downloads use
(and :class:`control.web.views.FileSource`'s ``room_files``/``room_file``, the same reads);
:meth:`RoomFiles.store` is what a room's file streams use
(``MsrpFileStream.open(transport, room_files.store(room), offer, index, sender=...)``).
"""

from __future__ import annotations

import builtins
import collections
import datetime as _dt
import enum
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from control.config import FilesConfig
from control.msrp.fileselector import FileSelectorError, parse_file_transfer
from control.msrp.session import RandomSource
from control.sip import sdp
from control.store import DATABASE_NAME
from control.streams.filestore import FileStore
from control.web.views import FileEntry

from .records import FileRecords, FileStatus, RoomFile
from .spool import FileSpool, SpoolError, StoredFile

__all__ = [
    "ROOM_FILES_DIR",
    "AfterRoomEnds",
    "FileRefusal",
    "FileSource",
    "FilesPolicy",
    "QuotaExceeded",
    "Reconciled",
    "RoomFiles",
]

log = logging.getLogger("chorus.files.rooms")

ROOM_FILES_DIR = "rooms"
"""Room files live in ``<spool_dir>/rooms/files``, apart from echo's ``<spool_dir>/files``."""

Clock = Callable[[], _dt.datetime]


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


class AfterRoomEnds(enum.StrEnum):
    """``[files] after_room_ends``: what happens to a room's files when its last participant
    leaves."""

    KEEP = "keep"  # a later room of the same URI lists and serves them again
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class FilesPolicy:
    """Limits and retention of room files (the ``[files]`` keys). ``None``: no such limit."""

    max_file_bytes: int = 100 * 1024 * 1024
    room_quota_bytes: int | None = 1024 * 1024 * 1024
    retain_max_age: float | None = None  # seconds
    retain_room_bytes: int | None = None
    after_room_ends: AfterRoomEnds = AfterRoomEnds.KEEP
    push_to_participants: bool = False  # for the room: offer each new file to everyone
    push_concurrency: int = 4  # pushes of one room at once
    push_timeout: float = 600.0  # seconds one push may take

    @classmethod
    def from_config(cls, config: FilesConfig) -> FilesPolicy:
        """The ``[files]`` section, 0 read as "no limit"."""
        return cls(
            max_file_bytes=config.max_file_bytes,
            room_quota_bytes=config.room_quota_bytes or None,
            retain_max_age=config.retain_max_age or None,
            retain_room_bytes=config.retain_room_bytes or None,
            after_room_ends=AfterRoomEnds(config.after_room_ends),
            push_to_participants=config.push_to_participants,
            push_concurrency=config.push_concurrency,
            push_timeout=config.push_timeout,
        )


class QuotaExceeded(SpoolError):
    """A room's quota refuses a file: MSRP 413 (see the module docstring for why 413)."""

    def __init__(self, reason: str) -> None:
        super().__init__(413, reason)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What :meth:`RoomFiles.reconcile` found and did at start-up (nothing completed deleted)."""

    temporaries_removed: int = 0
    rows_recovered: int = 0  # a file without its row: row rebuilt from the sidecar
    orphans: int = 0  # a file with no room known: kept, row status ``orphan``
    missing: int = 0  # a row without its file: status ``missing``
    deletions_undone: int = 0  # retention interrupted, bytes still there: ``stored`` again


@dataclass(frozen=True, slots=True)
class FileRefusal:
    """Why a file m-line was refused (port 0), and the SIP final response for an INVITE that
    offered nothing else: 404 for a pull of a file the room does not hold (issue 9), 413
    for a push too large for the file limit or the room's quota (no SIP status says
    "insufficient storage"; ``reason`` is the reason phrase), 488 for an m-line that is no
    usable file transfer (RFC 5547 §10; RFC 3261 §21.4.26)."""

    sip_status: int
    reason: str


class FileSource(Protocol):
    """What the web server reads room files through (downloads, the room page)."""

    def lookup(self, room: str, sha1: str) -> tuple[Path, RoomFile] | None:
        """The room's file with this SHA-1 (hex): its path on disk and its metadata, or
        ``None`` (no such file in *that* room)."""
        ...

    def list(self, room: str) -> builtins.list[RoomFile]:
        """The room's stored files, oldest first."""
        ...


def _parse_time(date: str) -> _dt.datetime:
    try:
        when = _dt.datetime.fromisoformat(date)
    except ValueError:
        return _utc_now()
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.UTC)


class _RoomIndex:
    """One room's :class:`~control.streams.filestore.FileIndex`: rows of that room only."""

    def __init__(self, files: RoomFiles, room: str) -> None:
        self.files = files
        self.room = room

    def keep(self, commit: Callable[[], StoredFile]) -> StoredFile:
        """Disk thread: the file (quota checked by :meth:`admit` inside ``commit``) and then its
        row, under the room's lock so two uploads cannot both fit the last bytes of a quota."""
        files = self.files
        with files._room_lock(self.room):
            stored = commit()
            try:
                files.records.insert(files._record(stored, self.room))
            except sqlite3.Error as exc:
                files.spool.delete(stored)
                log.error("room %s: cannot record %s: %s", self.room, stored.file_id, exc)
                raise SpoolError(500, f"cannot record the file: {exc}") from exc
        return stored

    def admit(self, stored: StoredFile) -> None:
        """Called by the spool before the rename (the room's lock is held)."""
        refused = self.files._over_quota(self.room, stored.size)
        if refused is not None:
            log.warning(
                "room %s: file %r (%d bytes, sha1 %s) from %s refused: %s",
                self.room,
                stored.name[:200],
                stored.size,
                stored.sha1,
                stored.sender,
                refused,
            )
            raise QuotaExceeded("room quota exceeded (insufficient storage)")

    def find(self, sha1_hex: str) -> StoredFile | None:
        record = self.files.records.find(self.room, sha1_hex)
        stored = None if record is None else self.files._stored(record)
        return stored if stored is not None and stored.path.is_file() else None

    def refusal(self, size: int) -> str | None:
        return self.files.refusal(self.room, size)


class RoomFiles:
    """Every room's files on this node (see the module docstring). Build it with :meth:`open`,
    which reconciles the spool and the rows before anything is served."""

    def __init__(
        self,
        spool: FileSpool,
        records: FileRecords,
        *,
        policy: FilesPolicy,
        chunk_size: int = 256 * 1024,
        clock: Clock = _utc_now,
        random: RandomSource = os.urandom,
    ) -> None:
        self.spool = spool
        self.records = records
        self.policy = policy
        self.chunk_size = chunk_size
        self.clock = clock
        self.random = random
        self._stores: dict[str, FileStore] = {}
        self._locks: collections.defaultdict[str, threading.Lock] = collections.defaultdict(
            threading.Lock
        )
        self._locks_guard = threading.Lock()

    @classmethod
    def open(
        cls,
        spool_dir: Path,
        *,
        policy: FilesPolicy | None = None,
        database: Path | None = None,
        chunk_size: int = 256 * 1024,
        clock: Clock = _utc_now,
        random: RandomSource = os.urandom,
        synchronous_full: bool = False,
    ) -> RoomFiles:
        """Open the node's room files: the spool ``<spool_dir>/rooms`` and the rows in
        ``database`` (default ``<spool_dir>/chorus.sqlite3``, shared with the chat history),
        then :meth:`reconcile`. Start-up work: blocking, before the server takes calls."""
        policy = policy or FilesPolicy()
        spool = FileSpool(
            spool_dir / ROOM_FILES_DIR, max_file_bytes=policy.max_file_bytes, random=random
        )
        records = FileRecords.open(
            database or spool_dir / DATABASE_NAME, synchronous_full=synchronous_full
        )
        files = cls(
            spool, records, policy=policy, chunk_size=chunk_size, clock=clock, random=random
        )
        try:
            files.reconcile()
        except BaseException:
            records.close()
            raise
        return files

    def close(self) -> None:
        self.records.close()

    # ---- what streams use ------------------------------------------------------------------

    def store(self, room: str) -> FileStore:
        """The room's store, to pass to ``MsrpFileStream.open``: pushes land in this room, pulls
        find only this room's files. One object per room while the room lives, so its
        ``settled()`` waits for every push of the room."""
        store = self._stores.get(room)
        if store is None:
            index = _RoomIndex(self, room)
            store = FileStore(
                self.spool.scoped(room, admit=index.admit),
                chunk_size=self.chunk_size,
                clock=self.clock,
                random=self.random,
                index=index,
            )
            self._stores[room] = store
        return store

    def refusal(self, room: str, size: int) -> str | None:
        """Why a push of ``size`` bytes into ``room`` is refused now, or ``None``; logged."""
        reason: str | None
        if size > self.policy.max_file_bytes:
            reason = f"file too large: {size} bytes, per-file limit {self.policy.max_file_bytes}"
        else:
            reason = self._over_quota(room, size)
        if reason is not None:
            log.warning("room %s: file push of %d bytes refused: %s", room, size, reason)
        return reason

    def explain(self, room: str, offer: sdp.SessionDescription, index: int) -> FileRefusal:
        """After ``MsrpFileStream.open`` refused m-line ``index`` (``None``): why, and what
        to answer an INVITE whose only stream it was (see :class:`FileRefusal`)."""
        media = offer.media[index]
        try:
            transfer = parse_file_transfer(media)
        except FileSelectorError as exc:
            return FileRefusal(488, f"Bad File Selector: {exc.reason}")
        if transfer is None:
            return FileRefusal(488, "No File Selector")
        selector = transfer.selector
        match offer.direction_of(media):
            case sdp.Direction.RECVONLY:
                sha1 = selector.sha1_hex
                if sha1 is None or self.store(room).find(sha1) is None:
                    return FileRefusal(404, "File Not Found")
                return FileRefusal(404, "File Not Found (the selector does not fit it)")
            case sdp.Direction.SENDONLY:
                size = selector.size
                if size is not None and size > self.policy.max_file_bytes:
                    return FileRefusal(413, "File Too Large")
                if size is not None and self._over_quota(room, size) is not None:
                    return FileRefusal(413, "Room Storage Full")
                return FileRefusal(488, "File Transfer Not Acceptable")
        return FileRefusal(488, "File Transfer Direction Not Acceptable")

    def _over_quota(self, room: str, size: int) -> str | None:
        quota = self.policy.room_quota_bytes
        if quota is None:
            return None
        used = self.records.used(room)
        if used + size <= quota:
            return None
        return f"room quota exceeded (insufficient storage): {used} of {quota} bytes used"

    # ---- what the web server uses (FileSource) -------------------------------------------

    def lookup(self, room: str, sha1: str) -> tuple[Path, RoomFile] | None:
        record = self.records.find(room, sha1)
        if record is None:
            return None
        path = self.spool.files_dir / record.file_id
        return (path, record) if path.is_file() else None  # gone by hand: not served

    def list(self, room: str) -> builtins.list[RoomFile]:
        return self.records.of_room(room)

    # control/web/views.py's FileSource (helper G's names for the same two reads)

    def room_files(self, room: str) -> builtins.list[FileEntry]:
        return [self._entry(record) for record in self.records.of_room(room)]

    def room_file(self, room: str, sha1: str) -> FileEntry | None:
        record = self.records.find(room, sha1)
        return None if record is None else self._entry(record)

    def _entry(self, record: RoomFile) -> FileEntry:
        return FileEntry(
            sha1=record.sha1,
            name=record.name,
            content_type=record.content_type,
            size=record.size,
            sender=record.sender,
            date=record.time.isoformat(),
            path=self.spool.files_dir / record.file_id,
        )

    # ---- policy ----------------------------------------------------------------------------

    def expire(self, now: _dt.datetime | None = None) -> int:
        """Retention (blocking; call it through ``to_disk`` on a timer): every room's files
        older than ``retain_max_age``, then its oldest until its total is at most
        ``retain_room_bytes``. Returns how many files were deleted."""
        now = now or self.clock()
        policy = self.policy
        deleted = 0
        for room in self.records.rooms():
            kept = self.records.of_room(room)  # oldest first
            doomed: builtins.list[tuple[RoomFile, str]] = []
            if policy.retain_max_age is not None:
                cutoff = now - _dt.timedelta(seconds=policy.retain_max_age)
                doomed += [(r, "older than retain_max_age") for r in kept if r.time < cutoff]
                kept = [r for r in kept if r.time >= cutoff]
            if policy.retain_room_bytes is not None:
                total = sum(r.size for r in kept)
                for record in kept:
                    if total <= policy.retain_room_bytes:
                        break
                    doomed.append((record, "room over retain_room_bytes"))
                    total -= record.size
            for record, why in doomed:
                self._delete(record, why)
                deleted += 1
        return deleted

    def room_ended(self, room: str) -> int:
        """The room's last participant left: forget its store and, when the policy says
        ``delete``, delete its files (blocking; through ``to_disk``). Call it after the room's
        file streams are closed. Returns how many files were deleted."""
        self._stores.pop(room, None)
        if self.policy.after_room_ends is AfterRoomEnds.KEEP:
            return 0
        records = self.records.of_room(room)
        for record in records:
            self._delete(record, "the room ended")
        return len(records)

    def _delete(self, record: RoomFile, why: str) -> None:
        with self._room_lock(record.room):
            self.records.set_status(record.file_id, FileStatus.DELETING)  # no longer served
            self.spool.delete(self._stored(record))
            self.records.delete(record.file_id)
        log.info(
            "room %s: deleted %s (%d bytes): %s", record.room, record.file_id, record.size, why
        )

    def reconcile(self) -> Reconciled:
        """Start-up: make the spool and the rows agree, deleting no completed file (see the
        module docstring for each case). Blocking."""
        removed = self.spool.prepare()
        on_disk = {stored.file_id: stored for stored in self.spool.files()}
        recovered = orphans = missing = undone = 0
        for record in self.records.all():
            present = record.file_id in on_disk
            match record.status:
                case FileStatus.DELETING if present:
                    self.records.set_status(record.file_id, FileStatus.STORED)
                    undone += 1
                    log.warning("room files: kept %s (its deletion was cut off)", record.file_id)
                case FileStatus.DELETING:
                    self.records.delete(record.file_id)
                case FileStatus.MISSING if present:
                    self.records.set_status(record.file_id, FileStatus.STORED)
                    log.warning("room files: %s is back on disk", record.file_id)
                case FileStatus.STORED | FileStatus.ORPHAN if not present:
                    self.records.set_status(record.file_id, FileStatus.MISSING)
                    missing += 1
                    log.error(
                        "room %s: %s (%r) has no bytes on disk; not served",
                        record.room,
                        record.file_id,
                        record.name[:200],
                    )
            found = on_disk.pop(record.file_id, None)
            if found is not None and found.room is None and record.room:
                # prepare() gave it a minimal sidecar (its own was lost): the row knows better.
                self.spool.write_sidecar(self._stored(record))
        for stored in on_disk.values():  # files with no row
            room = stored.room
            status = FileStatus.STORED if room else FileStatus.ORPHAN
            self.records.insert(self._record(stored, room or "", status))
            if room:
                recovered += 1
                log.warning("room %s: recovered the record of %s", room, stored.file_id)
            else:
                orphans += 1
                log.warning("room files: %s belongs to no room; kept, not served", stored.file_id)
        return Reconciled(removed, recovered, orphans, missing, undone)

    # ---- helpers ---------------------------------------------------------------------------

    def _room_lock(self, room: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks[room]

    def _record(
        self, stored: StoredFile, room: str, status: FileStatus = FileStatus.STORED
    ) -> RoomFile:
        return RoomFile(
            file_id=stored.file_id,
            room=room,
            sender=stored.sender,
            name=stored.name,
            content_type=stored.content_type,
            size=stored.size,
            sha1=stored.sha1,
            time=_parse_time(stored.date),
            status=status,
        )

    def _stored(self, record: RoomFile) -> StoredFile:
        return StoredFile(
            file_id=record.file_id,
            name=record.name,
            content_type=record.content_type,
            size=record.size,
            sha1=record.sha1,
            date=record.time.isoformat(),
            sender=record.sender,
            path=self.spool.files_dir / record.file_id,
            room=record.room,
        )
