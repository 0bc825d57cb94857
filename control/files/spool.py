"""The file spool: where transferred files are written, atomically, under names we choose.

Layout under ``[server] spool_dir``::

    files/<sha1>.<token>           the file's bytes (no extension, nothing from the peer)
    files/<sha1>.<token>.json      its metadata: name, type, size, sha1, date, sender
    files/.upload-<token>.part     a transfer in progress

Why each rule:

- **Server-chosen names.** The name a peer puts in ``a=file-selector`` (RFC 5547 §6) is only
  metadata; as a path it could climb out of the spool (``../../x``), collide, or be a device
  name. Stored files are named by their SHA-1 and a random token, so a pull that names the
  hash (RFC 5547 §8.4, §9.2) finds them with no index beyond the directory itself.
- **Atomic, metadata first.** Bytes go to a temporary file in the same directory; when the
  transfer is complete and its hash checks out, the file is fsync'ed, its metadata written
  beside it (temporary, fsync, rename), and only then is the file itself renamed into place
  and the directory fsync'ed. The rename of the data file is the one step that makes a file
  exist, and its sidecar is already there: a reader sees a whole file with its metadata or
  nothing. A crash (``kill -9``, power loss) leaves at most ``.part`` and ``.tmp`` files and a
  sidecar whose data file never arrived, which :meth:`FileSpool.prepare` removes at start-up.
- **Completed files are never deleted at start-up.** A data file in place is a verified file
  (it is named by the SHA-1 it was checked against). Should one lack its sidecar (written by
  an older version, or restored by hand), :meth:`FileSpool.prepare` rehashes it and, when the
  name holds, writes a sidecar for it, so no file on disk is invisible; one whose bytes do not
  match its name is left alone and logged.
- **Size-capped.** ``max_file_bytes`` bounds every upload; writing past it fails.
- **Nothing left behind.** A failed transfer's temporary file is deleted (:meth:`Upload.discard`).
- **Scoped views.** Room files share one directory (``<spool_dir>/rooms/files``), the room
  being metadata (in the sidecar, and in SQLite: :mod:`control.files.rooms`), never a path.
  :meth:`FileSpool.scoped` gives a view that stamps its room into each upload's sidecar and
  asks an ``admit`` check (a room quota) before the rename, so a refused file never exists.

The methods here block (they are plain file I/O); the asyncio side calls them through the one
seam :func:`to_disk`, which runs them in a worker thread, so the event loop never waits on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, ParamSpec, TypeVar

__all__ = ["FileMeta", "FileSpool", "SpoolError", "StoredFile", "Upload", "to_disk"]

log = logging.getLogger("chorus.spool")

RandomSource = Callable[[int], bytes]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_SHA1_HEX = re.compile(r"[0-9a-f]{40}\Z")
_DATA_NAME = re.compile(r"([0-9a-f]{40})\.([0-9a-f]{16})\Z")
PART_PREFIX = ".upload-"
PART_SUFFIX = ".part"
META_SUFFIX = ".json"


async def to_disk(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """The one seam where blocking disk work leaves the event loop (STYLE.md §5)."""
    return await asyncio.to_thread(func, *args, **kwargs)


class SpoolError(Exception):
    """A spool operation refused; ``status`` is the MSRP status for the transfer (413 past the
    size cap, 500 for a disk failure)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the transfer told us about a file, kept beside it."""

    name: str
    content_type: str
    sender: str
    date: str  # ISO 8601, UTC, when it was received


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file in the spool. ``file_id`` is its server-chosen name (``<sha1>.<token>``)."""

    file_id: str
    name: str
    content_type: str
    size: int
    sha1: str  # lower-case hex
    date: str
    sender: str
    path: Path
    room: str | None = None  # the room it was shared in (``None``: echo's spool, or unknown)

    @property
    def sha1_bytes(self) -> bytes:
        return bytes.fromhex(self.sha1)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Upload:
    """One incoming file: a temporary file in the spool, written at offsets.

    It is a :class:`~control.msrp.filetransfer.FileSink`. Either :meth:`commit` (the transfer
    checked out) or :meth:`discard` (it did not) ends it; both are idempotent about the
    temporary file, which never outlives the upload.
    """

    def __init__(self, spool: FileSpool, path: Path, fd: int, token: str) -> None:
        self.spool = spool
        self.path = path
        self.token = token
        self._fd: int | None = fd
        self.size = 0
        self.done = False
        # The disk thread writes while the event loop may discard (a BYE): never close the
        # descriptor under a write in flight, whose number the kernel could hand to another file.
        self._lock = threading.Lock()

    def write_at(self, offset: int, data: bytes) -> None:
        with self._lock:
            self._write_at(offset, data)

    def _write_at(self, offset: int, data: bytes) -> None:
        if self._fd is None:
            raise SpoolError(500, "upload already finished")
        end = offset + len(data)
        if offset < 0 or end > self.spool.max_file_bytes:
            raise SpoolError(413, f"over the {self.spool.max_file_bytes}-byte file limit")
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written
        self.size = max(self.size, end)

    def read_at(self, offset: int, size: int) -> bytes:
        with self._lock:
            if self._fd is None:
                raise SpoolError(500, "upload already finished")
            return os.pread(self._fd, size, offset)

    def commit(self, meta: FileMeta, sha1_hex: str) -> StoredFile:
        """Make the upload a stored file: fsync, write its sidecar, rename it into place.

        ``sha1_hex`` is the verified hash (the caller checked it: the bytes were hashed as
        they arrived). On any failure the temporary file is removed and :class:`SpoolError`
        raised.
        """
        with self._lock:
            return self._commit(meta, sha1_hex)

    def _commit(self, meta: FileMeta, sha1_hex: str) -> StoredFile:
        if self._fd is None or self.done:
            raise SpoolError(500, "upload already finished")
        if not _SHA1_HEX.match(sha1_hex):
            raise SpoolError(500, "bad sha1")
        file_id = f"{sha1_hex}.{self.token}"
        final = self.spool.files_dir / file_id
        stored = StoredFile(
            file_id=file_id,
            name=meta.name,
            content_type=meta.content_type,
            size=self.size,
            sha1=sha1_hex,
            date=meta.date,
            sender=meta.sender,
            path=final,
            room=self.spool.room,
        )
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            if self.spool.admit is not None:
                self.spool.admit(stored)  # may refuse (SpoolError): then nothing is kept
            self.spool._write_meta(stored)  # the sidecar first: see the module doc
            os.rename(self.path, final)
            _fsync_dir(self.spool.files_dir)
        except OSError as exc:
            self._discard()
            with contextlib.suppress(OSError):
                self.spool._meta_path(file_id).unlink()
            raise SpoolError(500, f"cannot store the file: {exc}") from exc
        except SpoolError:
            self._discard()
            raise
        self.done = True
        return stored

    def discard(self) -> None:
        """Forget the upload and delete its temporary file (after a write in flight)."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        self.done = True
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class FileSpool:
    """The directory of stored files (see the module doc for the layout and its reasons).

    ``max_file_bytes`` is the cap on one file; ``random`` names uploads (injected for tests).
    ``room`` and ``admit`` are set on a view made by :meth:`scoped`.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_file_bytes: int = 100 * 1024 * 1024,
        random: RandomSource = os.urandom,
        room: str | None = None,
        admit: Callable[[StoredFile], None] | None = None,
    ) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.max_file_bytes = max_file_bytes
        self._random = random
        self.room = room
        self.admit = admit

    def scoped(
        self,
        room: str,
        *,
        admit: Callable[[StoredFile], None] | None = None,
        max_file_bytes: int | None = None,
    ) -> FileSpool:
        """A view of this spool for one room: the same directory, each upload's sidecar
        stamped with ``room``, and ``admit(stored)`` called (in the disk thread, after the
        bytes are fsync'ed, before the sidecar and the rename) to refuse a file by raising
        :class:`SpoolError`, in which case its temporary file is deleted. Only the spool the
        node owns should :meth:`prepare`; a view's :meth:`files` lists every room's files."""
        return FileSpool(
            self.root,
            max_file_bytes=self.max_file_bytes if max_file_bytes is None else max_file_bytes,
            random=self._random,
            room=room,
            admit=admit,
        )

    def prepare(self) -> int:
        """Create the directory and remove what a crash left: ``.part`` and ``.tmp`` files and
        sidecars whose data file never arrived. A data file without its sidecar is a completed
        file: it gets its sidecar back (see the module doc), never deleted. Returns how many
        files were removed."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in sorted(self.files_dir.iterdir()):
            name = entry.name
            stale = name.startswith(PART_PREFIX) or name.endswith(".tmp")
            data_id = name[: -len(META_SUFFIX)] if name.endswith(META_SUFFIX) else None
            orphan_meta = (
                data_id is not None
                and _DATA_NAME.match(data_id) is not None
                and not (self.files_dir / data_id).exists()
            )
            if stale or orphan_meta:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                removed += 1
            elif _DATA_NAME.match(name) is not None and not self._meta_path(name).exists():
                self._restore_meta(entry)
        if removed:
            log.info("spool: removed %d unfinished file(s)", removed)
        return removed

    def _restore_meta(self, path: Path) -> None:
        """Give a sidecar back to a data file that lost it, if its bytes match its name."""
        match = _DATA_NAME.match(path.name)
        assert match is not None
        digest = hashlib.sha1()
        with path.open("rb") as handle:
            while piece := handle.read(1 << 20):
                digest.update(piece)
        if digest.hexdigest() != match.group(1):
            log.warning("spool: %s does not match its SHA-1; left alone, not served", path.name)
            return
        stat = path.stat()
        date = _dt.datetime.fromtimestamp(stat.st_mtime, _dt.UTC).isoformat()
        stored = StoredFile(
            file_id=path.name,
            name=path.name,
            content_type="application/octet-stream",
            size=stat.st_size,
            sha1=match.group(1),
            date=date,
            sender="",
            path=path,
        )
        self._write_meta(stored)
        _fsync_dir(self.files_dir)
        log.warning("spool: %s had no metadata; restored a minimal record", path.name)

    def _token(self) -> str:
        return self._random(8).hex()

    def _meta_path(self, file_id: str) -> Path:
        return self.files_dir / f"{file_id}{META_SUFFIX}"

    def begin(self) -> Upload:
        """A new upload in a fresh temporary file (O_EXCL: never an existing file)."""
        self.files_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(8):
            token = self._token()
            path = self.files_dir / f"{PART_PREFIX}{token}{PART_SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            return Upload(self, path, fd, token)
        raise SpoolError(500, "random source keeps producing existing names")

    def write_sidecar(self, stored: StoredFile) -> None:
        """Rewrite a stored file's sidecar (atomically) from a better record of it: the room
        store's row, after :meth:`prepare` gave a file that lost its sidecar a minimal one."""
        self._write_meta(stored)
        _fsync_dir(self.files_dir)

    def _write_meta(self, stored: StoredFile) -> None:
        record = asdict(stored)
        record.pop("path")
        data = json.dumps(record, ensure_ascii=False, sort_keys=True).encode("utf-8")
        final = self._meta_path(stored.file_id)
        temp = final.with_name(final.name + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temp, final)

    def _read_meta(self, meta_path: Path) -> StoredFile | None:
        file_id = meta_path.name[: -len(META_SUFFIX)]
        match = _DATA_NAME.match(file_id)
        data_path = self.files_dir / file_id
        if match is None or not data_path.is_file():
            return None
        try:
            record = json.loads(meta_path.read_text(encoding="utf-8"))
            return StoredFile(
                file_id=file_id,
                name=str(record["name"]),
                content_type=str(record["content_type"]),
                size=int(record["size"]),
                sha1=match.group(1),
                date=str(record["date"]),
                sender=str(record["sender"]),
                path=data_path,
                room=None if record.get("room") is None else str(record["room"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("spool: unreadable metadata %s", meta_path.name)
            return None

    def find(self, sha1_hex: str) -> StoredFile | None:
        """The most recent stored file with this SHA-1 (lower- or upper-case hex), or None."""
        sha1_hex = sha1_hex.lower()
        if not _SHA1_HEX.match(sha1_hex) or not self.files_dir.is_dir():
            return None
        found = [
            stored
            for meta in self.files_dir.glob(f"{sha1_hex}.*{META_SUFFIX}")
            if (stored := self._read_meta(meta)) is not None
        ]
        return max(found, key=lambda s: (s.date, s.file_id)) if found else None

    def get(self, file_id: str) -> StoredFile | None:
        if _DATA_NAME.match(file_id) is None:
            return None
        meta = self._meta_path(file_id)
        return self._read_meta(meta) if meta.is_file() else None

    def files(self) -> list[StoredFile]:
        """Every stored file, oldest first."""
        if not self.files_dir.is_dir():
            return []
        found = [
            stored
            for meta in self.files_dir.glob(f"*{META_SUFFIX}")
            if (stored := self._read_meta(meta)) is not None
        ]
        return sorted(found, key=lambda s: (s.date, s.file_id))

    def open_read(self, stored: StoredFile) -> BinaryIO:
        return stored.path.open("rb")

    def delete(self, stored: StoredFile) -> None:
        """Remove a file: metadata first, so it is never found without its bytes."""
        with contextlib.suppress(FileNotFoundError):
            self._meta_path(stored.file_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            stored.path.unlink()
