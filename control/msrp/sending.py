"""The requests one MSRP connection sends, and their transactions (RFC 4975 §7.1).

Split from :mod:`control.msrp.connection` because sending and receiving share nothing but
the transaction book: the SENDs, bodiless SENDs and NICKNAMEs built here are tracked until
their response arrives (:meth:`RequestSender._transaction_answered`) or their transaction
timeout passes, which counts as a 408 (:meth:`RequestSender._expire_transactions`). The
receiving side lives in :class:`~control.msrp.connection.MsrpConnection`, which is a
``RequestSender``; both stay sans-IO: the bytes are returned for the owner to write.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import MsrpUsageError
from .events import ResponseReceived, TransactionTimedOut
from .message import ByteRange, ChunkHead, FailureReport, Flag, format_nickname, serialize_request
from .session import RandomSource, make_ident
from .uri import MsrpUri

__all__ = ["RequestSender"]


@dataclass(slots=True)
class _Transaction:
    session_id: str | None
    message_id: str | None
    method: str
    deadline: float
    report_timeout: bool  # False for Failure-Report: partial (silence means success)


class RequestSender:
    """Builds our requests and keeps their transactions until answered or timed out."""

    def __init__(self, *, random: RandomSource, transaction_timeout: float) -> None:
        self._random = random
        self.transaction_timeout = transaction_timeout
        self._txns: dict[str, _Transaction] = {}
        self._timers: list[tuple[float, str]] = []

    def _carries(self, session_id: str) -> bool:
        """Whether ``session_id`` is a session of this connection (events name only those)."""
        raise NotImplementedError

    def new_message_id(self) -> str:
        return make_ident(self._random)

    def new_transaction_id(self, body: bytes = b"") -> str:
        """A fresh transaction id whose end-line does not occur in ``body`` (RFC 4975 §7.1)."""
        for _ in range(16):
            tid = make_ident(self._random)
            if b"-------" + tid.encode("ascii") not in body and tid not in self._txns:
                return tid
        raise MsrpUsageError("random source keeps producing colliding transaction ids")

    def send_chunk(
        self,
        to_path: Sequence[MsrpUri],
        from_path: Sequence[MsrpUri],
        message_id: str,
        content_type: str,
        data: bytes,
        *,
        now: float,
        offset: int,
        total: int | None,
        flag: Flag = Flag.END,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
        headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """One SEND chunk carrying ``data`` at 0-based ``offset`` (RFC 4975 §7.1.1).

        A file sender calls this per piece it reads from disk; ``flag=Flag.ABORT`` with empty
        ``data`` aborts the message.
        """
        tid = self.new_transaction_id(data)
        byte_range = ByteRange(offset + 1, offset + len(data), total)
        lines = [("Message-ID", message_id), ("Byte-Range", str(byte_range))]
        if success_report:
            lines.append(("Success-Report", "yes"))
        if failure_report is not FailureReport.YES:
            lines.append(("Failure-Report", failure_report.value))
        lines += headers
        wire = serialize_request(
            tid, "SEND", to_path, from_path, lines, content_type=content_type, body=data, flag=flag
        )
        if failure_report is not FailureReport.NO:
            self._track(tid, from_path, message_id, "SEND", now, failure_report)
        return wire

    def send_message(
        self,
        to_path: Sequence[MsrpUri],
        from_path: Sequence[MsrpUri],
        message_id: str,
        content_type: str,
        body: bytes,
        *,
        now: float,
        chunk_size: int = 2048,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
        headers: Sequence[tuple[str, str]] = (),
    ) -> bytes:
        """A whole message as chunks of at most ``chunk_size`` body bytes.

        Every chunk but the last ends with ``+``, the last with ``$`` (RFC 4975 §7.1.1). The
        default of 2048 keeps a big message from holding up other traffic on a shared
        connection (§5.1: chunking exists so messages can interleave).
        """
        if chunk_size < 1:
            raise MsrpUsageError("chunk_size must be positive")
        total = len(body)
        out = []
        offset = 0
        while True:
            piece = body[offset : offset + chunk_size]
            last = offset + len(piece) >= total
            out.append(
                self.send_chunk(
                    to_path,
                    from_path,
                    message_id,
                    content_type,
                    piece,
                    now=now,
                    offset=offset,
                    total=total,
                    flag=Flag.END if last else Flag.CONTINUE,
                    success_report=success_report,
                    failure_report=failure_report,
                    headers=headers,
                )
            )
            offset += len(piece)
            if last:
                return b"".join(out)

    def send_empty(
        self,
        to_path: Sequence[MsrpUri],
        from_path: Sequence[MsrpUri],
        message_id: str,
        *,
        now: float,
    ) -> bytes:
        """A bodiless SEND (RFC 4975 §5.4, §7.1.1 ``Byte-Range: 1-0/0``).

        The active end sends it at once on a new connection so the passive end learns which
        session the connection belongs to; its 200 (a :class:`ResponseReceived`) proves it.
        """
        tid = self.new_transaction_id()
        lines = [("Message-ID", message_id), ("Byte-Range", str(ByteRange(1, 0, 0)))]
        wire = serialize_request(tid, "SEND", to_path, from_path, lines)
        self._track(tid, from_path, message_id, "SEND", now, FailureReport.YES)
        return wire

    def send_nickname(
        self,
        to_path: Sequence[MsrpUri],
        from_path: Sequence[MsrpUri],
        nickname: str,
        *,
        now: float,
    ) -> bytes:
        """A NICKNAME request (RFC 7701 §6.1) with its Use-Nickname header."""
        tid = self.new_transaction_id()
        wire = serialize_request(
            tid, "NICKNAME", to_path, from_path, [("Use-Nickname", format_nickname(nickname))]
        )
        self._track(tid, from_path, None, "NICKNAME", now, FailureReport.YES)
        return wire

    def _track(
        self,
        tid: str,
        from_path: Sequence[MsrpUri],
        message_id: str | None,
        method: str,
        now: float,
        failure_report: FailureReport,
    ) -> None:
        local = from_path[0].session_id if from_path else None
        session_id = local if local is not None and self._carries(local) else None
        deadline = now + self.transaction_timeout
        self._txns[tid] = _Transaction(
            session_id, message_id, method, deadline, failure_report is FailureReport.YES
        )
        heapq.heappush(self._timers, (deadline, tid))

    def _next_transaction_deadline(self) -> float | None:
        while self._timers:
            deadline, tid = self._timers[0]
            txn = self._txns.get(tid)
            if txn is not None and txn.deadline == deadline:
                return deadline
            heapq.heappop(self._timers)
        return None

    def _expire_transactions(self, now: float) -> list[TransactionTimedOut]:
        """No response in time counts as a 408 (RFC 4975 status table); a request sent with
        ``Failure-Report: partial`` times out silently, since silence means success there."""
        expired = []
        while self._timers and self._timers[0][0] <= now:
            deadline, tid = heapq.heappop(self._timers)
            txn = self._txns.get(tid)
            if txn is None or txn.deadline != deadline:
                continue
            del self._txns[tid]
            if txn.report_timeout:
                expired.append(TransactionTimedOut(txn.session_id, tid, txn.message_id, txn.method))
        return expired

    def _transaction_answered(self, head: ChunkHead) -> ResponseReceived | None:
        txn = self._txns.pop(head.transaction_id, None)
        if txn is None:
            return None  # late (after its timeout) or not ours: nothing to tell
        assert head.status is not None
        return ResponseReceived(
            txn.session_id,
            head.transaction_id,
            txn.message_id,
            txn.method,
            head.status,
            head.comment,
        )
