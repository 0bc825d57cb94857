"""Writing a room's chat to one receiver: a bounded queue and one writer task per chat session.

The room never waits for a receiver. :meth:`ChatOutlet.push` only queues; the outlet's task
writes in order and waits on the connection's back-pressure (``drain``). A receiver whose queue
fills up cannot keep up with the room: it is dropped (its chat stream closed, one log line)
instead of holding anything up or growing without bound. Every delivery that fails on the way
(error response, transaction timeout, 481, the session closing with it queued or unanswered)
is handed to ``on_failure`` with the message it came from, so the sender gets a failure REPORT
(RFC 4975 §7.1.2) when its Failure-Report asked for one: never silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from control.msrp.message import FailureReport

from .chat import ChatSessionId, Delivery

__all__ = ["ChatChannel", "ChatOutlet", "Origin"]

log = logging.getLogger("chorus.conference.chat")

QUEUE_CAPACITY = 1000  # deliveries waiting for one receiver: 50 bursts of the default 20/s
IN_FLIGHT_MEMORY = 4096  # unanswered SENDs remembered for their failure REPORT


class ChatChannel(Protocol):
    """What the outlet needs of an MSRP chat session (MsrpChannel has it)."""

    @property
    def closed(self) -> bool: ...

    def send_message(
        self,
        content_type: str,
        body: bytes,
        *,
        success_report: bool = ...,
        failure_report: FailureReport = ...,
    ) -> str: ...

    async def drain(self) -> None: ...

    async def wait_connected(self, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Origin:
    """The message a delivery was made from: who to tell if it fails."""

    session: ChatSessionId
    message_id: str
    failure_report: FailureReport
    size: int


FailureHandler = Callable[[Origin, int, str], None]


class ChatOutlet:
    def __init__(
        self,
        session: ChatSessionId,
        channel: ChatChannel,
        *,
        on_failure: FailureHandler,
        on_overflow: Callable[[ChatSessionId], None],
        capacity: int = QUEUE_CAPACITY,
    ) -> None:
        self.session = session
        self.channel = channel
        self.on_failure = on_failure
        self.on_overflow = on_overflow
        self._queue: asyncio.Queue[tuple[Delivery, Origin | None]] = asyncio.Queue(capacity)
        self._in_flight: OrderedDict[str, Origin] = OrderedDict()
        self.closed = False
        self.sent = 0

    def push(self, delivery: Delivery, origin: Origin | None = None) -> None:
        """Queue one delivery; a full queue drops this receiver (see the module doc)."""
        if self.closed:
            if origin is not None:
                self.on_failure(origin, 481, "receiver left")
            return
        try:
            self._queue.put_nowait((delivery, origin))
        except asyncio.QueueFull:
            log.warning(
                "chat session %s cannot keep up (%d deliveries queued): dropping it",
                self.session,
                self._queue.qsize(),
            )
            if origin is not None:
                self.on_failure(origin, 413, "receiver cannot keep up")
            self.close()  # what it holds fails back now; later pushes fail without a word
            self.on_overflow(self.session)

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    async def run(self) -> None:
        """Write until closed; every error is logged here, none reaches the loop."""
        try:
            try:
                await self.channel.wait_connected()  # replay waits for the peer's connection
            except ConnectionError as exc:  # MsrpConnectError: never connected
                log.info("chat session %s did not connect: %s", self.session, exc)
                return
            while not self.closed:
                delivery, origin = await self._queue.get()
                if self.closed:
                    self._fail(origin, 481, "receiver left")
                    break
                try:
                    message_id = self.channel.send_message(delivery.content_type, delivery.body)
                except ConnectionError as exc:  # MsrpConnectError: not (or no longer) connected
                    self._fail(origin, 481, str(exc))
                    continue
                self.sent += 1
                if origin is not None:
                    self._in_flight[message_id] = origin
                    while len(self._in_flight) > IN_FLIGHT_MEMORY:
                        self._in_flight.popitem(last=False)
                await self.channel.drain()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chat writer of %s failed", self.session)
        finally:
            self.close()

    def answered(self, message_id: str | None, status: int, comment: str | None = None) -> None:
        """A response (or a timeout, 408) to one of our SENDs."""
        if message_id is None:
            return
        origin = self._in_flight.pop(message_id, None)
        if status != 200:
            self._fail(origin, status, comment or "receiver refused it")

    def _fail(self, origin: Origin | None, status: int, reason: str) -> None:
        if origin is not None:
            self.on_failure(origin, status, reason)

    def close(self) -> None:
        """Stop writing (the owner cancels :meth:`run`); what was queued or unanswered fails
        (481) back to its senders."""
        if self.closed:
            return
        self.closed = True
        pending = list(self._in_flight.values())
        self._in_flight.clear()
        while not self._queue.empty():
            _, origin = self._queue.get_nowait()
            if origin is not None:
                pending.append(origin)
        for origin in pending:
            self.on_failure(origin, 481, "receiver left")
