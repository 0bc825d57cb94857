"""The store file transfers write to and serve from (RFC 5547 §8): a spool and its index.

The spool (:mod:`control.files.spool`) keeps each file with a sidecar of its metadata; the
index (by SHA-1, what a pull names, §8.4) lives in memory and is rebuilt from the sidecars on
every start. Which store a stream uses is the application's choice: echo has one, rooms have
one each (:meth:`control.files.rooms.RoomFiles.store`), whose index is given as a
:class:`FileIndex` (rows in SQLite, one room's files only) in place of the in-memory one.

A completed push is checked and committed by :meth:`FileStore.settle` as one task nothing
cancels: the sender's 200 means the file is on disk and in the index, and a BYE during the
commit cannot leave a file on disk that the index does not know.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from control.files.spool import FileMeta, FileSpool, SpoolError, StoredFile, Upload, to_disk
from control.msrp.filetransfer import FileReceiver, FileTransferError
from control.msrp.session import RandomSource

__all__ = ["Clock", "FileIndex", "FileStore", "Verdict", "finish_and_commit"]

log = logging.getLogger("chorus.streams.files")

Clock = Callable[[], _dt.datetime]


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


@dataclass(frozen=True, slots=True)
class Verdict:
    """How a completed push ended: the status for its held last chunk, and the file if kept."""

    status: int
    comment: str | None = None
    stored: StoredFile | None = None


class FileIndex(Protocol):
    """An index a :class:`FileStore` can be given in place of its in-memory one."""

    def keep(self, commit: Callable[[], StoredFile]) -> StoredFile:
        """Run ``commit`` (in the disk thread) and record the file it returns before
        returning it, or raise :class:`SpoolError` having kept nothing."""
        ...

    def find(self, sha1_hex: str) -> StoredFile | None: ...

    def refusal(self, size: int) -> str | None:
        """Why a push of ``size`` bytes is refused before it starts (``None``: admitted);
        the index checks the file cap too."""
        ...


def finish_and_commit(
    receiver: FileReceiver,
    upload: Upload,
    batch: tuple[int, bytes],
    size: int,
    meta: FileMeta,
) -> StoredFile:
    """The last bytes, the size and SHA-1 check, and the commit, in one trip to the disk
    thread (fsync, sidecar, rename: :meth:`~control.files.spool.Upload.commit`)."""
    offset, data = batch
    if data:
        receiver.receive(offset, data, size)
    result = receiver.finish(size)
    return upload.commit(meta, result.sha1_hex)


class FileStore:
    """Where RFC 5547 transfers land and are served from: a spool and the index of its files.

    Constructing it prepares the spool (removing what a crash left) and loads the index: both
    are start-up work, done once before the server takes calls. Given an ``index``, it does
    neither: the index's owner prepared the spool and keeps the records.
    """

    def __init__(
        self,
        spool: FileSpool,
        *,
        chunk_size: int = 256 * 1024,
        clock: Clock = _utc_now,
        random: RandomSource = os.urandom,
        index: FileIndex | None = None,
    ) -> None:
        self.spool = spool
        self.chunk_size = chunk_size
        self.clock = clock
        self.random = random
        self.index = index
        self._by_sha1: dict[str, StoredFile] = {}
        self._settling: set[asyncio.Task[Verdict]] = set()
        if index is None:
            spool.prepare()
            for stored in spool.files():  # the index is rebuilt from the sidecars every start
                self.add(stored)

    def add(self, stored: StoredFile) -> None:
        self._by_sha1[stored.sha1] = stored

    def settle(self, commit: Callable[[], StoredFile], upload: Upload) -> asyncio.Task[Verdict]:
        """Check, store and index a completed push (``commit``, blocking: it runs in the disk
        thread) as one task that nothing cancels.

        The transfer awaits it through :func:`asyncio.shield`: a BYE that cancels the transfer
        while the disk thread commits the file no longer stops between the rename and the
        index update (the file would be on disk and unknown until a restart). The task is kept
        here until done, so it is neither collected nor forgotten; :meth:`settled` waits for
        such tasks (a pull that arrives meanwhile, shutdown).
        """
        task = asyncio.create_task(self._settle(commit, upload))
        self._settling.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[Verdict]) -> None:
        self._settling.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:  # a bug (expected failures are verdicts): once, whoever waits
            log.error("file store failed: %r", error, exc_info=error)

    async def _settle(self, commit: Callable[[], StoredFile], upload: Upload) -> Verdict:
        keep = commit if self.index is None else functools.partial(self.index.keep, commit)
        try:
            stored = await to_disk(keep)
        except FileTransferError as exc:
            # 400 "truncated" / hash mismatch, 413 past the cap: answered on the wire.
            return Verdict(exc.status, exc.reason)
        except (SpoolError, OSError) as exc:
            # The file was fine; we could not keep it. 413: "stop sending" (RFC 4975 §7.3) is
            # the refusal that does not blame the sender.
            # A refusal of our own (a room quota: SpoolError 413) keeps its reason.
            log.warning("could not store a file: %s", exc)
            if isinstance(exc, SpoolError) and exc.status == 413:
                return Verdict(413, exc.reason)
            return Verdict(413, "cannot store the file")
        finally:
            if not upload.done:  # anything else (a bug, logged in _settled) leaves no file
                upload.discard()
        if self.index is None:
            self.add(stored)
        log.info(
            "stored %s (%d bytes, sha1 %s) from %s",
            stored.file_id,
            stored.size,
            stored.sha1,
            stored.sender,
        )
        return Verdict(200, None, stored)

    async def settled(self) -> None:
        """Wait until every push that completed has been stored and indexed (or refused)."""
        while self._settling:
            await asyncio.wait(set(self._settling))

    def find(self, sha1_hex: str) -> StoredFile | None:
        if self.index is not None:
            return self.index.find(sha1_hex)
        return self._by_sha1.get(sha1_hex.lower())

    def refusal(self, size: int) -> str | None:
        """Why a push announcing ``size`` bytes is refused at the offer (port 0, RFC 5547
        §8.2), or ``None``: over the spool's cap; with an index, whatever it refuses (the
        cap, a room quota)."""
        if self.index is not None:
            return self.index.refusal(size)
        if size > self.spool.max_file_bytes:
            return f"{size} bytes is over the {self.spool.max_file_bytes}-byte file limit"
        return None
