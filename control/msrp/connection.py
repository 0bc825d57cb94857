"""The MSRP stream core: one connection, many sessions (RFC 4975 §6, §7).

Sans-IO like h11 and aioquic: the owner feeds received bytes and ``now`` with
:meth:`MsrpConnection.receive_data`, takes events with :meth:`~MsrpConnection.next_event`,
writes :meth:`~MsrpConnection.data_to_send` (responses and REPORTs the core decided to send on
its own) and re-arms one timer at :meth:`~MsrpConnection.next_timer`. What the owner asks to
send (``send_message``, ``send_chunk``, ``send_nickname``, ``respond``) is returned as bytes for
it to write. Transaction ids and Message-IDs come from the injected ``random`` source.

Several sessions share one connection (RFC 4975 §7.3): a request is routed by the session-id of
the first To-Path URI. No such session → 481. A From-Path whose last URI (the peer endpoint)
differs from the last URI of the session's ``remote_path`` → 403 (Action-not-allowed): only
the session's negotiated peer may send into it. Comparing the endpoint URI, not the relay hops
that RFC 4976 relays rewrite, is the check that still works through relays.

A ``deliver_chunks`` session (file transfer) keeps no bytes, so the core cannot check a message
itself: the response to the chunk that completes a message, and the success REPORT, are *held*.
:class:`MessageReceived` says ``awaiting_completion``; the application checks what it wrote (size,
hash) and calls :meth:`MsrpConnection.complete_message` with 200 or the failure status, which
then goes on the wire (RFC 4975 §7.1.1, §7.1.2; RFC 5547 §8.4). A hold the application never
completes expires after ``completion_timeout``: no response (408 is never sent as a response,
§7.3) but a failure REPORT ``000 408`` when the sender wants failures reported.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass

from .errors import MsrpError, MsrpUsageError
from .events import (
    ChunkData,
    ChunkEnded,
    ChunkRejected,
    ChunkStarted,
    ConnectionFailed,
    Event,
    FramingEvent,
    FramingLost,
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    NicknameRequested,
    ProtocolError,
    ReportReceived,
    SessionBound,
)
from .message import (
    WHOLE_MESSAGE,
    ByteRange,
    ChunkHead,
    FailureReport,
    Flag,
)
from .parser import ChunkParser
from .reassembly import IncomingMessage
from .report import build_report, build_response, response_wanted
from .sending import RequestSender
from .session import (
    Held,
    MsrpSession,
    RandomSource,
    SessionLookup,
    media_type,
)

__all__ = ["MsrpConnection"]

# Duplicates of a held chunk answered together with it; past this a duplicate gets 413 (stop
# sending): over a reliable stream a peer has no reason to resend the same chunk repeatedly.
_MAX_HELD_HEADS = 8


@dataclass(slots=True)
class _Current:
    """The chunk being read (chunks never interleave inside one stream)."""

    head: ChunkHead
    session: MsrpSession | None = None
    message: IncomingMessage | None = None
    offset: int = 0
    ignore: bool = False  # read to the end-line, deliver nothing
    answer_ok: bool = False  # still answer 200 at the end (duplicate of a finished message)


class MsrpConnection(RequestSender):
    """One MSRP TCP/TLS stream and the sessions that share it.

    Limits (constructor arguments, each with why):
    ``max_header_size`` 16 KiB: a chunk head is a few hundred bytes even with relay paths.
    ``max_chunk_size`` 64 MiB: one chunk may hold a whole file (bodies are streamed, so this
    bounds time on the wire, not memory).
    ``max_message_size`` 16 MiB: a chat message is reassembled in memory; file sessions set
    their own limit.
    ``max_concurrent_messages`` 16 per session: each incomplete message costs memory.
    ``transaction_timeout`` 30 s: the transaction timeout RFC 4975 suggests.
    ``body_piece_size`` 64 KiB: body bytes handed out per event for large chunks.
    ``max_ranges`` 4096: disjoint byte ranges tracked per message.
    ``completion_timeout`` 30 s: how long a completed ``deliver_chunks`` message waits for
    :meth:`complete_message`; the transaction timeout, since the sender's own timer gives up then.

    ``session_lookup`` is asked about a request for a session-id this connection does not
    carry yet. That is how the passive end of a session learns which connection is its own: by
    the first request that arrives for it (RFC 4975 §5.4, the active end's first SEND). A session
    it returns joins the connection only if the request's To-Path and From-Path fit it, and a
    :class:`SessionBound` event says so.
    """

    def __init__(
        self,
        *,
        random: RandomSource,
        max_header_size: int = 16 * 1024,
        max_chunk_size: int = 64 * 1024 * 1024,
        max_message_size: int = 16 * 1024 * 1024,
        max_concurrent_messages: int = 16,
        transaction_timeout: float = 30.0,
        body_piece_size: int = 64 * 1024,
        max_ranges: int = 4096,
        completion_timeout: float = 30.0,
        session_lookup: SessionLookup | None = None,
    ) -> None:
        super().__init__(random=random, transaction_timeout=transaction_timeout)
        self._lookup = session_lookup
        self.max_message_size = max_message_size
        self.max_concurrent_messages = max_concurrent_messages
        self.max_ranges = max_ranges
        self.completion_timeout = completion_timeout
        self._parser = ChunkParser(
            max_header_size=max_header_size,
            max_chunk_size=max_chunk_size,
            body_piece_size=body_piece_size,
        )
        self._sessions: dict[str, MsrpSession] = {}
        self._events: deque[Event] = deque()
        self._out = bytearray()
        self._current: _Current | None = None
        self._hold_timers: list[tuple[float, str, str]] = []
        self._pending: dict[str, tuple[ChunkHead, MsrpSession]] = {}
        self.failed = False

    # ---- sessions -----------------------------------------------------------------------

    def add_session(self, session: MsrpSession) -> MsrpSession:
        if session.session_id in self._sessions:
            raise MsrpUsageError(f"session {session.session_id!r} already on this connection")
        self._sessions[session.session_id] = session
        return session

    def remove_session(self, session_id: str) -> None:
        """Forget a session and its incomplete messages (no events for them)."""
        self._sessions.pop(session_id, None)
        cur = self._current
        if cur is not None and cur.session is not None and cur.session.session_id == session_id:
            cur.ignore = True

    def session(self, session_id: str) -> MsrpSession | None:
        return self._sessions.get(session_id)

    def _carries(self, session_id: str) -> bool:
        return session_id in self._sessions

    # ---- I/O surface --------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed received bytes. Never raises for peer input: errors become events."""
        if self.failed:
            return
        for event in self._parser.feed(data):
            self._handle(event, now)

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Take every pending event."""
        out = list(self._events)
        self._events.clear()
        return out

    def data_to_send(self) -> bytes:
        """Responses and REPORTs queued by the core."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_timer(self) -> float | None:
        """The earliest deadline: a transaction of ours or a held message of the peer's."""
        while self._hold_timers:
            hold_deadline, sid, mid = self._hold_timers[0]
            if self._held_at(sid, mid, hold_deadline) is not None:
                break
            heapq.heappop(self._hold_timers)
        deadlines = [self._hold_timers[0][0]] if self._hold_timers else []
        transaction = self._next_transaction_deadline()
        if transaction is not None:
            deadlines.append(transaction)
        return min(deadlines) if deadlines else None

    def _held_at(self, session_id: str, message_id: str, deadline: float) -> Held | None:
        session = self._sessions.get(session_id)
        held = session._held.get(message_id) if session is not None else None
        return held if held is not None and held.deadline == deadline else None

    def handle_timer(self, now: float) -> None:
        """Expire transactions: no response in time counts as a 408 (RFC 4975 status table).

        Expire holds too: a completed ``deliver_chunks`` message the application did not
        complete in time is dropped with :class:`MessageAborted` (status 408). Its chunk gets
        no response, since 408 "is never sent" as one (RFC 4975 §7.3; the sender's transaction
        timer reports it there), and a failure REPORT ``000 408`` goes end to end unless the
        sender said ``Failure-Report: no`` (§7.1.2).
        """
        while self._hold_timers and self._hold_timers[0][0] <= now:
            deadline, sid, mid = heapq.heappop(self._hold_timers)
            held = self._held_at(sid, mid, deadline)
            if held is None:
                continue
            session = self._sessions[sid]
            del session._held[mid]
            self._events.append(MessageAborted(sid, mid, "not completed in time", 408))
            if held.heads[0].failure_report is not FailureReport.NO:
                total = held.message.total or 0
                self._send_report(session, held.message, ByteRange(1, total, total), status=408)
        self._events.extend(self._expire_transactions(now))

    # ---- answering ----------------------------------------------------------------------

    def respond(self, transaction_id: str, status: int, comment: str | None = None) -> bytes:
        """Answer a request left to the application (NICKNAME: 200, 424, 425 …)."""
        pending = self._pending.pop(transaction_id, None)
        if pending is None:
            raise MsrpUsageError(f"no request {transaction_id!r} awaits an answer")
        head, session = pending
        return build_response(head, status, comment, local_uri=session.local_uri)

    def complete_message(
        self, session_id: str, message_id: str, status: int = 200, comment: str | None = None
    ) -> bytes:
        """The application's verdict on a held ``deliver_chunks`` message; returns the bytes.

        200: the held chunk's 200 (unless ``Failure-Report`` is ``partial`` or ``no``,
        RFC 4975 §7.1.1) and the success REPORT the sender asked for (§7.1.2). Any other
        status (400 for a hash mismatch or a truncated file, 413 …, RFC 5547 §8.4): that
        response, with ``comment`` as its reason, unless ``Failure-Report: no``; no success
        REPORT. No failure REPORT either: the response carries the failure to the previous hop,
        and a relay there turns it into a REPORT for the sender (§7.1.2, RFC 4976).

        A message already answered, or whose hold expired (the peer was sent a 408 failure
        REPORT, see :meth:`handle_timer`), gets nothing: ``b""``. Completing a message that
        was never held is our bug: :class:`MsrpUsageError`.
        """
        if not 200 <= status <= 999 or status == 408:
            raise MsrpUsageError(f"{status} cannot answer a message (408 is never sent, §7.3)")
        if comment is not None and ("\r" in comment or "\n" in comment):
            raise MsrpUsageError("a response comment is one line")
        session = self._sessions.get(session_id)
        if session is None:
            raise MsrpUsageError(f"no session {session_id!r} on this connection")
        held = session._held.pop(message_id, None)
        if held is None:
            if session._is_finished(message_id):
                return b""
            raise MsrpUsageError(f"message {message_id!r} is not awaiting completion")
        mark = len(self._out)
        for head in held.heads:
            self._answer(head, status, session, comment)
        if status == 200:
            msg = held.message
            if held.chunk_report:
                self._send_report(session, msg, held.chunk_range)
            if msg.success_report and not session.report_per_chunk:
                assert msg.total is not None
                self._send_report(session, msg, ByteRange(1, msg.total, msg.total))
        out = bytes(self._out[mark:])
        del self._out[mark:]
        return out

    # ---- receiving ----------------------------------------------------------------------

    def _handle(self, event: FramingEvent, now: float) -> None:
        match event:
            case ChunkStarted(head=head):
                try:
                    self._started(head)
                except MsrpError as exc:
                    self._fail_chunk(exc)
            case ChunkData(data=data):
                cur = self._current
                if cur is None or cur.ignore:
                    return
                try:
                    self._data(cur, data)
                except MsrpError as exc:
                    self._fail_chunk(exc)
            case ChunkEnded(flag=flag, body_length=length):
                cur, self._current = self._current, None
                if cur is None:
                    return
                try:
                    self._ended(cur, flag, length, now)
                except MsrpError as exc:
                    self._current = cur
                    self._fail_chunk(exc)
                    self._current = None
            case ChunkRejected():
                self._rejected(event)
            case FramingLost(reason=reason):
                self.failed = True
                self._abort_current(reason, None)
                self._events.append(ConnectionFailed(reason))

    def _started(self, head: ChunkHead) -> None:
        self._current = cur = _Current(head, ignore=True)
        if not head.is_request:
            self._response(head)
            return
        if head.method == "REPORT":
            self._report(head)
            return
        session = self._route(head)
        cur.session = session
        if head.method == "SEND":
            self._start_send(cur, session)
        elif head.method != "NICKNAME":
            raise MsrpError(501, f"method {head.method} not understood")  # RFC 4975 §7.3
        elif not session.nicknames:
            raise MsrpError(403, "nicknames are not used in this session")  # RFC 7701 §7.1

    def _route(self, head: ChunkHead) -> MsrpSession:
        uri = head.to_path[0]
        sid = uri.session_id
        session = self._sessions.get(sid) if sid else None
        bound = False
        if session is None and sid and self._lookup is not None:
            session, bound = self._lookup(sid), True
        if session is None or not session.local_uri.matches(uri):
            raise MsrpError(481, "session does not exist")
        if not session.from_path_ok(head.from_path):
            raise MsrpError(403, "From-Path is not this session's peer")
        if bound:
            self._sessions[session.session_id] = session
            self._events.append(SessionBound(session.session_id))
        return session

    def _response(self, head: ChunkHead) -> None:
        answered = self._transaction_answered(head)
        if answered is not None:
            self._events.append(answered)

    def _report(self, head: ChunkHead) -> None:
        """REPORTs are never answered (RFC 4975 §7.1.2), even when wrong."""
        uri = head.to_path[0]
        session = self._sessions.get(uri.session_id) if uri.session_id else None
        sid = session.session_id if session is not None else None
        if session is None or not session.local_uri.matches(uri):
            self._problem(head.transaction_id, None, 481, "REPORT for an unknown session")
        elif head.message_id is None or head.report_status is None:
            self._problem(head.transaction_id, sid, 400, "REPORT without Message-ID or Status")
        else:
            self._events.append(
                ReportReceived(
                    session.session_id,
                    head.message_id,
                    head.transaction_id,
                    head.byte_range,
                    head.report_status.code,
                    head.report_status.reason,
                )
            )

    def _start_send(self, cur: _Current, session: MsrpSession) -> None:
        head = cur.head
        if head.message_id is None:
            raise MsrpError(400, "SEND without Message-ID")
        if head.content_type is not None and not session.accepts(head.content_type):
            raise MsrpError(415, f"{media_type(head.content_type)} not accepted")
        byte_range = head.byte_range or WHOLE_MESSAGE
        if session._is_finished(head.message_id):
            cur.answer_ok = True  # a duplicate of what we already delivered
            return
        msg = session.messages.get(head.message_id)
        if msg is None:
            if len(session.messages) + len(session._held) >= self.max_concurrent_messages:
                raise MsrpError(413, "too many concurrent messages")
            limit = session.max_message_size or self.max_message_size
            msg = IncomingMessage(
                head.message_id,
                keep_body=not session.deliver_chunks,
                max_size=limit,
                max_ranges=self.max_ranges,
            )
            if byte_range.total is not None:
                msg.set_total(byte_range.total)
            session.messages[head.message_id] = msg
        cur.message = msg
        if byte_range.total is not None:
            msg.set_total(byte_range.total)
        if byte_range.end is not None and byte_range.end > msg.max_size:
            raise MsrpError(413, "message too large")
        if byte_range.start == 1 or not msg.headers:
            msg.headers = head.headers
            msg.content_type = head.content_type
        msg.success_report = msg.success_report or bool(head.success_report)
        msg.report_path = head.from_path
        cur.offset = byte_range.start - 1
        cur.ignore = False

    def _data(self, cur: _Current, data: bytes) -> None:
        # The data actually framed is trusted over the Byte-Range end (see IncomingMessage).
        head, msg, session = cur.head, cur.message, cur.session
        assert msg is not None and session is not None and head.message_id is not None
        pieces = msg.write(cur.offset, data)
        cur.offset += len(data)
        if session.deliver_chunks:
            for offset, piece in pieces:
                self._events.append(
                    MessageChunkReceived(
                        session.session_id,
                        head.message_id,
                        head.content_type or msg.content_type,
                        offset,
                        piece,
                        msg.expected_total,
                    )
                )

    def _ended(self, cur: _Current, flag: Flag, length: int, now: float) -> None:
        head, session = cur.head, cur.session
        if head.method == "NICKNAME":
            if session is not None and session.nicknames:  # else answered in _started
                self._pending[head.transaction_id] = (head, session)
                self._events.append(
                    NicknameRequested(session.session_id, head.transaction_id, head.nickname)
                )
            return
        if cur.answer_ok:
            held = session._held.get(head.message_id or "") if session is not None else None
            if held is None:
                self._answer(head, 200, session)
            elif len(held.heads) < _MAX_HELD_HEADS:
                held.heads.append(head)  # a duplicate of a held chunk shares its verdict
            else:
                raise MsrpError(413, "too many copies of a chunk awaiting completion")
        msg = cur.message
        if cur.ignore or msg is None or session is None:
            return
        byte_range = head.byte_range or WHOLE_MESSAGE
        end = byte_range.start - 1 + length
        if flag is Flag.ABORT:
            session.messages.pop(msg.message_id, None)
            self._answer(head, 200, session)
            self._events.append(
                MessageAborted(session.session_id, msg.message_id, "aborted by the sender", None)
            )
            return
        # Lenient on purpose: a Byte-Range end that counts the CRLF (RFC 4975's own examples)
        # is not an error; where the data ends is where the message ends.
        if flag is Flag.END:
            msg.finish(end)
        if msg.complete and session.validator is not None and not session.deliver_chunks:
            session.validator(msg.content_type, msg.body())  # MsrpError → this chunk's answer
        chunk_range = ByteRange(byte_range.start, end, msg.expected_total)
        chunk_report = bool(head.success_report and session.report_per_chunk)
        hold = msg.complete and self._holds(session, msg)
        if hold:
            deadline = now + self.completion_timeout
            session._held[msg.message_id] = Held(msg, [head], chunk_range, chunk_report, deadline)
            heapq.heappush(self._hold_timers, (deadline, session.session_id, msg.message_id))
        else:
            self._answer(head, 200, session)
            if chunk_report:
                self._send_report(session, msg, chunk_range)
        if not msg.complete:
            return
        assert msg.total is not None
        session._finished(msg.message_id)
        self._events.append(
            MessageReceived(
                session.session_id,
                msg.message_id,
                msg.content_type,
                None if session.deliver_chunks else msg.body(),
                msg.headers,
                msg.total,
                awaiting_completion=hold,
            )
        )
        if msg.success_report and not session.report_per_chunk and not hold:
            self._send_report(session, msg, ByteRange(1, msg.total, msg.total))

    @staticmethod
    def _holds(session: MsrpSession, msg: IncomingMessage) -> bool:
        """Whether a complete message waits for :meth:`complete_message`.

        Only ``deliver_chunks`` messages (no body here to check), and not a bodiless SEND
        without Content-Type: that is the binding request of RFC 4975 §5.4, nothing to verify.
        """
        return session.deliver_chunks and not (msg.total == 0 and msg.content_type is None)

    def _send_report(
        self, session: MsrpSession, msg: IncomingMessage, rng: ByteRange, status: int = 200
    ) -> None:
        """A REPORT (RFC 4975 §7.1.2) back along the request's From-Path: success (200) or
        failure (``Status: 000 <code>``)."""
        self._out += build_report(
            self.new_transaction_id(),
            to_path=msg.report_path,
            from_path=[session.local_uri],
            message_id=msg.message_id,
            byte_range=rng,
            status=status,
        )

    def _answer(
        self,
        head: ChunkHead,
        status: int,
        session: MsrpSession | None,
        comment: str | None = None,
    ) -> None:
        if head.method == "REPORT" or not response_wanted(head.failure_report, status):
            return
        local = session.local_uri if session is not None else None
        self._out += build_response(head, status, comment, local_uri=local)

    def _fail_chunk(self, exc: MsrpError) -> None:
        """Answer the current request with ``exc.status`` and drop the rest of its chunk."""
        cur = self._current
        if cur is None:
            return
        cur.ignore = True
        sid = cur.session.session_id if cur.session is not None else None
        self._problem(cur.head.transaction_id, sid, exc.status, exc.reason)
        if cur.head.is_request:
            self._answer(cur.head, exc.status, cur.session, exc.comment)
        self._abort_current(exc.reason, exc.status)

    def _abort_current(self, reason: str, status: int | None) -> None:
        cur = self._current
        if cur is None or cur.message is None or cur.session is None:
            return
        msg, cur.message = cur.message, None
        if cur.session.messages.pop(msg.message_id, None) is not None:
            self._events.append(
                MessageAborted(cur.session.session_id, msg.message_id, reason, status)
            )

    def _rejected(self, event: ChunkRejected) -> None:
        cur = self._current
        if cur is not None and cur.head.transaction_id == event.transaction_id:
            self._fail_chunk(MsrpError(event.status, event.reason))
            self._current = None
            return
        self._current = None
        self._problem(event.transaction_id, None, event.status, event.reason)
        if not event.is_request or event.to_path is None or event.from_path is None:
            return
        failure = {"no": FailureReport.NO, "partial": FailureReport.PARTIAL}.get(
            event.failure_report or "yes"
        )
        if response_wanted(failure, event.status):
            request = (event.transaction_id, event.to_path, event.from_path)
            self._out += build_response(request, event.status)

    def _problem(self, tid: str | None, sid: str | None, status: int, reason: str) -> None:
        self._events.append(ProtocolError(tid, sid, status, reason))
