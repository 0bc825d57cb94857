"""Calls placed straight at their peer while an outbound proxy is configured (RFC 3261 §12.2.1.1).

The FreeSWITCH leg INVITEs a media node directly even when ``[sip] outbound_proxy`` (the
Kamailio edge) is set. Its dialog has no route set, so §12.2.1.1 sends every in-dialog
request — the ACK, re-INVITEs, BYE — to the remote target: the node, never the proxy. A call
placed without ``direct`` keeps going through the proxy. The "proxy" here is a bare UDP socket
that records what reaches it; the endpoints are two real UserAgents (tests/sip_endpoints.py).
``extra_headers`` of ``place_call`` reach the peer in the INVITE.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from control.sip.message import Request, Response, parse_message
from control.sip.session import Session, SessionState, place_call, resolve_direct
from control.sip.transport import Peer
from control.sip.uri import SipUri
from tests.peers.wait import wait_until
from tests.sip_endpoints import BACKSTOP, OFFER, Message, Pair, open_pair, requests


class Recorder(asyncio.DatagramProtocol):
    """A proxy that never forwards: it only keeps what it is sent."""

    def __init__(self) -> None:
        self.requests: list[Message] = []

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        message = parse_message(data)
        if isinstance(message, Request):
            self.requests.append(message)


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[Pair, Recorder]]:
    loop = asyncio.get_running_loop()
    transport, recorder = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        async with open_pair("udp") as pair:
            pair.client.ua.outbound_proxy = SipUri(host="127.0.0.1", port=port, params={"lr": None})
            yield pair, recorder
    finally:
        transport.close()


async def place(
    pair: Pair,
    *,
    peer: Peer | None,
    direct: bool = False,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> tuple[Session | None, Response]:
    return await place_call(
        pair.client.ua,
        pair.server.uri("udp"),
        from_=pair.client.identity(),
        offer=OFFER,
        peer=peer,
        direct=direct,
        extra_headers=extra_headers,
    )


async def test_a_direct_call_keeps_its_in_dialog_requests_off_the_proxy(
    proxied: tuple[Pair, Recorder],
) -> None:
    pair, proxy = proxied
    session, response = await place(
        pair,
        peer=pair.server_peer,
        direct=True,
        extra_headers=[("X-Chorus-Room", "chorus-r1-0123abcd"), ("X-Chorus-Participant", "p7")],
    )
    assert response.status == 200 and session is not None and session.direct
    pair.client.adopt(session)
    invite = pair.server.incoming[0].request
    assert invite.headers.get("X-Chorus-Room") == "chorus-r1-0123abcd"
    assert invite.headers.get("X-Chorus-Participant") == "p7"
    assert await wait_until(lambda: pair.server.sessions, timeout=BACKSTOP)
    server_session = pair.server.sessions[-1]
    # The ACK reached the server itself: its 2xx retransmission stopped, the call confirmed.
    await asyncio.wait_for(server_session.confirmed, BACKSTOP)
    assert requests(pair.server.layer.received, "ACK")
    assert await session.next_peer() == pair.server_peer
    assert (await session.reinvite(OFFER + b"a=sendonly\r\n")).status == 200
    assert pair.server.offers == [OFFER + b"a=sendonly\r\n"]
    await session.bye()
    await asyncio.wait_for(server_session.terminated, BACKSTOP)
    assert server_session.state is SessionState.TERMINATED
    assert len(requests(pair.server.layer.received, "ACK")) == 2  # the INVITE's, the re-INVITE's
    assert requests(pair.server.layer.received, "BYE")
    assert proxy.requests == []


async def test_a_call_placed_without_direct_still_routes_in_dialog_through_the_proxy(
    proxied: tuple[Pair, Recorder],
) -> None:
    pair, proxy = proxied
    session, response = await place(
        pair,
        peer=pair.server_peer,
    )
    assert response.status == 200 and session is not None and not session.direct
    assert "X-Chorus-Room" not in pair.server.incoming[0].request.headers
    # The ACK went to the (silent) proxy, as every in-dialog request of a proxied call does.
    assert await wait_until(lambda: requests(proxy.requests, "ACK"), timeout=BACKSTOP)
    proxy_peer = pair.client.ua.outbound_proxy
    assert isinstance(proxy_peer, SipUri)
    assert await session.next_peer() == Peer("udp", "127.0.0.1", proxy_peer.port or 0)
    session._terminate("test over")


async def test_a_direct_call_without_a_peer_goes_to_its_target_not_the_proxy(
    proxied: tuple[Pair, Recorder],
) -> None:
    pair, proxy = proxied
    session, response = await place(
        pair,
        peer=None,
        direct=True,
    )
    assert response.status == 200 and session is not None
    assert requests(pair.server.layer.received, "INVITE")
    await session.bye()
    assert proxy.requests == []


async def test_resolve_direct_takes_the_uris_transport_and_default_ports() -> None:
    tcp = SipUri(host="127.0.0.1", port=5080, params={"transport": "tcp"})
    assert await resolve_direct(tcp, "udp") == Peer("tcp", "127.0.0.1", 5080)
    assert await resolve_direct(SipUri(host="127.0.0.1"), "udp") == Peer("udp", "127.0.0.1", 5060)
    secure = SipUri(host="[::1]", scheme="sips")
    assert await resolve_direct(secure, "udp") == Peer("tls", "::1", 5061)
