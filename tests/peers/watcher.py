"""A conference-info watcher in Python (RFC 4575 over RFC 6665): one SUBSCRIBE over UDP on
127.0.0.1, every NOTIFY answered 200 and fed to the project's subscriber core
(control/sip/subscription.py SubscriberCore) and to a :class:`~tests.peers.confinfo.Rebuilder`;
every body is checked against the RFC 4575 schema as it comes.

It is its own small UDP endpoint rather than a UserAgent: a NOTIFY may come before the
SUBSCRIBE's 200 (RFC 6665 §4.1.2.4), when a UA would not know the dialog yet; here a NOTIFY is
matched by Call-ID and our From tag alone. ``async with ConferenceWatcher(port, room) as w:``
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from types import TracebackType

from lxml import etree

from control.sip.message import Request, Response, parse_message
from control.sip.subscription import (
    EventKey,
    SubscriberCore,
    SubState,
    parse_expires,
    parse_subscription_state,
)
from control.xmlsafe import parse
from tests.peers.confinfo import ConfModel, Rebuilder
from tests.peers.wait import wait_until

__all__ = ["ConferenceWatcher"]

HOST = "127.0.0.1"
SCHEMA = etree.XMLSchema(
    etree.parse(str(Path(__file__).resolve().parents[1] / "data" / "conference-info.xsd"))
)


class ConferenceWatcher(asyncio.DatagramProtocol):
    def __init__(self, server_port: int, room: str, *, expires: int = 600) -> None:
        self.server_port = server_port
        self.room = room
        self.core = SubscriberCore(EventKey("conference"), expires)
        self.rebuilt = Rebuilder()
        self.documents: list[bytes] = []
        self.states: list[str] = []  # Subscription-State of each NOTIFY, in order
        self.status: int | None = None  # the SUBSCRIBE's final status
        self.errors: list[str] = []  # what a faithful watcher could not apply
        self.call_id = secrets.token_hex(10)
        self.tag = secrets.token_hex(4)
        self.cseq = 0
        self.remote_tag: str | None = None  # the notifier's tag: the dialog (RFC 6665 §4.1.2.1)
        self.transport: asyncio.DatagramTransport | None = None
        self._retransmit: asyncio.Task[None] | None = None

    @property
    def model(self) -> ConfModel:
        return self.rebuilt.model

    @property
    def ended(self) -> bool:
        return self.core.terminated

    async def __aenter__(self) -> ConferenceWatcher:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(HOST, 0))
        self.subscribe(self.core.subscribe_expires())
        assert await wait_until(lambda: self.status is not None, timeout=20), "no answer"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self.ended and self.status == 200 and exc_type is None:
            self.subscribe(self.core.unsubscribe())
            await wait_until(lambda: self.ended, timeout=20)
        if self._retransmit is not None:
            self._retransmit.cancel()
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    # --- sending ---------------------------------------------------------------------------

    def subscribe(self, expires: int) -> None:
        """SUBSCRIBE (out of dialog the first time; the notifier's tag once known),
        retransmitted every 0.5 s until answered (RFC 3261 §17.1.2.2 Timer E, simplified)."""
        self.cseq += 1
        self.status = None
        to = f"<sip:{self.room}@{HOST}:{self.server_port}>"
        if self.remote_tag is not None:
            to += f";tag={self.remote_tag}"
        lines = [
            f"SUBSCRIBE sip:{self.room}@{HOST}:{self.server_port} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch=z9hG4bK{secrets.token_hex(8)};rport",
            f'From: "Watcher" <sip:watcher@{HOST}>;tag={self.tag}',
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} SUBSCRIBE",
            f"Contact: <sip:watcher@{HOST}:{self.port}>",
            "Max-Forwards: 70",
            "Event: conference",
            "Accept: application/conference-info+xml",
            f"Expires: {expires}",
            "Content-Length: 0",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if self._retransmit is not None:
            self._retransmit.cancel()
        self._retransmit = asyncio.get_running_loop().create_task(self._send_until_answered(data))

    async def _send_until_answered(self, data: bytes) -> None:
        assert self.transport is not None
        for _ in range(10):
            self.transport.sendto(data, (HOST, self.server_port))
            await asyncio.sleep(0.5)
            if self.status is not None:
                return

    # --- receiving -------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self._response(message)
        elif message.method == "NOTIFY":
            self._notify(message, addr)

    def _response(self, response: Response) -> None:
        if response.call_id != self.call_id or response.status < 200 or self.status is not None:
            return
        self.status = response.status
        if response.to.tag and self.remote_tag is None and response.status < 300:
            self.remote_tag = response.to.tag
        expires = parse_expires(response.headers.get("Expires"))
        loop = asyncio.get_running_loop()
        self.core.response_received(response.status, expires, loop.time())

    def _notify(self, request: Request, addr: tuple[str | int, ...]) -> None:
        ours = request.call_id == self.call_id and request.to.tag == self.tag
        if ours and self.remote_tag is None:
            self.remote_tag = request.from_.tag
        state = parse_subscription_state(request.headers.get("Subscription-State"))
        status = (
            self.core.notify_received(state, asyncio.get_running_loop().time()) if ours else 481
        )
        if status == 200:
            self.states.append(state.header())
            if request.body:
                self._document(request.body)
        response = request.make_response(status)
        assert self.transport is not None
        self.transport.sendto(response.serialize(), (str(addr[0]), int(addr[1])))
        if state.state is SubState.TERMINATED:
            self.core.next_event()

    def _document(self, body: bytes) -> None:
        try:
            SCHEMA.assertValid(parse(body))
            self.rebuilt.apply(body)
        except Exception as exc:  # noqa: BLE001 - recorded for the test to report
            self.errors.append(f"document {len(self.documents) + 1}: {exc}")
        self.documents.append(body)
