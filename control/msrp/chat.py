"""A chat stream as an offering application uses it: our m-line, the answer, send, receive.

The offerer's side of RFC 4975 §8 with RFC 6135 roles: :meth:`ChatStream.offer_media` makes the
m=message line (a fresh session URI, ``a=setup:actpass`` by default), :meth:`ChatStream.answered`
reads the answer's m-line and opens the MSRP session, connecting when the answer says
``passive`` (or says nothing: RFC 4975's offerer connects) and waiting for the peer when it says
``active``. Then ``await stream.send(...)`` and ``await stream.receive()``, which hands out the
core's events (``MessageReceived``, ``ReportReceived``, ``ResponseReceived``, …).
"""

from __future__ import annotations

from collections.abc import Sequence

from control.sip.sdp import Direction, MediaDescription

from .events import Event
from .message import FailureReport
from .sdp import MsrpMedia, Setup, msrp_media, offer_is_active, parse_msrp_media
from .transport import MsrpChannel, MsrpTransport
from .uri import MsrpUri

__all__ = ["ChatStream"]


class ChatStream:
    def __init__(
        self,
        transport: MsrpTransport,
        *,
        secure: bool = True,
        accept_types: Sequence[str] = ("message/cpim", "text/plain"),
        accept_wrapped_types: Sequence[str] = ("*",),
        setup: Setup | None = Setup.ACTPASS,
        chatroom: Sequence[str] = (),
    ) -> None:
        self.transport = transport
        self.secure = secure
        self.accept_types = tuple(accept_types)
        self.accept_wrapped_types = tuple(accept_wrapped_types)
        self.setup = setup
        self.chatroom = tuple(chatroom)
        self.local_uri: MsrpUri = transport.local_uri(secure)
        self.remote: MsrpMedia | None = None
        self.channel: MsrpChannel | None = None

    def offer_media(self, direction: Direction = Direction.SENDRECV) -> MediaDescription:
        """Our m-line. When we may be the passive end, the session is registered now: the
        answerer may connect before its answer reaches us (RFC 6135 §4.2)."""
        passive_possible = self.setup in (Setup.ACTPASS, Setup.PASSIVE)
        if self.channel is None and passive_possible and self.transport.listener(self.secure):
            self.channel = self.transport.open(
                self.local_uri, None, active=False, accept_types=self.accept_types
            )
        return msrp_media(
            self.local_uri,
            self.accept_types,
            accept_wrapped_types=self.accept_wrapped_types,
            setup=self.setup,
            chatroom=self.chatroom,
            direction=direction,
        )

    def answered(self, answer: MediaDescription) -> MsrpChannel:
        """Open the session the answer's m-line describes (SdpError 488 if it is unusable)."""
        self.remote = parse_msrp_media(answer)
        active = offer_is_active(self.remote.setup) if self.setup is not None else True
        if self.setup is Setup.PASSIVE:
            active = False
        if self.channel is not None:
            if not active and not self.channel.closed:
                self.channel.set_remote_path(self.remote.path)
                return self.channel
            self.channel.close()
        self.channel = self.transport.open(
            self.local_uri,
            self.remote.path,
            active=active,
            accept_types=self.accept_types,
        )
        return self.channel

    def _open(self) -> MsrpChannel:
        if self.channel is None:
            raise RuntimeError("no answer yet: call answered() first")
        return self.channel

    async def wait_connected(self, timeout: float | None = None) -> None:
        await self._open().wait_connected(timeout)

    async def send(
        self,
        content_type: str,
        body: bytes,
        *,
        success_report: bool = False,
        failure_report: FailureReport = FailureReport.YES,
        headers: Sequence[tuple[str, str]] = (),
    ) -> str:
        """Write a message (waiting while the connection is congested); its Message-ID."""
        channel = self._open()
        message_id = channel.send_message(
            content_type,
            body,
            success_report=success_report,
            failure_report=failure_report,
            headers=headers,
        )
        await channel.drain()
        return message_id

    async def receive(self) -> Event:
        return await self._open().next_event()

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
