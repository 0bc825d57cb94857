"""A room's chat on the wire: the asyncio layer around :class:`~control.conference.chat.ChatCore`.

Per chat session: the MSRP validator (the core's verdict before the last chunk is answered,
RFC 4975 §7.3.1; the message is stored before its 200 goes out, so a message answered 200
survives a ``kill -9``), one reader task (messages, NICKNAME, responses to what we sent) and an
outlet (:mod:`control.conference.fanout`). History is replayed to each new chat stream before
anything live. Every task catches and logs its own failure once: nothing reaches the loop.
A screen-sharing frame goes to ``screens`` (the conference's screen board) from the validator,
so a frame the board refuses is answered 400/413 on its last chunk; it never reaches the room.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from control.media.engine import ParticipantId
from control.msrp.cpim import CpimMessage
from control.msrp.errors import MsrpError
from control.msrp.events import (
    ConnectionFailed,
    Event,
    MessageReceived,
    NicknameRequested,
    ReportReceived,
    ResponseReceived,
    TransactionTimedOut,
)
from control.msrp.message import ByteRange, FailureReport, parse_failure_report
from control.store import HistoryStore, StoredMessage

from .chat import ChatCore, ChatMember, ChatSessionId, Delivery, Routed
from .fanout import QUEUE_CAPACITY, ChatChannel, ChatOutlet, Origin
from .notices import NoticeKind

__all__ = ["HistoryPolicy", "RoomChat", "ScreenSink", "SessionChannel"]

log = logging.getLogger("chorus.conference.chat")


class SessionChannel(ChatChannel, Protocol):
    """A chat session as the room reads it: the outlet's writing side plus events."""

    async def next_event(self) -> Event: ...

    def respond(self, transaction_id: str, status: int, comment: str | None = None) -> None: ...


@runtime_checkable
class ReportingChannel(Protocol):
    """A channel that can send a REPORT about a message it received (RFC 4975 §7.1.2)."""

    def send_report(self, message_id: str, byte_range: ByteRange, status: int) -> None: ...


@dataclass(frozen=True, slots=True)
class HistoryPolicy:
    messages: int = 20  # [conference] history_messages
    max_age: float = 604800.0  # [conference] history_max_age, seconds


ScreenSink = Callable[[ChatMember, CpimMessage], None]
"""Where a chat session's screen frames go; raises MsrpError (e.g. ScreenError) to refuse."""


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Attached:
    member: ChatMember
    channel: SessionChannel
    outlet: ChatOutlet
    pending: deque[Routed]  # validated, waiting for their MessageReceived
    tasks: list[asyncio.Task[None]]


class RoomChat:
    def __init__(
        self,
        core: ChatCore,
        *,
        store: HistoryStore | None,
        history: HistoryPolicy = HistoryPolicy(),
        token: Callable[[], str],
        on_closed: Callable[[ChatSessionId], None] = lambda _sid: None,
        screens: ScreenSink | None = None,
        on_change: Callable[[], None] = lambda: None,
        wall: Callable[[], datetime] = utc_now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.screens = screens
        self.store = store
        self.history = history
        self.token = token
        self.on_closed = on_closed
        self.on_change = on_change  # a nickname changed (conference-info shows it)
        self.wall = wall
        self.clock = clock
        self.sessions: dict[ChatSessionId, _Attached] = {}

    # --- chat sessions ---------------------------------------------------------------------

    def validator(self, session: ChatSessionId) -> Callable[[str | None, bytes], None]:
        """The MSRP validator of one chat session (install it when opening the session)."""

        def validate(content_type: str | None, body: bytes) -> None:
            self.validate(session, content_type, body)

        return validate

    def attach(
        self,
        member: ChatMember,
        channel: SessionChannel,
        *,
        history_limit: int | None = None,
        history_max_age: float | None = None,
    ) -> int:
        """A new chat stream: history first, then whatever the room says from now on.
        ``history_limit`` / ``history_max_age`` narrow the room's history policy for this
        stream (a MUC joiner's ``<history/>``, XEP-0045 §7.2.15); returns how many history
        messages were queued for it."""
        outlet = ChatOutlet(
            member.session,
            channel,
            on_failure=self._delivery_failed,
            on_overflow=self._overflow,
            # Room for the replay and a full burst from everyone on top of the usual backlog:
            # only a receiver that really stopped reading fills it.
            capacity=QUEUE_CAPACITY + max(self.history.messages, 0) + 2 * self.core.limits.burst,
        )
        attached = _Attached(member, channel, outlet, deque(), [])
        self.sessions[member.session] = attached
        self.core.add(member)
        replay = self.core.replay(member.session, self._recent(history_limit, history_max_age))
        for delivery in replay:
            outlet.push(delivery)
        loop = asyncio.get_running_loop()
        attached.tasks = [
            loop.create_task(outlet.run(), name=f"chat-writer-{member.session}"),
            loop.create_task(self._read(attached), name=f"chat-reader-{member.session}"),
        ]
        return len(replay)

    def detach(self, session: ChatSessionId) -> ChatMember | None:
        attached = self.sessions.pop(session, None)
        if attached is None:
            return None
        self.core.remove(session)
        attached.outlet.close()
        attached.channel.close()
        current = asyncio.current_task()
        for task in attached.tasks:
            if task is not current:
                task.cancel()
        return attached.member

    def close(self) -> None:
        for session in list(self.sessions):
            self.detach(session)

    def _recent(
        self, limit: int | None = None, max_age: float | None = None
    ) -> list[StoredMessage]:
        limit = self.history.messages if limit is None else min(limit, self.history.messages)
        age = self.history.max_age if max_age is None else min(max_age, self.history.max_age)
        if self.store is None or limit <= 0:
            return []
        try:
            return self.store.recent(self.core.room_id, limit=limit, max_age=age, now=self.wall())
        except Exception:
            log.exception("reading the history of %s failed: none replayed", self.core.room_id)
            return []

    # --- notices and SIP MESSAGE -----------------------------------------------------------

    def notice(
        self,
        kind: NoticeKind,
        text: str,
        *,
        exclude_participant: ParticipantId | None = None,
        details: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Send a room notice to every chat session but the excluded participant's."""
        notices = self.core.notice(
            kind, text, self.wall(), exclude_participant=exclude_participant, details=details
        )
        self._push(notices)

    def pager(
        self, sender_uri: str, display_name: str | None, content_type: str, body: bytes
    ) -> int:
        """A SIP MESSAGE to the room (RFC 3428): relayed as public; 200 when it reached a
        chat session, 202 when there was none. SipError for what cannot be relayed."""
        routed = self.core.receive_pager(
            sender_uri,
            display_name,
            content_type,
            body,
            wall=self.wall(),
            message_id=self.token(),
            now=self.clock(),
        )
        self._store(routed)
        self._push(routed.deliveries)
        return 200 if routed.deliveries else 202

    # --- receiving -------------------------------------------------------------------------

    def validate(self, session: ChatSessionId, content_type: str | None, body: bytes) -> None:
        """The check of one complete message (see the module doc); MsrpError refuses it."""
        if content_type is None and not body:
            return  # the binding SEND (RFC 4975 §5.4): nothing to route
        attached = self.sessions.get(session)
        if attached is None:
            raise MsrpError(481, "chat session not in the room")
        routed = self.core.receive(
            session, content_type, body, now=self.clock(), wall=self.wall(), message_id=self.token()
        )
        if routed.screen is not None:
            if self.screens is not None:  # without a board a frame is taken and dropped
                self.screens(attached.member, routed.screen)
            attached.pending.append(routed)  # nothing to deliver; keeps pending in step
            return
        if routed.not_found and not routed.deliveries:
            raise MsrpError(404, "recipient not in this room")  # RFC 7701 §7.1
        self._store(routed)
        attached.pending.append(routed)

    def _store(self, routed: Routed) -> None:
        if routed.record is None or self.store is None:
            return
        try:
            self.store.append(routed.record)
        except Exception:
            # Chat goes on without history rather than stopping the room; loud in the log.
            log.exception("storing a message of %s failed", self.core.room_id)

    async def _read(self, attached: _Attached) -> None:
        session = attached.member.session
        reason = "closed"
        try:
            while True:
                event = await attached.channel.next_event()
                if isinstance(event, ConnectionFailed):
                    reason = event.reason
                    break
                self._event(attached, event)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chat reader of %s failed", session)
            reason = "reader failed"
        log.info("chat session %s in %s ended: %s", session, self.core.room_id, reason)
        if self.sessions.get(session) is attached:
            self.detach(session)
            try:
                self.on_closed(session)
            except Exception:
                log.exception("chat close handler of %s failed", session)

    def _event(self, attached: _Attached, event: Event) -> None:
        match event:
            case MessageReceived(message_id=message_id, headers=headers, size=size):
                if not attached.pending:
                    return  # the binding SEND, or nothing the validator passed
                routed = attached.pending.popleft()
                origin = Origin(attached.member.session, message_id, _failure_report(headers), size)
                self._push(routed.deliveries, origin)
                for uri in routed.not_found:
                    self._delivery_failed(origin, 404, f"{uri} is not in this room")
            case NicknameRequested(transaction_id=tid, nickname=nickname):
                try:
                    notices = self.core.set_nickname(attached.member.session, nickname, self.wall())
                except MsrpError as exc:
                    attached.channel.respond(tid, exc.status, exc.reason)
                    return
                attached.channel.respond(tid, 200)
                self._push(notices)
                self.on_change()
            case ResponseReceived(message_id=mid, status=status, comment=comment):
                attached.outlet.answered(mid, status, comment)
            case TransactionTimedOut(message_id=mid, status=status):
                attached.outlet.answered(mid, status, "no response")
            case ReportReceived(message_id=mid, status=status) if status != 200:
                attached.outlet.answered(mid, status, "failure REPORT")
            case _:
                pass

    # --- sending ---------------------------------------------------------------------------

    def _push(
        self, deliveries: tuple[Delivery, ...] | list[Delivery], origin: Origin | None = None
    ) -> None:
        for delivery in deliveries:
            attached = self.sessions.get(delivery.session)
            if attached is None:
                if origin is not None:
                    self._delivery_failed(origin, 481, "receiver left")
                continue
            attached.outlet.push(delivery, origin)

    def _delivery_failed(self, origin: Origin, status: int, reason: str) -> None:
        """A failure REPORT to the sender when its Failure-Report asked (RFC 4975 §7.1.2)."""
        if origin.failure_report is FailureReport.NO:
            return
        attached = self.sessions.get(origin.session)
        log.info(
            "delivery of %s from %s failed (%d %s)",
            origin.message_id,
            origin.session,
            status,
            reason,
        )
        if attached is None or attached.channel.closed:
            return
        channel = attached.channel
        if not isinstance(channel, ReportingChannel):
            log.warning(
                "cannot send a failure REPORT on %s: channel has no send_report", origin.session
            )
            return
        try:
            channel.send_report(origin.message_id, ByteRange(1, origin.size, origin.size), status)
        except Exception:
            log.exception("failure REPORT to %s failed", origin.session)

    def _overflow(self, session: ChatSessionId) -> None:
        """A receiver that cannot keep up: closed after this fan-out, never mid-iteration."""
        asyncio.get_running_loop().call_soon(self._drop, session)

    def _drop(self, session: ChatSessionId) -> None:
        attached = self.sessions.get(session)
        if attached is not None:
            attached.channel.close()  # its reader sees ConnectionFailed and detaches it


def _failure_report(headers: tuple[tuple[str, str], ...]) -> FailureReport:
    for name, value in headers:
        if name.lower() == "failure-report":
            try:
                return parse_failure_report(value)
            except MsrpError:
                return FailureReport.YES
    return FailureReport.YES
