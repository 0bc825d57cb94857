"""Streaming chunk reader: bytes in any split → framing events (RFC 4975 §7.1, §9).

The reader is fed whatever TCP delivers and reports ``ChunkStarted`` (headers read),
``ChunkData`` (body pieces), ``ChunkEnded`` (end-line seen), ``ChunkRejected`` (malformed but
resynchronised) or ``FramingLost`` (fatal).

Why it scans for the end-line instead of counting bytes: MSRP has no Content-Length. RFC 4975
§7.1 makes the sender choose a transaction id whose end-line does not occur in the body, so the
body ends at the first ``CRLF "-------" transaction-id flag CRLF`` with a valid flag; an
occurrence with another flag, or without the CRLF, is body data.

Body pieces are cut at ``body_piece_size`` boundaries (plus the remainder at the chunk end), never
at read boundaries: a huge chunk streams out with bounded memory, and any split of the same
stream yields exactly the same events.
"""

from __future__ import annotations

import enum
import re

from .errors import MsrpError
from .events import (
    ChunkData,
    ChunkEnded,
    ChunkRejected,
    ChunkStarted,
    FramingEvent,
    FramingLost,
)
from .message import (
    CRLF,
    END_PREFIX,
    ByteRange,
    Chunk,
    ChunkHead,
    FailureReport,
    Flag,
    ReportStatus,
    is_ident,
    parse_byte_range,
    parse_failure_report,
    parse_nickname,
    parse_report_status,
    parse_success_report,
)
from .uri import MsrpUri, parse_path

__all__ = ["ChunkParser", "parse_chunk"]

# RFC 4975 §9: hname = ALPHA *token-char
_HNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*")
_STATUS_LINE_RE = re.compile(rb"([0-9]{3})(?: (.*))?", re.DOTALL)
_METHOD_RE = re.compile(rb"[A-Z]{1,32}")
_FLAGS = {ord("$"): Flag.END, ord("+"): Flag.CONTINUE, ord("#"): Flag.ABORT}
_PREFIX = b"MSRP "


class _State(enum.Enum):
    START = "start"  # waiting for a start line
    HEADERS = "headers"  # buffer begins with the CRLF that ended the previous line
    BODY = "body"  # buffer begins at unread body bytes
    DISCARD = "discard"  # skipping a rejected chunk up to its end-line
    DEAD = "dead"  # framing lost; nothing more is read


class ChunkParser:
    """Incremental MSRP chunk reader (sans-IO).

    ``max_header_size``: start line plus headers; a chat chunk's head is a few hundred bytes and
    long relay paths still fit, so more is abuse (rejected with 400).
    ``max_chunk_size``: one chunk's body; bounds how long a peer can hold the connection with a
    single chunk (rejected with 413, RFC 4975 §7.3.1 "stop sending").
    ``body_piece_size``: body bytes are held until this many are available, then handed out.
    """

    def __init__(
        self,
        *,
        max_header_size: int = 16 * 1024,
        max_chunk_size: int = 64 * 1024 * 1024,
        body_piece_size: int = 64 * 1024,
    ) -> None:
        if body_piece_size < 1:
            raise ValueError("body_piece_size must be positive")
        self.max_header_size = max_header_size
        self.max_chunk_size = max_chunk_size
        self.body_piece_size = body_piece_size
        self._buf = bytearray()
        self._state = _State.START
        self._scan = 0
        self._reset_chunk()

    def _reset_chunk(self) -> None:
        self._tid = ""
        self._marker = b""
        self._method: str | None = None
        self._status: int | None = None
        self._comment: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body_len = 0
        self._raw_to: str | None = None
        self._raw_from: str | None = None
        self._raw_failure: str | None = None
        self._deferred: tuple[int, str] | None = None

    @property
    def failed(self) -> bool:
        """True once framing is lost; the connection must be closed."""
        return self._state is _State.DEAD

    def feed(self, data: bytes) -> list[FramingEvent]:
        """Take received bytes; return the framing events they complete."""
        out: list[FramingEvent] = []
        if self._state is _State.DEAD:
            return out
        self._buf += data
        while self._step(out):
            pass
        return out

    # ---- state steps: each returns True when it made progress ---------------------------------

    def _step(self, out: list[FramingEvent]) -> bool:
        if self._state is _State.START:
            return self._read_start(out)
        if self._state is _State.HEADERS:
            return self._read_header(out)
        if self._state is _State.BODY:
            return self._read_body(out)
        if self._state is _State.DISCARD:
            return self._discard()
        return False

    def _fatal(self, out: list[FramingEvent], reason: str) -> bool:
        self._state = _State.DEAD
        self._buf.clear()
        out.append(FramingLost(reason))
        return False

    def _reject(self, out: list[FramingEvent], status: int, reason: str) -> bool:
        out.append(
            ChunkRejected(
                transaction_id=self._tid,
                is_request=self._status is None,
                status=status,
                reason=reason,
                to_path=self._raw_to,
                from_path=self._raw_from,
                failure_report=self._raw_failure,
            )
        )
        self._state = _State.DISCARD
        self._scan = 0
        return True

    def _read_start(self, out: list[FramingEvent]) -> bool:
        buf = self._buf
        if not buf:
            return False
        if buf[: len(_PREFIX)] != _PREFIX[: len(buf)]:
            return self._fatal(out, "stream does not start with an MSRP start line")
        idx = buf.find(CRLF)
        if idx < 0:
            if len(buf) > self.max_header_size:
                return self._fatal(out, "start line too long")
            return False
        line = bytes(buf[:idx])
        del buf[:idx]  # keep the CRLF: the end-line may follow at once
        self._reset_chunk()
        self._head_size = idx + 2
        parts = line.split(b" ", 2)
        tid = parts[1].decode("latin-1") if len(parts) > 1 else ""
        if not is_ident(tid):
            return self._fatal(out, "unreadable transaction id")
        self._tid = tid
        self._marker = CRLF + END_PREFIX + parts[1]
        self._state = _State.HEADERS
        rest = parts[2] if len(parts) > 2 else b""
        status = _STATUS_LINE_RE.fullmatch(rest)
        if status is not None:
            self._status = int(status[1])
            if status[2] is not None:
                try:
                    self._comment = status[2].decode("utf-8")
                except UnicodeDecodeError:
                    self._deferred = (400, "response comment is not UTF-8")
            return True
        if _METHOD_RE.fullmatch(rest):
            self._method = rest.decode("ascii")
            return True
        if rest[:1].isdigit():
            self._status = 0  # a malformed response: never answered
        # Read on to the end of the headers first: a 400 needs the request's paths (§7.2).
        self._deferred = (400, "malformed start line")
        return True

    def _read_header(self, out: list[FramingEvent]) -> bool:
        buf = self._buf
        idx = buf.find(CRLF, 2)
        if idx < 0:
            if self._head_size + len(buf) > self.max_header_size:
                return self._reject(out, 400, "header block too large")
            return False
        line = bytes(buf[2:idx])
        self._head_size += len(line) + 2
        if self._head_size > self.max_header_size:
            return self._reject(out, 400, "header block too large")
        if line.startswith(END_PREFIX):
            flag = _FLAGS.get(line[-1]) if line[:-1] == self._marker[2:] else None
            if flag is None:
                return self._reject(out, 400, "malformed end-line")
            del buf[: idx + 2]
            self._state = _State.START
            if self._deferred is not None:
                return self._reject_done(out, MsrpError(*self._deferred))
            try:
                head = self._make_head(has_body=False)
            except MsrpError as exc:
                return self._reject_done(out, exc)
            out.append(ChunkStarted(head))
            out.append(ChunkEnded(self._tid, flag, 0))
            return True
        if not line:
            if self._deferred is not None:
                return self._reject(out, *self._deferred)
            try:
                head = self._make_head(has_body=True)
            except MsrpError as exc:
                return self._reject(out, exc.status, exc.reason)
            del buf[: idx + 2]
            self._state = _State.BODY
            self._scan = 0
            out.append(ChunkStarted(head))
            return True
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return self._reject(out, 400, "header is not UTF-8")
        name, colon, value = text.partition(":")
        if not colon or not _HNAME_RE.fullmatch(name):
            return self._reject(out, 400, "malformed header line")
        value = value.strip(" \t")
        lowered = name.lower()
        if lowered == "to-path" and self._raw_to is None:
            self._raw_to = value.split(" ", 1)[0] or None
        elif lowered == "from-path" and self._raw_from is None:
            self._raw_from = value.split(" ", 1)[0] or None
        elif lowered == "failure-report" and self._raw_failure is None:
            self._raw_failure = value.lower()
        self._headers.append((name, value))
        del buf[:idx]
        return True

    def _reject_done(self, out: list[FramingEvent], exc: MsrpError) -> bool:
        """Reject a chunk whose end-line was already consumed."""
        self._reject(out, exc.status, exc.reason)
        self._state = _State.START
        return True

    def _read_body(self, out: list[FramingEvent]) -> bool:
        buf, marker, piece = self._buf, self._marker, self.body_piece_size
        idx = buf.find(marker, self._scan)
        while idx >= 0:
            tail = idx + len(marker)
            if len(buf) < tail + 3:
                break  # the flag and CRLF are not here yet
            flag = _FLAGS.get(buf[tail])
            if flag is not None and buf[tail + 1 : tail + 3] == CRLF:
                if self._body_len + idx > self.max_chunk_size:
                    return self._reject(out, 413, "chunk too large")
                self._emit(out, idx)
                del buf[: len(marker) + 3]
                out.append(ChunkEnded(self._tid, flag, self._body_len))
                self._state = _State.START
                return True
            idx = buf.find(marker, idx + 1)  # same text with another flag: body data
        # Bytes before a possible (incomplete) end-line are body; so is all but the tail that
        # could be the start of one.
        held = idx if idx >= 0 else max(0, len(buf) - (len(marker) - 1))
        self._scan = held
        if self._body_len + held > self.max_chunk_size:
            return self._reject(out, 413, "chunk too large")
        if held >= piece:
            self._scan -= self._emit(out, held - held % piece)
        return False

    def _emit(self, out: list[FramingEvent], count: int) -> int:
        """Hand out the first ``count`` buffered body bytes in ``body_piece_size`` pieces."""
        piece = self.body_piece_size
        view = bytes(self._buf[:count])
        for pos in range(0, count, piece):
            out.append(ChunkData(self._tid, view[pos : pos + piece]))
        del self._buf[:count]
        self._body_len += count
        return count

    def _discard(self) -> bool:
        buf, marker = self._buf, self._marker
        idx = buf.find(marker, self._scan)
        while idx >= 0:
            tail = idx + len(marker)
            if len(buf) < tail + 3:
                del buf[:idx]
                self._scan = 0
                return False
            if buf[tail] in _FLAGS and buf[tail + 1 : tail + 3] == CRLF:
                del buf[: tail + 3]
                self._state = _State.START
                return True
            idx = buf.find(marker, idx + 1)
        keep = len(marker) - 1
        if len(buf) > keep:
            del buf[: len(buf) - keep]
        self._scan = 0
        return False

    # ---- head validation ------------------------------------------------------------------

    def _make_head(self, *, has_body: bool) -> ChunkHead:
        """Type the RFC 4975 headers; any error is a 400 for this chunk only."""
        if self._status is not None and has_body:
            raise MsrpError(400, "responses carry no body (RFC 4975 §7.2)")
        to_path: tuple[MsrpUri, ...] | None = None
        from_path: tuple[MsrpUri, ...] | None = None
        message_id: str | None = None
        byte_range: ByteRange | None = None
        success: bool | None = None
        failure: FailureReport | None = None
        report_status: ReportStatus | None = None
        content_type: str | None = None
        nickname: str | None = None
        for name, value in self._headers:
            key = name.lower()
            if key == "to-path" and to_path is None:
                to_path = parse_path(value)
            elif key == "from-path" and from_path is None:
                from_path = parse_path(value)
            elif key == "message-id":
                if not is_ident(value):
                    raise MsrpError(400, "bad Message-ID")
                message_id = value
            elif key == "byte-range":
                byte_range = parse_byte_range(value)
            elif key == "success-report":
                success = parse_success_report(value)
            elif key == "failure-report":
                failure = parse_failure_report(value)
            elif key == "status":
                report_status = parse_report_status(value)
            elif key == "content-type":
                content_type = value
            elif key == "use-nickname":
                nickname = parse_nickname(value)
        if to_path is None or from_path is None:
            raise MsrpError(400, "To-Path and From-Path are required (RFC 4975 §7.1)")
        return ChunkHead(
            transaction_id=self._tid,
            method=self._method,
            status=self._status,
            comment=self._comment,
            headers=tuple(self._headers),
            to_path=to_path,
            from_path=from_path,
            message_id=message_id,
            byte_range=byte_range,
            success_report=success,
            failure_report=failure,
            report_status=report_status,
            content_type=content_type,
            nickname=nickname,
            has_body=has_body,
        )


def parse_chunk(data: bytes) -> Chunk:
    """Parse exactly one whole chunk (tests, vectors); raise :class:`MsrpError` otherwise."""
    parser = ChunkParser(body_piece_size=max(1, len(data)), max_chunk_size=len(data))
    events = parser.feed(data)
    head: ChunkHead | None = None
    body = bytearray()
    for index, event in enumerate(events):
        match event:
            case ChunkStarted(head=started):
                head = started
            case ChunkData(data=piece):
                body += piece
            case ChunkEnded(flag=flag):
                if head is None or index != len(events) - 1 or parser._buf:
                    raise MsrpError(400, "more than one chunk")
                return Chunk(head, bytes(body) if head.has_body else None, flag)
            case ChunkRejected(status=status, reason=reason):
                raise MsrpError(status, reason)
            case FramingLost(reason=reason):
                raise MsrpError(400, reason)
    raise MsrpError(400, "incomplete chunk")
