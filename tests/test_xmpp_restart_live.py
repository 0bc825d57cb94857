"""kill -9 (or a clean stop) of a real Prosody under the gateway component, and its restart
(issue 12 item 7).

While Prosody is gone a SIP MESSAGE to an XMPP user is answered 503 with Retry-After (no
silent loss: the SIP sender knows to retry); the component keeps trying with its back-off,
each delay capped by ``[xmpp] reconnect_max``; once Prosody is back the component is
connected again and the next message goes through, both ways, with a fresh XMPP client.

The SIP side is the test SIP endpoint of test_xmpp_messages_live (the gateway's outbound
proxy), here also keeping each response whole for its headers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from control.sip.message import Response, parse_message
from control.xmpp.app import XmppGateway
from tests.peers.prosody import ProsodyProcess
from tests.peers.wait import wait_until
from tests.test_xmpp_messages_live import SipEndpoint, client
from tests.test_xmpp_presence_live import chorus

pytestmark = pytest.mark.peer("prosody")

RECONNECT_MAX = 1.0  # [xmpp] reconnect_max: the back-off (0.5 s doubling) stops at 1 s


CHAT_SDP = (
    "v=0\r\no=carol 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=message 7394 TCP/MSRP *\r\na=accept-types:message/cpim text/plain\r\n"
    "a=path:msrp://127.0.0.1:7394/carol1;tcp\r\n"
)


class RecordingEndpoint(SipEndpoint):
    """The SIP endpoint, keeping each response it gets (the 503's Retry-After), sending any
    request, and ACKing a final response to its INVITE (RFC 3261 §17.1.1.3)."""

    def __init__(self) -> None:
        super().__init__()
        self.whole: list[Response] = []
        self.invited = ""  # the Request-URI of our INVITE, for its ACK

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self.whole.append(message)
            cseq = message.headers.get("CSeq") or ""
            if cseq.endswith("INVITE") and message.status >= 300 and self.transport is not None:
                ack = [f"ACK {self.invited} SIP/2.0"]
                ack += [f"{name}: {message.headers.get(name)}" for name in ("Via", "From", "To")]
                ack += [
                    f"Call-ID: {message.headers.get('Call-ID')}",
                    f"CSeq: {cseq.split()[0]} ACK",
                ]
                self.transport.sendto(
                    ("\r\n".join(ack) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr
                )
        super().datagram_received(data, addr)

    def send_request(
        self, port: int, method: str, to: str, from_: str, headers: list[str], body: str = ""
    ) -> None:
        assert self.transport is not None
        local = self.transport.get_extra_info("sockname")[1]
        if method == "INVITE":
            self.invited = to
        lines = [
            f"{method} {to} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <{from_}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to}>",
            f"Call-ID: {uuid.uuid4().hex}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:carol@127.0.0.1:{local}>",
            *headers,
            f"Content-Length: {len(body.encode())}",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n" + body).encode()
        self.transport.sendto(data, ("127.0.0.1", port))


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[ProsodyProcess, XmppGateway, int, Any]]:
    prosody = ProsodyProcess(users={"bob": "bob-password"}).start()
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        RecordingEndpoint, local_addr=("127.0.0.1", 0)
    )
    proxy_port = endpoint.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    try:
        async with chorus(prosody, tmp_path, proxy_port, reconnect_max=RECONNECT_MAX) as (
            _,
            app,
            port,
        ):
            yield prosody, app, port, endpoint
    finally:
        endpoint.transport.close()  # type: ignore[union-attr]
        prosody.cleanup()


@pytest.mark.parametrize("how", ["kill -9", "stop"])
async def test_prosody_gone_503_meanwhile_capped_backoff_then_through(setup: Any, how: str) -> None:
    """``kill -9`` (the connection just drops) and a clean stop (SIGTERM: Prosody closes
    the component's stream first) both end the same way."""
    prosody, app, port, endpoint = setup
    assert app.component.backoff.cap == RECONNECT_MAX  # the config's value reached it
    bob_sip, alice_sip = f"sip:bob@{prosody.xmpp_domain}", f"sip:alice@{prosody.component_jid}"
    delays: list[float] = []
    next_delay = app.component.backoff.next_delay

    def recorded() -> float:
        delays.append(next_delay())
        return delays[-1]

    app.component.backoff.next_delay = recorded  # type: ignore[method-assign]

    bob, inbox = await client(prosody)
    endpoint.send_message(port, bob_sip, alice_sip, b"before", "text/plain")
    assert (await asyncio.wait_for(inbox.get(), 30))["body"] == "before"
    bob.disconnect()

    if how == "kill -9":
        prosody.kill()
    else:
        prosody.stop()
    assert await wait_until(lambda: not app.component.connected, timeout=30)
    endpoint.send_message(port, bob_sip, alice_sip, b"while down", "text/plain")
    assert await wait_until(lambda: any(r.status == 503 for r in endpoint.whole), timeout=30)
    refusal = next(r for r in endpoint.whole if r.status == 503)
    retry_after = refusal.headers.get("Retry-After")
    assert retry_after is not None and int(retry_after) > 0
    # the other SIP requests for the XMPP side: a presence SUBSCRIBE and a chat INVITE
    subscribe = ["Event: presence", "Accept: application/pidf+xml", "Expires: 600"]
    endpoint.send_request(port, "SUBSCRIBE", bob_sip, alice_sip, subscribe)
    invite = ["Content-Type: application/sdp"]
    endpoint.send_request(port, "INVITE", bob_sip, alice_sip, invite, CHAT_SDP)
    for method in ("SUBSCRIBE", "INVITE"):
        assert await wait_until(lambda m=method: refusals(endpoint, m), timeout=30), method
    assert refusals(endpoint, "SUBSCRIBE")[0].headers.get("Retry-After")
    assert refusals(endpoint, "INVITE")[0].headers.get("Retry-After") == retry_after
    # several attempts against the dead port: the delays grow, and never past the cap
    assert await wait_until(lambda: len(delays) >= 4, timeout=60), delays
    assert delays[0] == 0.5 and max(delays) == RECONNECT_MAX
    assert all(later >= earlier for earlier, later in zip(delays, delays[1:], strict=False))
    assert not app.component.connected

    prosody.start()
    assert await wait_until(lambda: app.component.connected, timeout=60)
    bob, inbox = await client(prosody)
    try:
        answered = len(endpoint.whole)
        endpoint.send_message(port, bob_sip, alice_sip, b"after the restart", "text/plain")
        message = await asyncio.wait_for(inbox.get(), 30)
        assert message["body"] == "after the restart"  # the first: "while down" was refused
        assert str(message["from"]) == f"alice@{prosody.component_jid}"
        assert await wait_until(lambda: any(r.status == 202 for r in endpoint.whole[answered:]))

        bob.send_message(mto=f"alice@{prosody.component_jid}", mbody="and back", mtype="chat")
        assert await wait_until(
            lambda: any(r.body == b"and back" for r in endpoint.requests), timeout=30
        )
    finally:
        bob.disconnect()


def refusals(endpoint: RecordingEndpoint, method: str) -> list[Response]:
    """The final responses to ``method`` (every one must be 503: no other answer is right)."""
    final = [
        r
        for r in endpoint.whole
        if (r.headers.get("CSeq") or "").endswith(method) and r.status >= 200
    ]
    assert all(r.status == 503 for r in final), [r.status for r in final]
    return final
