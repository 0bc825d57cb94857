"""Two real UserAgents on 127.0.0.1 sockets, for the session and session-timer tests.

One UA places calls with ``place_call`` (as tests/peers/sipclient.py does); the other acts as
the server: its request handler accepts INVITEs with ``IncomingCall.accept`` and answers
re-INVITEs through a hook a test can replace. Both run over UDP and over TCP with small timers
(T1 = 50 ms) so the §13.3.1.4 2xx retransmission and its 64*T1 give-up stay short.

The only fake sits at the wire: ``TappedLayer`` is the real transport layer that records every
message it sends and receives and can drop chosen outgoing ones (an ACK lost on the way).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable

from control.config import ListenAddress
from control.sip.message import Request, Response, parse_message
from control.sip.session import SDP, IncomingCall, Offer, Session, place_call, timer_terms
from control.sip.transaction import Timers
from control.sip.transport import Peer, SipTransportLayer
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import IncomingRequest, OutgoingRequest, UserAgent
from tests.peers.wait import wait_until

TIMERS = Timers(t1=0.05, t2=0.4, t4=0.5, d=0.5)
OFFER = b"v=0\r\no=client 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
ANSWER = b"v=0\r\no=server 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
BACKSTOP = 10.0  # only a hang guard: every wait below ends as soon as its condition holds

Message = Request | Response
ReinviteHook = Callable[[Session, Offer], Awaitable[None]]


class TappedLayer(SipTransportLayer):
    """The real transport layer, recording traffic; ``drop`` loses chosen outgoing messages."""

    def __init__(self, ua: UserAgent) -> None:
        super().__init__(self._received)
        self._ua = ua
        self.sent: list[Message] = []
        self.received: list[Message] = []
        self.dropped: list[Message] = []
        self.drop: Callable[[Message], bool] | None = None

    def _received(self, message: Message, peer: Peer) -> None:
        self.received.append(message)
        self._ua.handle_message(message, peer)

    def send(self, data: bytes, peer: Peer) -> None:
        message = parse_message(data)
        if self.drop is not None and self.drop(message):
            self.dropped.append(message)
            return
        self.sent.append(message)
        super().send(data, peer)


class RecordingRandom(random.Random):
    """A seeded random source for the UA that remembers every back-off range it drew from."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.draws: list[tuple[float, float]] = []

    def uniform(self, a: float, b: float) -> float:
        self.draws.append((a, b))
        return super().uniform(a, b)


class Endpoint:
    """One UserAgent on its own UDP and TCP sockets, answering as a simple server would."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = RecordingRandom(seed)
        self.ua = UserAgent(timers=TIMERS, rng=self.rng)
        self.layer = TappedLayer(self.ua)
        self.ua.transport = self.layer
        self.ua.request_handler = self._on_request
        self.incoming: list[IncomingRequest] = []
        self.sessions: list[Session] = []
        self.offers: list[bytes] = []  # bodies of re-INVITEs this side answered
        self.hold_invites = False  # ring and wait (for CANCEL) instead of answering
        self.on_reinvite: ReinviteHook = self.answer_at_once

    async def start(self) -> None:
        await self.layer.start(
            (ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tcp", "127.0.0.1", 0))
        )

    async def stop(self) -> None:
        await self.ua.close()
        await self.layer.stop()

    def port(self, transport: str) -> int:
        bound = self.layer.local_address(transport)
        assert bound is not None
        return bound.port

    def uri(self, transport: str, user: str = "room") -> SipUri:
        params: dict[str, str | None] = {} if transport == "udp" else {"transport": transport}
        return SipUri(host="127.0.0.1", user=user, port=self.port(transport), params=params)

    def identity(self) -> NameAddr:
        return NameAddr(SipUri(host="127.0.0.1", user=self.name))

    def adopt(self, session: Session) -> None:
        """Answer the peer's re-INVITEs on ``session`` through ``self.on_reinvite``."""

        async def hook(offer: Offer) -> None:
            await self.on_reinvite(session, offer)

        session.on_reinvite = hook

    async def answer_at_once(self, session: Session, offer: Offer) -> None:
        self.offers.append(offer.body)
        session.answer_reinvite(offer, ANSWER + f"a=answer:{len(self.offers)}\r\n".encode())

    async def _on_request(self, incoming: IncomingRequest) -> None:
        self.incoming.append(incoming)
        if incoming.method != "INVITE":
            incoming.respond(405)
            return
        timer_terms(incoming, self.ua.session_timers)  # 422 or 400, as control/server.py does
        if incoming.final_sent:
            return
        call = IncomingCall(self.ua, incoming)
        if self.hold_invites:
            call.ringing()
            await asyncio.wait_for(asyncio.shield(incoming.cancelled), BACKSTOP)
            return
        session = call.accept(ANSWER)
        self.adopt(session)
        self.sessions.append(session)


class Pair:
    """A client UA and a server UA talking over one transport."""

    def __init__(self, transport: str, client: Endpoint, server: Endpoint) -> None:
        self.transport = transport
        self.client = client
        self.server = server

    @property
    def server_peer(self) -> Peer:
        return Peer(self.transport, "127.0.0.1", self.server.port(self.transport))

    async def place(self, *, timeout: float = 32.0) -> tuple[Session | None, Response]:
        return await place_call(
            self.client.ua,
            self.server.uri(self.transport),
            from_=self.client.identity(),
            offer=OFFER,
            peer=self.server_peer,
            timeout=timeout,
        )

    async def call(self) -> tuple[Session, Session]:
        """An established call: (client session, server session), both confirmed."""
        session, response = await self.place()
        assert response.status == 200
        assert session is not None
        self.client.adopt(session)
        assert await wait_until(lambda: self.server.sessions, timeout=BACKSTOP)
        server_session = self.server.sessions[-1]
        await asyncio.wait_for(server_session.confirmed, BACKSTOP)
        return session, server_session

    def send_in_dialog(
        self,
        side: Endpoint,
        session: Session,
        method: str,
        *,
        cseq: int | None = None,
        body: bytes = b"",
    ) -> OutgoingRequest:
        """A request built by ``session``'s dialog but sent by hand (bypassing Session)."""
        peer = session.source if session.source.reliable else self.peer_of(side)
        request = session.dialog.create_request(
            method,
            via=side.ua.via_for(peer),
            cseq=cseq,
            body=body,
            content_type=SDP if body else None,
        )
        return side.ua.send_request(request, peer)

    def peer_of(self, side: Endpoint) -> Peer:
        other = self.server if side is self.client else self.client
        return Peer(self.transport, "127.0.0.1", other.port(self.transport))


@contextlib.asynccontextmanager
async def open_pair(transport: str) -> AsyncIterator[Pair]:
    """A started client and server on ``transport``, stopped on exit."""
    client, server = Endpoint("alice", seed=1), Endpoint("room", seed=2)
    await client.start()
    await server.start()
    try:
        yield Pair(transport, client, server)
    finally:
        await client.stop()
        await server.stop()


def responses(messages: list[Message], method: str, status: int | None = None) -> list[Response]:
    return [
        m
        for m in messages
        if isinstance(m, Response)
        and m.cseq.method == method
        and (status is None or m.status == status)
    ]


def requests(messages: list[Message], method: str) -> list[Request]:
    return [m for m in messages if isinstance(m, Request) and m.method == method]
