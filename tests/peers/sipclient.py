"""A SIP test client built on Chorus' own UA core (used where SIPp cannot go: TLS, RTP
checks that need the answered port). Real sockets on 127.0.0.1."""

from __future__ import annotations

import ssl
from types import TracebackType

from control.config import ListenAddress
from control.sip.message import Response
from control.sip.session import Session, place_call
from control.sip.transport import Peer, SipTransportLayer
from control.sip.uri import NameAddr, SipUri, parse_uri
from control.sip.useragent import IncomingRequest, OutgoingRequest, UserAgent, build_request


def client_tls_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class SipClient:
    def __init__(self, transport: str = "udp", *, tls_context: ssl.SSLContext | None = None):
        self.transport_name = transport
        self.ua = UserAgent()
        self.received: list[IncomingRequest] = []
        self.ua.request_handler = self._on_request
        self._tls_context = tls_context
        self.layer: SipTransportLayer | None = None

    async def _on_request(self, incoming: IncomingRequest) -> None:
        self.received.append(incoming)
        incoming.respond(200, to_tag=self.ua.token(8))

    async def __aenter__(self) -> SipClient:
        self.layer = SipTransportLayer(
            self.ua.handle_message,
            ssl_client=self._tls_context or client_tls_context(),
        )
        self.ua.transport = self.layer
        listen = [ListenAddress("udp", "127.0.0.1", 0), ListenAddress("tcp", "127.0.0.1", 0)]
        await self.layer.start(tuple(listen))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.ua.close()
        assert self.layer is not None
        await self.layer.stop()

    def identity(self) -> NameAddr:
        return NameAddr(SipUri(host="127.0.0.1", user="tester"), "Tester")

    async def call(self, uri: str, offer: bytes, port: int) -> tuple[Session | None, Response]:
        peer = Peer(self.transport_name, "127.0.0.1", port)
        return await place_call(
            self.ua, parse_uri(uri), from_=self.identity(), offer=offer, peer=peer
        )

    def request(
        self,
        method: str,
        uri: str,
        port: int,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> OutgoingRequest:
        peer = Peer(self.transport_name, "127.0.0.1", port)
        target = parse_uri(uri)
        request = build_request(
            method,
            target,
            from_=self.identity().with_tag(self.ua.token(8)),
            to=NameAddr(target),
            call_id=self.ua.token(20),
            contact=self.ua.contact_for(peer, "tester"),
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )
        return self.ua.send_request(request, peer)
