"""A chat participant for room tests: one SIP identity, its INVITEs with an MSRP chat m-line
(and optionally an RTP audio m-line), and everything its chat streams receive.

Built on the offering side Chorus already has: :class:`~tests.peers.sipclient.SipClient`
places the calls, :class:`~control.msrp.chat.ChatStream` makes the m=message line and opens
the MSRP session the answer describes (RFC 4975 §8, RFC 6135: the room answers passive, we
connect), :class:`~control.sip.sdp.SdpSession` keeps the origin version right across
re-INVITEs (RFC 3264 §8). Each person has an MSRP transport of their own, so two people
never share one TCP connection (one person's sessions do, RFC 4975 §7.3), just as two real
clients would not.

What a session receives is kept as :class:`Delivered` items, CPIM parsed; the responses to
our SENDs and the REPORTs about them are kept by Message-ID. Notices from the room carry
``chorus.Notice`` (namespace :data:`CHORUS_NS`), replayed history ``chorus.History: yes``;
:meth:`ChatSession.public` leaves both out.

:class:`RawChatSession` is the same participant on a socket of its own, writing MSRP bytes
exactly as given: for what other clients send (msrplib's unquoted ``Use-Nickname``, Blink's
bare-LF MIME part) that Chorus' own serializer would never write.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from control.msrp import (
    CpimAddress,
    CpimError,
    CpimMessage,
    FailureReport,
    MessageReceived,
    MsrpUri,
    ReportReceived,
    ResponseReceived,
    TransactionTimedOut,
    parse_cpim,
)
from control.msrp.chat import ChatStream
from control.msrp.events import ChunkData, ChunkEnded, ChunkStarted, ConnectionFailed
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE, ComposingState, IsComposing
from control.msrp.message import ChunkHead, Flag, serialize_request
from control.msrp.parser import ChunkParser
from control.msrp.report import build_response
from control.msrp.sdp import parse_msrp_media
from control.msrp.transport import MsrpChannel, MsrpTransport
from control.sip import sdp
from control.sip.message import Response
from control.sip.session import Session
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.streams import MediaKind
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.sipclient import SipClient, client_tls_context
from tests.peers.wait import wait_until

__all__ = [
    "CHATROOM",
    "CHORUS_NS",
    "ChatClient",
    "ChatSession",
    "Delivered",
    "RawChatSession",
    "ServerPorts",
    "uri_key",
]

CHORUS_NS = "urn:x-chorus:cpim"  # the room's own CPIM headers: Notice, History
CHATROOM = ("nickname", "private-messages")  # what Blink offers (RFC 7701 §5.1 a=chatroom)
HOST = "127.0.0.1"
LEAVE_TIMEOUT = 5.0  # seconds a closing client waits for each BYE


class ServerPorts(Protocol):
    """Where the server listens: a ChorusProcess has both."""

    sip_port: int
    tls_port: int


def uri_key(uri: str) -> tuple[str, str]:
    """``(user, host)`` of a SIP URI, for comparing identities whatever port or scheme
    (``sip:room@127.0.0.1`` and ``sips:room@127.0.0.1:5061`` name the same room)."""
    parsed = parse_uri(uri)
    if not isinstance(parsed, SipUri):
        return (uri, "")
    return ((parsed.user or "").lower(), parsed.host.lower())


@dataclass(frozen=True, slots=True)
class Delivered:
    """One message a chat stream received: the MSRP fields and, for CPIM, the parsed body."""

    message_id: str
    content_type: str | None
    body: bytes
    cpim: CpimMessage | None

    @property
    def sender(self) -> CpimAddress | None:
        return self.cpim.sender if self.cpim is not None else None

    @property
    def sender_key(self) -> tuple[str, str] | None:
        sender = self.sender
        return uri_key(sender.uri) if sender is not None else None

    @property
    def recipients(self) -> tuple[CpimAddress, ...]:
        return self.cpim.recipients if self.cpim is not None else ()

    @property
    def wrapped_type(self) -> str | None:
        """The content type inside CPIM, parameters cut (``text/plain``)."""
        if self.cpim is None or self.cpim.content_type is None:
            return None
        return self.cpim.content_type.split(";", 1)[0].strip().lower()

    @property
    def text(self) -> str:
        payload = self.cpim.body if self.cpim is not None else self.body
        return payload.decode("utf-8", errors="replace")

    @property
    def notice(self) -> str | None:
        """``joined``, ``left``, … for a room notice; None for anything a participant sent."""
        return self.cpim.value("Notice", CHORUS_NS) if self.cpim is not None else None

    @property
    def history(self) -> bool:
        if self.cpim is None:
            return False
        return (self.cpim.value("History", CHORUS_NS) or "").lower() == "yes"

    @property
    def datetime(self) -> datetime | None:
        return self.cpim.datetime if self.cpim is not None else None


def _delivered(event: MessageReceived) -> Delivered:
    body = event.body or b""
    cpim: CpimMessage | None = None
    if (event.content_type or "").lower().startswith("message/cpim"):
        try:
            cpim = parse_cpim(body)
        except CpimError as exc:
            raise AssertionError(f"the room sent CPIM we cannot parse ({exc}): {body!r}") from None
    return Delivered(event.message_id, event.content_type, body, cpim)


class _NamedSipClient(SipClient):
    """A SipClient that calls as ``"Display" <sip:user@127.0.0.1>``."""

    def __init__(self, user: str, display: str | None, transport: str) -> None:
        super().__init__(transport)
        self.user = user
        self.display = display

    def identity(self) -> NameAddr:
        return NameAddr(SipUri(host=HOST, user=self.user), self.display)


@dataclass
class _Slot:
    """One m-line of our offers, kept in place for every re-offer (RFC 3264 §8)."""

    kind: MediaKind  # AUDIO or CHAT
    media: sdp.MediaDescription


class ChatClient:
    """One person: a SIP identity (``sip:user@127.0.0.1``), an MSRP transport, and the
    sessions (INVITEs) they have in rooms. ``async with ChatClient("alice", "Alice") as a:``
    """

    def __init__(
        self, user: str, display: str | None = None, *, sip_transport: str = "udp"
    ) -> None:
        self.user = user
        self.display = display
        self.sip = _NamedSipClient(user, display, sip_transport)
        self.msrp = MsrpTransport()
        self.msrp.ssl_client = client_tls_context()
        self.sessions: list[ChatSession | RawChatSession] = []

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{HOST}"

    @property
    def address(self) -> CpimAddress:
        return CpimAddress(self.uri, self.display)

    async def __aenter__(self) -> ChatClient:
        await self.sip.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Best effort: a server already stopped would hold each BYE for Timer F (32 s).
        for session in list(self.sessions):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.leave(), LEAVE_TIMEOUT)
        with contextlib.suppress(Exception):
            await self.msrp.stop()
        await self.sip.__aexit__(None, None, None)

    async def invite(
        self, server: ServerPorts, room: str, offer: bytes
    ) -> tuple[Session, Response]:
        tls = self.sip.transport_name == "tls"
        port = server.tls_port if tls else server.sip_port
        scheme = "sips" if tls else "sip"
        session, response = await self.sip.call(f"{scheme}:{room}@{HOST}:{port}", offer, port)
        if session is None:
            raise AssertionError(
                f"{self.user}'s INVITE to {room} answered {response.status} {response.reason}"
            )
        return session, response

    async def join(
        self,
        server: ServerPorts,
        room: str,
        *,
        secure: bool = True,
        audio: RtpEndpoint | None = None,
        chat: bool = True,
        accept_wrapped_types: Sequence[str] = ("*",),
    ) -> ChatSession:
        """INVITE the room with (audio and) chat; returns once the MSRP session is up."""
        session = ChatSession(self, room, secure=secure, accept_wrapped_types=accept_wrapped_types)
        await session.start(server, audio=audio, chat=chat)
        self.sessions.append(session)
        return session


class ChatSession:
    """One INVITE of one person into a room: its chat stream, its audio endpoint if any, and
    what the chat received."""

    def __init__(
        self,
        client: ChatClient,
        room: str,
        *,
        secure: bool,
        accept_wrapped_types: Sequence[str] = ("*",),
    ) -> None:
        self.client = client
        self.room = room
        self.secure = secure
        self.accept_wrapped_types = tuple(accept_wrapped_types)
        self.room_uri = f"sip:{room}@{HOST}"
        self.sdp = sdp.SdpSession(sess_id=secrets.randbelow(2**31), address=HOST)
        self.slots: list[_Slot] = []
        self.stream: ChatStream | None = None
        self.audio: RtpEndpoint | None = None
        self.session: Session | None = None
        self.answer: sdp.SessionDescription | None = None
        self.received: list[Delivered] = []
        self.send_status: dict[str, int] = {}  # Message-ID -> status of its (last) response
        self.send_comment: dict[str, str | None] = {}  # Message-ID -> that response's comment
        self.reports: dict[str, int] = {}  # Message-ID -> status of a REPORT about it
        self.nickname_statuses: list[int] = []
        self.failures: list[str] = []
        self._readers: set[asyncio.Task[None]] = set()

    # ---- set-up and re-INVITE ---------------------------------------------------------

    def _new_stream(self) -> ChatStream:
        return ChatStream(
            self.client.msrp,
            secure=self.secure,
            accept_types=("message/cpim", "text/plain"),
            accept_wrapped_types=self.accept_wrapped_types,
            chatroom=CHATROOM,
        )

    async def start(self, server: ServerPorts, *, audio: RtpEndpoint | None, chat: bool) -> None:
        if audio is not None:
            await audio.open()
            self.audio = audio
            self.slots.append(_Slot(MediaKind.AUDIO, audio.offer().media[0]))
        if chat:
            self.stream = self._new_stream()
            self.slots.append(_Slot(MediaKind.CHAT, self.stream.offer_media()))
        offer = self.sdp.offer([slot.media for slot in self.slots])
        self.session, response = await self.client.invite(server, self.room, bytes(offer))
        await self._answered(sdp.parse(response.body))

    def _index(self, kind: MediaKind) -> int | None:
        return next((i for i, slot in enumerate(self.slots) if slot.kind == kind), None)

    @property
    def chat_line(self) -> sdp.MediaDescription:
        """The room's answer for our chat m-line."""
        index = self._index(MediaKind.CHAT)
        assert self.answer is not None and index is not None, "no chat m-line"
        return self.answer.media[index]

    async def _answered(self, answer: sdp.SessionDescription) -> None:
        self.sdp.answer_received(answer)
        self.answer = answer
        chat = self._index(MediaKind.CHAT)
        if chat is not None and self.stream is not None and self.slots[chat].media.port:
            line = answer.media[chat]
            assert line.port, f"the room refused our chat m-line: {sdp.serialize(answer)!r}"
            path = parse_msrp_media(line).path
            if self.stream.remote is None or self.stream.remote.path != path:
                channel = self.stream.answered(line)
                await self.stream.wait_connected(15)
                self._read(channel)
        audio = self._index(MediaKind.AUDIO)
        if audio is not None and self.audio is not None and self.slots[audio].media.port:
            assert audio == 0, "the audio m-line comes first (RtpEndpoint reads media[0])"
            assert answer.media[audio].port, "the room refused our audio m-line"
            self.audio.answered_sdp(answer)

    async def reinvite(
        self,
        *,
        audio: RtpEndpoint | None,
        chat: bool,
        direction: sdp.Direction = sdp.Direction.SENDRECV,
    ) -> Response:
        """Re-offer with audio from ``audio`` (None: audio m-line at port 0) in ``direction``
        (sendonly: hold, RFC 3264 §8.4) and chat on or off (off: chat m-line at port 0, the
        stream closed). m-lines keep their places."""
        assert self.session is not None
        index = self._index(MediaKind.AUDIO)
        if audio is not None:
            if audio is not self.audio:
                await audio.open()
            line = audio.offer(direction).media[0]
            if index is None:
                self.slots.insert(0, _Slot(MediaKind.AUDIO, line))
            else:
                self.slots[index].media = line
            if self.audio is not None and self.audio is not audio:
                self.audio.close()
            self.audio = audio
        elif index is not None:
            off = self.slots[index].media.copy()
            off.port = 0
            self.slots[index].media = off
        index = self._index(MediaKind.CHAT)
        if chat:
            if self.stream is None or self.stream.channel is None or self.stream.channel.closed:
                self.stream = self._new_stream()
            line = self.stream.offer_media()
            if index is None:
                self.slots.append(_Slot(MediaKind.CHAT, line))
            else:
                self.slots[index].media = line
        elif index is not None:
            off = self.slots[index].media.copy()
            off.port = 0
            self.slots[index].media = off
            if self.stream is not None:
                self.stream.close()
                self.stream = None
        offer = self.sdp.offer([slot.media for slot in self.slots])
        response = await self.session.reinvite(bytes(offer))
        if response.status != 200:
            self.sdp.offer_rejected()
            return response
        await self._answered(sdp.parse(response.body))
        if audio is None and self.audio is not None:
            self.audio.close()
            self.audio = None
        return response

    async def leave(self) -> None:
        if self.session is not None:
            await self.session.bye()
        if self.stream is not None:
            self.stream.close()
        if self.audio is not None:
            self.audio.close()
        for task in list(self._readers):
            task.cancel()
        if self in self.client.sessions:
            self.client.sessions.remove(self)

    # ---- receiving ---------------------------------------------------------------------

    def _read(self, channel: MsrpChannel) -> None:
        task = asyncio.create_task(self._reader(channel))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _reader(self, channel: MsrpChannel) -> None:
        while True:
            event = await channel.next_event()
            match event:
                case MessageReceived():
                    if event.body:
                        self.received.append(_delivered(event))
                case ResponseReceived(method="NICKNAME", status=status):
                    self.nickname_statuses.append(status)
                case ResponseReceived(message_id=mid, status=status, comment=comment) if (
                    mid is not None
                ):
                    self.send_status[mid] = status
                    self.send_comment[mid] = comment
                case TransactionTimedOut(message_id=mid, status=status) if mid is not None:
                    self.send_status[mid] = status
                case ReportReceived(message_id=mid, status=status):
                    self.reports[mid] = status
                case ConnectionFailed(reason=reason):
                    self.failures.append(reason)
                    return

    def messages(self, predicate: Callable[[Delivered], bool] = lambda d: True) -> list[Delivered]:
        return [d for d in self.received if predicate(d)]

    def public(self) -> list[Delivered]:
        """What participants sent, live: no notices, no history, no is-composing."""
        return [
            d
            for d in self.received
            if d.notice is None and not d.history and d.wrapped_type != ISCOMPOSING_CONTENT_TYPE
        ]

    def notices(self, kind: str | None = None) -> list[Delivered]:
        return [d for d in self.received if d.notice is not None and kind in (None, d.notice)]

    def texts(self) -> list[str]:
        return [d.text for d in self.public()]

    async def wait_for(self, condition: Callable[[], object], timeout: float = 20.0) -> bool:
        return await wait_until(condition, timeout=timeout)

    async def wait_public(self, count: int, timeout: float = 20.0) -> bool:
        """True once ``count`` messages from people (see :meth:`public`) have come."""
        return await wait_until(lambda: len(self.public()) >= count, timeout=timeout)

    async def wait_text(self, text: str, timeout: float = 20.0) -> Delivered:
        """The first public message with this text (AssertionError if none comes)."""
        found = await wait_until(lambda: text in self.texts(), timeout=timeout)
        assert found, f"{self.client.user} never got {text!r}; got {self.texts()[-10:]}"
        return next(d for d in self.public() if d.text == text)

    async def status_of(self, message_id: str, timeout: float = 20.0) -> int:
        """The status the room gave our SEND: its failure REPORT when it sent one (the
        response to the SEND is then 200: RFC 4975 §7.1.2 lets a relay refuse either way),
        else the response's."""
        await wait_until(lambda: message_id in self.send_status, timeout=timeout)
        assert message_id in self.send_status, f"no response to {message_id}"
        status = self.send_status[message_id]
        return self.reports.get(message_id, status)

    async def refusal(self, message_id: str, timeout: float = 20.0) -> int:
        """How the room refused our SEND: a failure response, or a failure REPORT after a 200
        (RFC 4975 §7.1.2), whichever it sent; AssertionError when it accepted it."""

        def refused() -> bool:
            return message_id in self.reports or self.send_status.get(message_id, 200) != 200

        await wait_until(refused, timeout=timeout)
        assert refused(), (
            f"{message_id} answered {self.send_status.get(message_id)}, no failure REPORT"
        )
        return self.reports.get(message_id) or self.send_status[message_id]

    # ---- sending -----------------------------------------------------------------------

    def _channel(self) -> ChatStream:
        assert self.stream is not None, f"{self.client.user} has no chat stream"
        return self.stream

    def cpim(
        self,
        text: str | bytes,
        *,
        content_type: str = "text/plain",
        to: str | None = None,
        sender: CpimAddress | None = None,
        when: datetime | None = None,
        extra: Sequence[tuple[str, str]] = (),
        namespaces: dict[str, str] | None = None,
    ) -> bytes:
        body = text.encode() if isinstance(text, str) else text
        return CpimMessage.build(
            content_type=content_type,
            body=body,
            sender=sender or self.client.address,
            recipients=[CpimAddress(to or self.room_uri)],
            datetime=when,
            namespaces=namespaces,
            extra=extra,
        ).serialize()

    async def send_raw(
        self, body: bytes, *, content_type: str = "message/cpim", success_report: bool = False
    ) -> str:
        """One SEND carrying ``body`` as given; its Message-ID."""
        return await self._channel().send(
            content_type, body, success_report=success_report, failure_report=FailureReport.YES
        )

    async def say(self, text: str, *, when: datetime | None = None) -> str:
        """A public message (CPIM To = the room)."""
        return await self.send_raw(self.cpim(text, when=when))

    async def whisper(self, to: str, text: str) -> str:
        """A private message (CPIM To = a participant's URI, RFC 7701 §7.3)."""
        return await self.send_raw(self.cpim(text, to=to))

    async def composing(self, state: ComposingState = ComposingState.ACTIVE) -> str:
        """An is-composing indication (RFC 3994) wrapped in CPIM, to the room."""
        document = IsComposing(state, content_type="text/plain", refresh=60).serialize()
        return await self.send_raw(self.cpim(document, content_type=ISCOMPOSING_CONTENT_TYPE))

    async def nickname(self, name: str, timeout: float = 20.0) -> int:
        """NICKNAME (RFC 7701 §7.1); the room's status."""
        stream = self._channel()
        assert stream.channel is not None
        before = len(self.nickname_statuses)
        stream.channel.send_nickname(name)
        await stream.channel.drain()
        await wait_until(lambda: len(self.nickname_statuses) > before, timeout=timeout)
        assert len(self.nickname_statuses) > before, "NICKNAME never answered"
        return self.nickname_statuses[before]


def _tid() -> str:
    return secrets.token_hex(8)


@dataclass
class _Incoming:
    head: ChunkHead
    body: bytearray = field(default_factory=bytearray)


class RawChatSession:
    """A chat session whose MSRP bytes the test writes itself, on a connection of its own.

    The INVITE is the same as :class:`ChatSession`'s; then we connect to the room's a=path,
    bind with a bodiless SEND (RFC 4975 §5.4), and every request after is written exactly as
    the test gives it. The room's SENDs to us are answered ``answer_status`` (200 unless
    the test plays a failing receiver) and kept in ``received``.
    """

    def __init__(self, client: ChatClient, room: str, *, secure: bool = True) -> None:
        self.client = client
        self.room = room
        self.secure = secure
        self.room_uri = f"sip:{room}@{HOST}"
        self.local = client.msrp.local_uri(secure)
        self.remote: tuple[MsrpUri, ...] = ()
        self.session: Session | None = None
        self.received: list[Delivered] = []
        self.responses: dict[str, int] = {}  # transaction id -> status
        self.reports: dict[str, int] = {}  # Message-ID -> status
        self.answer_status = 200
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None

    async def join(self, server: ServerPorts) -> RawChatSession:
        stream = ChatStream(self.client.msrp, secure=self.secure, chatroom=CHATROOM)
        stream.local_uri = self.local
        media = stream.offer_media()
        offer = sdp.build_offer(
            origin=sdp.Origin("-", "1", 1, "IN", "IP4", HOST),
            connection=sdp.Connection.for_address(HOST),
            media=[media],
        )
        self.session, response = await self.client.invite(server, self.room, bytes(offer))
        self.remote = parse_msrp_media(sdp.parse(response.body).media[0]).path
        first = self.remote[0]
        context: ssl.SSLContext | None = client_tls_context() if self.secure else None
        reader, self._writer = await asyncio.open_connection(
            first.host, first.effective_port, ssl=context
        )
        self._reader = asyncio.create_task(self._read(reader))
        bind = _tid()
        self.write(
            serialize_request(
                bind,
                "SEND",
                self.remote,
                (self.local,),
                [("Message-ID", _tid()), ("Byte-Range", "1-0/0")],
            )
        )
        assert await self.status(bind) == 200, "the binding SEND was refused"
        self.client.sessions.append(self)
        return self

    def template(self, data: bytes, tid: str) -> bytes:
        """A stored request with its ``TID``, ``TO_PATH`` and ``FROM_PATH`` filled in."""
        to_path = " ".join(uri.serialize() for uri in self.remote)
        return (
            data.replace(b"TID", tid.encode())
            .replace(b"TO_PATH", to_path.encode())
            .replace(b"FROM_PATH", self.local.serialize().encode())
        )

    def write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)

    def send(self, body: bytes, *, content_type: str = "message/cpim") -> str:
        """A one-chunk SEND of ``body`` exactly as given; its transaction id."""
        tid = _tid()
        size = len(body)
        headers = [("Message-ID", _tid()), ("Byte-Range", f"1-{size}/{size}")]
        self.write(
            serialize_request(
                tid,
                "SEND",
                self.remote,
                (self.local,),
                headers,
                content_type=content_type,
                body=body,
                flag=Flag.END,
            )
        )
        return tid

    async def status(self, tid: str, timeout: float = 20.0) -> int:
        await wait_until(lambda: tid in self.responses, timeout=timeout)
        assert tid in self.responses, f"no response to transaction {tid}"
        return self.responses[tid]

    async def _read(self, reader: asyncio.StreamReader) -> None:
        parser = ChunkParser()
        current: _Incoming | None = None
        while True:
            data = await reader.read(65536)
            if not data:
                return
            for event in parser.feed(data):
                match event:
                    case ChunkStarted(head=head):
                        current = _Incoming(head)
                    case ChunkData(data=piece) if current is not None:
                        current.body += piece
                    case ChunkEnded() if current is not None:
                        self._chunk(current)
                        current = None

    def _chunk(self, chunk: _Incoming) -> None:
        head = chunk.head
        if not head.is_request:
            assert head.status is not None
            self.responses[head.transaction_id] = head.status
            return
        if head.method == "SEND":
            self.write(build_response(head, self.answer_status, local_uri=self.local))
            if chunk.body:
                event = MessageReceived(
                    "raw", head.message_id or "", head.content_type, bytes(chunk.body), (), 0
                )
                self.received.append(_delivered(event))
        elif head.method == "REPORT" and head.message_id and head.report_status is not None:
            self.reports[head.message_id] = head.report_status.code

    async def leave(self) -> None:
        if self.session is not None:
            await self.session.bye()
        if self._writer is not None:
            self._writer.close()
        if self._reader is not None:
            self._reader.cancel()
        if self in self.client.sessions:
            self.client.sessions.remove(self)
