"""Reassembly of chunked messages (RFC 4975 §5.1, §7.3.1).

Chunks of one message may arrive interleaved with other messages' chunks, out of order (after a
reconnect through relays), or twice. Byte-Range says where each belongs; a message is complete
when every byte of it has arrived and its total size is known (from ``total`` or from the
``$`` chunk's end). A file receiver can ask to keep only the byte-range bookkeeping and take the
bytes as they come (``deliver_chunks``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from .errors import MsrpError
from .uri import MsrpUri

__all__ = ["IncomingMessage", "RangeSet"]


class RangeSet:
    """Disjoint, sorted half-open byte intervals ``[start, end)``.

    ``max_ranges`` bounds the bookkeeping a peer can make us keep by sending many tiny disjoint
    chunks (413 past it).
    """

    def __init__(self, max_ranges: int = 4096) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.max_ranges = max_ranges

    def __len__(self) -> int:
        return len(self._starts)

    def intervals(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._ends, strict=True))

    def missing(self, start: int, end: int) -> list[tuple[int, int]]:
        """The parts of ``[start, end)`` not yet covered."""
        gaps: list[tuple[int, int]] = []
        pos = start
        index = max(0, bisect_right(self._starts, start) - 1)
        while pos < end and index < len(self._starts):
            s, e = self._starts[index], self._ends[index]
            if e <= pos:
                index += 1
                continue
            if s >= end:
                break
            if s > pos:
                gaps.append((pos, s))
            pos = max(pos, e)
            index += 1
        if pos < end:
            gaps.append((pos, end))
        return gaps

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        lo = bisect_left(self._ends, start)  # first interval that ends at or after start
        hi = bisect_right(self._starts, end)  # intervals starting after end stay apart
        if lo < hi:
            start = min(start, self._starts[lo])
            end = max(end, self._ends[hi - 1])
        elif len(self._starts) >= self.max_ranges:
            raise MsrpError(413, "message too fragmented")
        self._starts[lo:hi] = [start]
        self._ends[lo:hi] = [end]

    def covers(self, start: int, end: int) -> bool:
        if start >= end:
            return True
        index = bisect_right(self._starts, start) - 1
        return index >= 0 and self._ends[index] >= end


class IncomingMessage:
    """State of one message being received, keyed by its Message-ID within a session.

    Offsets here are 0-based (Byte-Range start minus one). With ``keep_body`` the bytes are
    stored; without it only the covered ranges are, and :meth:`write` returns the new pieces
    for the caller to hand on.

    Sizes are lenient on purpose: RFC 4975's own examples (§7.1.1, §10) give Byte-Range end and
    total values that also count the CRLF before the end-line, and deployed clients copied
    that. So a Byte-Range total is only ``declared_total`` (a hint, checked against the size
    limit for an early 413); the message's real ``total`` is where the data actually framed in
    the ``$`` chunk ends (:meth:`finish`).
    """

    def __init__(
        self, message_id: str, *, keep_body: bool, max_size: int, max_ranges: int = 4096
    ) -> None:
        self.message_id = message_id
        self.keep_body = keep_body
        self.max_size = max_size
        self.ranges = RangeSet(max_ranges)
        self.total: int | None = None
        self.declared_total: int | None = None
        self.content_type: str | None = None
        self.headers: tuple[tuple[str, str], ...] = ()
        self.success_report = False
        self.report_path: tuple[MsrpUri, ...] = ()
        self._body = bytearray() if keep_body else None

    def set_total(self, total: int) -> None:
        """Learn the size the sender declared (a Byte-Range total): 413 past the limit."""
        if total > self.max_size:
            raise MsrpError(413, "message too large")
        if self.declared_total is None:
            self.declared_total = total

    @property
    def expected_total(self) -> int | None:
        """The real size once the ``$`` chunk arrived, else what the sender declared."""
        return self.total if self.total is not None else self.declared_total

    def finish(self, end: int) -> None:
        """The ``$`` chunk ended at ``end`` (0-based, exclusive): that is the message size."""
        if end > self.max_size:
            raise MsrpError(413, "message too large")
        if self.total is not None and self.total != end:
            raise MsrpError(400, "two different ends for one message")
        intervals = self.ranges.intervals()
        if intervals and intervals[-1][1] > end:
            raise MsrpError(400, "bytes beyond the end of the message")
        self.total = end

    def check_room(self, end: int) -> None:
        if end > self.max_size:
            raise MsrpError(413, "message too large")
        if self.total is not None and end > self.total:
            raise MsrpError(400, "bytes beyond the end of the message")

    def write(self, offset: int, data: bytes) -> list[tuple[int, bytes]]:
        """Record ``data`` at ``offset``; return the pieces not received before."""
        end = offset + len(data)
        self.check_room(end)
        gaps = self.ranges.missing(offset, end)
        self.ranges.add(offset, end)
        if self._body is not None:
            if len(self._body) < end:
                self._body.extend(bytes(end - len(self._body)))
            self._body[offset:end] = data
        return [(s, data[s - offset : e - offset]) for s, e in gaps]

    @property
    def complete(self) -> bool:
        return self.total is not None and self.ranges.covers(0, self.total)

    @property
    def received(self) -> int:
        return sum(e - s for s, e in self.ranges.intervals())

    def body(self) -> bytes:
        if self._body is None:
            raise ValueError("this message was delivered in chunks")
        return bytes(self._body[: self.total])
