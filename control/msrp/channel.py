"""One MSRP session as an application holds it (:class:`MsrpChannel`), apart from the
connections and listeners of :mod:`control.msrp.transport` that carry it.

A channel outlives the connection it rides on for a moment (it reports the failure); the
transport binds and unbinds it, so the two refer to each other only through the methods
named ``_attached``/``_deliver``/``_forget``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .events import (
    ConnectionFailed,
    Event,
    MessageReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from .message import ByteRange, FailureReport, Flag
from .report import build_report
from .session import MsrpSession
from .uri import MsrpUri

if TYPE_CHECKING:
    from .transport import MsrpTransport, _Connection

__all__ = ["MsrpChannel", "MsrpConnectError"]

log = logging.getLogger("chorus.msrp.transport")


class MsrpConnectError(ConnectionError):
    """The session could not be connected (refused, timed out, or the peer never came)."""


class MsrpChannel:
    """One MSRP session as the application sees it: send, read events, close.

    Events are the core's (:class:`MessageReceived`, :class:`ReportReceived`,
    :class:`ResponseReceived`, :class:`MessageAborted`, :class:`TransactionTimedOut`,
    :class:`NicknameRequested`, :class:`ProtocolError`) plus :class:`ConnectionFailed` when the
    connection is lost. The bodiless SEND that binds a connection, and its 200, never show.
    """

    def __init__(
        self,
        owner: MsrpTransport,
        session: MsrpSession,
        remote_path: Sequence[MsrpUri],
        *,
        active: bool,
    ) -> None:
        self._owner = owner
        self.session = session
        self.remote_path = tuple(remote_path)
        self.active = active
        loop = asyncio.get_running_loop()
        self.connected: asyncio.Future[None] = loop.create_future()
        self.connected.add_done_callback(_retrieve)
        self.closed = False
        self.failure: str | None = None
        self._conn: _Connection | None = None
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._bind_message_id: str | None = None
        self._shared_bind = False  # our binding SEND went out on a connection already in use
        self._rebound = False  # ... and it closed before the answer: bound again elsewhere
        clock = owner.clock
        self._deadline = clock.call_at(
            clock.time() + owner.connect_timeout, self._connect_timed_out
        )

    @property
    def local_uri(self) -> MsrpUri:
        return self.session.local_uri

    def set_remote_path(self, remote_path: Sequence[MsrpUri]) -> None:
        """The peer's a=path, learnt after opening (a passive offerer reading the answer)."""
        self.remote_path = tuple(remote_path)
        self.session.remote_path = self.remote_path

    @property
    def session_id(self) -> str:
        return self.session.session_id

    @property
    def from_path(self) -> tuple[MsrpUri, ...]:
        return (self.session.local_uri,)

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(asyncio.shield(self.connected), timeout)

    # ---- sending ------------------------------------------------------------------------

    def _live(self) -> _Connection:
        if self._conn is None or self.closed:
            raise MsrpConnectError(self.failure or "MSRP session not connected")
        return self._conn

    def send_message(
        self,
        content_type: str,
        body: bytes,
        *,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
        headers: Sequence[tuple[str, str]] = (),
        message_id: str | None = None,
        chunk_size: int = 2048,
    ) -> str:
        """Write a whole message (chunked, RFC 4975 §5.1); returns its Message-ID."""
        conn = self._live()
        mid = message_id or conn.core.new_message_id()
        wire = conn.core.send_message(
            self.remote_path,
            self.from_path,
            mid,
            content_type,
            body,
            now=conn.clock.time(),
            chunk_size=chunk_size,
            success_report=success_report,
            failure_report=failure_report,
            headers=headers,
        )
        conn.write(wire)
        conn.owner.counters.messages_sent += 1
        return mid

    def send_chunk(
        self,
        message_id: str,
        content_type: str,
        data: bytes,
        *,
        offset: int,
        total: int | None,
        flag: Flag = Flag.END,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """One chunk of a message (file senders read and send piece by piece)."""
        conn = self._live()
        conn.write(
            conn.core.send_chunk(
                self.remote_path,
                self.from_path,
                message_id,
                content_type,
                data,
                now=conn.clock.time(),
                offset=offset,
                total=total,
                flag=flag,
                success_report=success_report,
                failure_report=failure_report,
                headers=headers,
            )
        )
        if flag is Flag.END:
            conn.owner.counters.messages_sent += 1

    def send_nickname(self, nickname: str) -> None:
        conn = self._live()
        conn.write(
            conn.core.send_nickname(
                self.remote_path, self.from_path, nickname, now=conn.clock.time()
            )
        )

    def send_report(self, message_id: str, byte_range: ByteRange, status: int) -> None:
        """A REPORT about a message the peer sent on this session (RFC 4975 §7.1.2): a relaying
        application (a chat room) tells the sender a delivery beyond us failed. It goes to the
        peer's path, like the message's From-Path; REPORTs are never answered."""
        conn = self._live()
        conn.write(
            build_report(
                conn.core.new_transaction_id(),
                to_path=self.remote_path,
                from_path=self.from_path,
                message_id=message_id,
                byte_range=byte_range,
                status=status,
            )
        )

    def respond(self, transaction_id: str, status: int, comment: str | None = None) -> None:
        """Answer a request the core left to us (NICKNAME)."""
        conn = self._live()
        conn.write(conn.core.respond(transaction_id, status, comment))

    def complete_message(
        self, message_id: str, status: int = 200, comment: str | None = None
    ) -> None:
        """Give the verdict on a message received ``awaiting_completion`` (a file): 200, or
        the failure (400 ``hash mismatch`` …) answered to its last chunk instead of a 200
        (RFC 4975 §7.1.1, §7.1.2; see :meth:`MsrpConnection.complete_message`).

        Once the session is closed there is nothing to answer on: a response only goes back
        on the connection its request came on, so this does nothing then.
        """
        conn = self._conn
        if conn is None or self.closed or conn.closing:
            return
        conn.write(conn.core.complete_message(self.session_id, message_id, status, comment))

    async def drain(self) -> None:
        """Wait while the connection's write buffer is over its high-water mark."""
        if self._conn is not None:
            await self._conn.drain()

    # ---- receiving ----------------------------------------------------------------------

    async def next_event(self) -> Event:
        return await self._queue.get()

    def events(self) -> list[Event]:
        """Every event already queued, without waiting."""
        out = []
        while not self._queue.empty():
            out.append(self._queue.get_nowait())
        return out

    def __aiter__(self) -> MsrpChannel:
        return self

    async def __anext__(self) -> Event:
        if self.closed and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    def _deliver(self, event: Event) -> None:
        match event:
            case MessageReceived(size=0, content_type=None):
                return  # the peer's binding SEND (RFC 4975 §5.4)
            case ResponseReceived(message_id=mid) | TransactionTimedOut(message_id=mid) if (
                mid is not None and mid == self._bind_message_id
            ):
                self._bind_message_id = None
                if isinstance(event, ResponseReceived) and event.status == 200:
                    self._set_connected()
                else:
                    self._fail(f"binding SEND answered {event.status}")
                return
        self._queue.put_nowait(event)

    # ---- life cycle ---------------------------------------------------------------------

    def _attached(self, conn: _Connection) -> None:
        self._conn = conn

    @property
    def _rebind_elsewhere(self) -> bool:
        """Our connection closed while our binding SEND on it, a shared connection, was
        unanswered: connect again rather than fail (MsrpTransport._connect)."""
        return (
            self.active
            and self._shared_bind
            and self._bind_message_id is not None
            and not self.connected.done()
            and not self.closed
        )

    def _detached_for_rebind(self) -> None:
        self._conn = None
        self._bind_message_id = None
        self._shared_bind = False
        self._rebound = True

    def _set_connected(self) -> None:
        self._deadline.cancel()
        if not self.connected.done():
            self.connected.set_result(None)

    def _connect_timed_out(self) -> None:
        if not self.connected.done():
            self._fail("MSRP peer did not connect in time")

    def _fail(self, reason: str) -> None:
        """Connecting failed or the connection was lost: tell the application, close."""
        if self.closed:
            return
        self.failure = reason
        if not self.connected.done():
            self.connected.set_exception(MsrpConnectError(reason))
        self._queue.put_nowait(ConnectionFailed(reason))
        self.close()

    def close(self) -> None:
        """End the session; its connection closes too when no other session uses it."""
        if self.closed:
            return
        self.closed = True
        self._deadline.cancel()
        if self.failure is None:
            self.failure = "closed"
            self._queue.put_nowait(ConnectionFailed("closed"))  # wakes a reader; ends iteration
        if not self.connected.done():
            self.connected.set_exception(MsrpConnectError(self.failure))
        self._owner._forget(self)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.detach(self)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()  # an unawaited failure is not an "exception never retrieved"
