"""File transfer over MSRP (RFC 5547 §8) without holding the file: the receiver's and the
sender's bookkeeping, fed and asked by the layer that owns the socket and the disk.

A file is one MSRP message (RFC 5547 §8.4: the whole file, or the part ``a=file-range`` asks
for, is the body of a single SEND message, chunked as RFC 4975 §5.1 allows). The receiving
session runs with ``deliver_chunks`` so the core hands out each new piece with its offset
(:class:`~control.msrp.events.MessageChunkReceived`) and keeps none of it.

:class:`FileReceiver` takes those pieces, writes them through a :class:`FileSink` (a temporary
file in the spool, or a ``bytearray`` in tests), keeps track of which bytes have arrived, hashes
them in order, and at the end checks the size and the SHA-1 the ``a=file-selector`` announced
(RFC 5547 §8.4: a receiver that finds the hash does not match considers the transfer failed).
:class:`FileSender` cuts a file (or a range of it) into chunk-sized pieces for the sender.

Byte-Range positions are positions in the file: a transfer of ``a=file-range:1001-2000`` sends
chunks whose Byte-Range starts at 1001 and whose total is the file's size (RFC 5547 §8.9). So
the offset a chunk carries is where its bytes go on disk.

Failures raise :class:`FileTransferError`, an :class:`~control.msrp.errors.MsrpError` whose
status is what the transfer is answered or reported with: 413 for more bytes than announced or
allowed (RFC 4975 §7.3: "stop sending"), 400 for a truncated transfer or a hash mismatch.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NoReturn, Protocol

from .errors import MsrpError, MsrpUsageError
from .fileselector import FileRange
from .reassembly import RangeSet

__all__ = [
    "BytesSink",
    "ChunkPlan",
    "FileReceiver",
    "FileSender",
    "FileSink",
    "FileTransferError",
    "ReceivedFile",
    "ReceiverState",
]

READ_BACK_PIECE = 1024 * 1024
"""Bytes read back at a time to hash data that arrived out of order."""


class FileTransferError(MsrpError):
    """A file transfer failed; ``status`` is the MSRP status to answer or report it with."""


class FileSink(Protocol):
    """Where received bytes go. Writes may come out of order; ``read_at`` reads back what was
    written (only to hash bytes that arrived before the bytes in front of them)."""

    def write_at(self, offset: int, data: bytes) -> None: ...

    def read_at(self, offset: int, size: int) -> bytes: ...


class BytesSink:
    """A :class:`FileSink` in memory, for tests and small files."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write_at(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if len(self.data) < end:
            self.data.extend(bytes(end - len(self.data)))
        self.data[offset:end] = data

    def read_at(self, offset: int, size: int) -> bytes:
        return bytes(self.data[offset : offset + size])


class ReceiverState(enum.Enum):
    RECEIVING = "receiving"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """A finished transfer: ``size`` bytes whose SHA-1 is ``sha1``.

    ``verified`` is True when the announced hash was checked against the bytes; it is False
    only for a partial range (the file's hash covers bytes we did not receive) or when the
    offer announced no hash and none was required.
    """

    size: int
    sha1: bytes
    verified: bool

    @property
    def sha1_hex(self) -> str:
        return self.sha1.hex()


class FileReceiver:
    """Receiving one file (or one ``a=file-range`` of it) through a :class:`FileSink`.

    ``size`` and ``sha1`` come from the offer's ``a=file-selector`` (RFC 5547 §6). ``max_size``
    is the receiver's own cap (the spool's ``max_file_bytes``): nothing past it is written.
    ``require_hash`` refuses to call a transfer complete when there is nothing to check it
    against. After :meth:`receive` or :meth:`finish` raise, the receiver is ``FAILED`` and the
    owner discards what the sink holds.
    """

    def __init__(
        self,
        sink: FileSink,
        *,
        size: int | None,
        sha1: bytes | None,
        max_size: int,
        file_range: FileRange | None = None,
        require_hash: bool = False,
        max_ranges: int = 4096,
    ) -> None:
        if max_size < 0:
            raise MsrpUsageError("max_size must not be negative")
        self.sink = sink
        self.size = size
        self.sha1 = sha1
        self.max_size = max_size
        self.require_hash = require_hash
        self.start = file_range.offset if file_range is not None else 0
        stop = file_range.stop if file_range is not None else None
        self.end: int | None = size if stop is None else stop
        if stop is not None and size is not None:
            self.end = min(stop, size)
        self.state = ReceiverState.RECEIVING
        self.failure: FileTransferError | None = None
        self.result: ReceivedFile | None = None
        self._ranges = RangeSet(max_ranges)
        self._hash = hashlib.sha1(usedforsecurity=False)
        self._hashed = self.start  # bytes [start, _hashed) are in the hash
        self._whole = self.start == 0
        if size is not None and size > max_size:
            self._fail(413, f"file of {size} bytes is over the {max_size}-byte limit")

    @property
    def received(self) -> int:
        """Bytes received so far (each byte counted once)."""
        return sum(end - start for start, end in self._ranges.intervals())

    def _fail(self, status: int, reason: str) -> NoReturn:
        self.state = ReceiverState.FAILED
        self.failure = FileTransferError(status, reason)
        raise self.failure

    def _check_open(self) -> None:
        if self.state is ReceiverState.FAILED:
            assert self.failure is not None
            raise self.failure
        if self.state is ReceiverState.COMPLETE:
            raise MsrpUsageError("the transfer is already complete")

    def receive(self, offset: int, data: bytes, total: int | None = None) -> None:
        """Bytes at 0-based file ``offset`` (a chunk's Byte-Range start minus one).

        ``total`` is the chunk's Byte-Range total when it gave one: it must be the announced
        size. Raises :class:`FileTransferError` (413 past the size or the cap, 400 outside the
        range asked for or a total that contradicts the selector).
        """
        self._check_open()
        if total is not None:
            if total > self.max_size:
                self._fail(413, f"file of {total} bytes is over the {self.max_size}-byte limit")
            if self.size is not None and total != self.size:
                self._fail(400, f"Byte-Range total {total} is not the announced size {self.size}")
        end = offset + len(data)
        if offset < self.start:
            self._fail(400, f"bytes at {offset} before the requested range")
        if end > self.max_size:
            self._fail(413, f"more than the {self.max_size}-byte limit")
        if self.end is not None and end > self.end:
            self._fail(413, f"more bytes than announced ({end} > {self.end})")
        if not data:
            return
        self.sink.write_at(offset, data)
        try:
            self._ranges.add(offset, end)
        except MsrpError as exc:
            self._fail(exc.status, exc.reason)
        if offset <= self._hashed < end:
            self._hash.update(data[self._hashed - offset :])
            self._hashed = end
        self._catch_up(self._contiguous_end())

    def _contiguous_end(self) -> int:
        for start, end in self._ranges.intervals():
            if start <= self._hashed <= end:
                return end
        return self._hashed

    def _catch_up(self, until: int) -> None:
        """Hash bytes that arrived ahead of a gap, now that the gap is filled."""
        while self._hashed < until:
            size = min(READ_BACK_PIECE, until - self._hashed)
            piece = self.sink.read_at(self._hashed, size)
            if len(piece) != size:
                self._fail(400, "the sink lost bytes it was given")
            self._hash.update(piece)
            self._hashed += size

    def finish(self, total: int | None = None) -> ReceivedFile:
        """The message ended (its last chunk, ``$``, arrived; RFC 4975 §7.1).

        ``total`` is the message size the core saw. Checks that every byte from the range's
        start to its end arrived, that the size is the announced one and that the SHA-1 is;
        raises :class:`FileTransferError` (400) otherwise.
        """
        self._check_open()
        end = self.end if self.end is not None else total
        if end is None:
            end = self._ranges.intervals()[-1][1] if len(self._ranges) else self.start
        if total is not None and total != end:
            self._fail(400, f"message of {total} bytes, expected {end}")
        if not self._ranges.covers(self.start, end):
            got = self.received
            self._fail(400, f"truncated: {got} of {end - self.start} bytes arrived")
        self._catch_up(end)
        digest = self._hash.digest()
        complete_file = self._whole and (self.size is None or end == self.size)
        verified = False
        if complete_file and self.sha1 is not None:
            if digest != self.sha1:
                self._fail(400, "SHA-1 of the received file does not match a=file-selector")
            verified = True
        elif self.require_hash:
            self._fail(400, "no hash to check the file against")
        self.state = ReceiverState.COMPLETE
        self.result = ReceivedFile(end - self.start, digest, verified)
        return self.result

    def abort(self, reason: str, status: int = 400) -> FileTransferError:
        """The transfer ended early (sender aborted with ``#``, the session closed): failed."""
        if self.state is ReceiverState.RECEIVING:
            self.state = ReceiverState.FAILED
            self.failure = FileTransferError(status, reason)
        assert self.failure is not None or self.state is ReceiverState.COMPLETE
        return self.failure or FileTransferError(status, reason)


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    """One chunk to send: ``length`` bytes at file ``offset``; ``last`` ends the message."""

    offset: int
    length: int
    last: bool


class FileSender:
    """Cuts a file of ``size`` bytes (or ``file_range`` of it) into chunks for MSRP SEND.

    ``chunk_size`` defaults to 256 KiB: large enough that per-chunk overhead (a head, a 200
    response) is small next to the bytes, small enough that a chat message on the same
    connection waits little behind a chunk (RFC 4975 §5.1: chunking exists to interleave).
    """

    def __init__(
        self, size: int, *, chunk_size: int = 256 * 1024, file_range: FileRange | None = None
    ) -> None:
        if size < 0:
            raise MsrpUsageError("size must not be negative")
        if chunk_size < 1:
            raise MsrpUsageError("chunk_size must be positive")
        self.size = size
        self.chunk_size = chunk_size
        self.start = file_range.offset if file_range is not None else 0
        stop = file_range.stop if file_range is not None else None
        self.end = size if stop is None else min(stop, size)
        if self.start > self.end:
            raise MsrpUsageError("file-range starts past the end of the file")

    @property
    def length(self) -> int:
        return self.end - self.start

    def pieces(self) -> Iterator[ChunkPlan]:
        """Every chunk in order; an empty file (or range) is one empty last chunk."""
        offset = self.start
        while True:
            length = min(self.chunk_size, self.end - offset)
            last = offset + length >= self.end
            yield ChunkPlan(offset, length, last)
            offset += length
            if last:
                return
