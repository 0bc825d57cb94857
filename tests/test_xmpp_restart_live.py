"""kill -9 of a real Prosody under the gateway component, and its restart (issue 12 item 7).

While Prosody is gone a SIP MESSAGE to an XMPP user is answered 503 with Retry-After (no
silent loss: the SIP sender knows to retry); the component keeps trying with its back-off,
each delay capped by ``[xmpp] reconnect_max``; once Prosody is back the component is
connected again and the next message goes through, both ways, with a fresh XMPP client.

The SIP side is the test SIP endpoint of test_xmpp_messages_live (the gateway's outbound
proxy), here also keeping each response whole for its headers.
"""

from __future__ import annotations

import asyncio
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


class RecordingEndpoint(SipEndpoint):
    """The SIP endpoint, keeping each response it gets (the 503's Retry-After)."""

    def __init__(self) -> None:
        super().__init__()
        self.whole: list[Response] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self.whole.append(message)
        super().datagram_received(data, addr)


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


async def test_prosody_killed_503_meanwhile_capped_backoff_then_through(setup: Any) -> None:
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

    prosody.kill()
    assert await wait_until(lambda: not app.component.connected, timeout=30)
    endpoint.send_message(port, bob_sip, alice_sip, b"while down", "text/plain")
    assert await wait_until(lambda: any(r.status == 503 for r in endpoint.whole), timeout=30)
    refusal = next(r for r in endpoint.whole if r.status == 503)
    retry_after = refusal.headers.get("Retry-After")
    assert retry_after is not None and int(retry_after) > 0
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
