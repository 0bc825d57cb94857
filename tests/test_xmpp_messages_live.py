"""SIP MESSAGE ↔ XMPP chat through a real Prosody and the Chorus component (RFC 7572).

An XMPP user (slixmpp ClientXMPP over STARTTLS) writes to ``alice@sip.localhost``; the SIP
side is this test's own UDP endpoint, Chorus's outbound proxy, which answers each MESSAGE with
the status the test chooses. A SIP MESSAGE to ``bob@xmpp.localhost`` reaches the client.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slixmpp import ClientXMPP

from control.cli import build_server
from control.config import parse_config
from control.server import Server
from control.sip.message import Request, parse_message
from control.xmpp.app import XmppGateway
from tests.peers.ports import free_ports
from tests.peers.prosody import ProsodyProcess, chorus_config, client_ssl_context
from tests.peers.wait import wait_until

pytestmark = pytest.mark.peer("prosody")


class SipEndpoint(asyncio.DatagramProtocol):
    """The SIP user agents behind the proxy: records requests, answers ``status``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.responses: list[int] = []
        self.status = 200
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        if not isinstance(message, Request):
            self.responses.append(message.status)  # type: ignore[attr-defined]
            return
        self.requests.append(message)
        head = [f"SIP/2.0 {self.status} Answer"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            head += [f"{name}: {value}" for value in message.headers.get_all(name)]
        if "tag=" not in (message.headers.get("To") or ""):
            head[-2] += ";tag=t1"
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)

    def send_message(self, port: int, to: str, from_: str, body: bytes, ctype: str) -> None:
        assert self.transport is not None
        local = self.transport.get_extra_info("sockname")[1]
        lines = [
            f"MESSAGE {to} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <{from_}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to}>",
            f"Call-ID: {uuid.uuid4().hex}",
            "CSeq: 1 MESSAGE",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
        ]
        self.transport.sendto(
            ("\r\n".join(lines) + "\r\n\r\n").encode() + body, ("127.0.0.1", port)
        )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[ProsodyProcess, Server, int, SipEndpoint]]:
    prosody = ProsodyProcess(users={"bob": "bob-password"}).start()
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(SipEndpoint, local_addr=("127.0.0.1", 0))
    proxy_port = endpoint.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    (port,) = free_ports(1)
    config = parse_config(
        chorus_config(prosody, tmp_path, port, proxy_port=proxy_port, send_timeout=10)
    )
    server = build_server(config)
    await server.start()
    app = server.applications["xmpp"]
    assert isinstance(app, XmppGateway)
    app.start()
    try:
        assert await wait_until(lambda: app.component.connected, timeout=30)
        yield prosody, server, port, endpoint
    finally:
        await server.stop()
        endpoint.transport.close()  # type: ignore[union-attr]
        prosody.cleanup()


async def client(prosody: ProsodyProcess) -> tuple[ClientXMPP, asyncio.Queue[Any]]:
    xmpp = ClientXMPP(f"bob@{prosody.xmpp_domain}/desk", "bob-password")
    xmpp.ssl_context = client_ssl_context()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    xmpp.add_event_handler("message", inbox.put_nowait)
    xmpp.add_event_handler("message_error", inbox.put_nowait)
    up = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: (xmpp.send_presence(), up.set()))
    xmpp.connect("127.0.0.1", prosody.c2s_port)
    await asyncio.wait_for(up.wait(), 30)
    return xmpp, inbox


async def test_xmpp_chat_reaches_the_sip_user_once(gateway: Any) -> None:
    prosody, _, _, endpoint = gateway
    xmpp, _ = await client(prosody)
    long_text = "x" * 20000  # one MESSAGE, never split or repeated
    try:
        xmpp.send_message(mto=f"alice@{prosody.component_jid}", mbody="hello alice", mtype="chat")
        xmpp.send_message(mto=f"alice@{prosody.component_jid}", mbody=long_text, mtype="chat")
        assert await wait_until(lambda: len(endpoint.requests) >= 2, timeout=30)
        first, second = endpoint.requests[:2]
        assert str(first.uri) == f"sip:alice@{prosody.component_jid}"
        assert str(first.from_.uri) == f"sip:bob@{prosody.xmpp_domain};gr=desk"
        assert str(first.to.uri) == f"sip:alice@{prosody.component_jid}"
        assert first.body == b"hello alice"
        assert second.body == long_text.encode()
        await asyncio.sleep(0)
        assert len(endpoint.requests) == 2
    finally:
        xmpp.disconnect()


async def test_sip_404_comes_back_as_item_not_found(gateway: Any) -> None:
    prosody, _, _, endpoint = gateway
    endpoint.status = 404
    xmpp, inbox = await client(prosody)
    try:
        xmpp.send_message(mto=f"nobody@{prosody.component_jid}", mbody="anyone?", mtype="chat")
        error = await asyncio.wait_for(inbox.get(), 30)
        assert error["type"] == "error"
        assert error["error"]["condition"] == "item-not-found"
        assert str(error["from"]) == f"nobody@{prosody.component_jid}"
    finally:
        xmpp.disconnect()


async def test_sip_message_reaches_the_xmpp_user(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    xmpp, inbox = await client(prosody)
    try:
        endpoint.send_message(
            port,
            f"sip:bob@{prosody.xmpp_domain}",
            f"sip:alice@{prosody.component_jid}",
            b"hi bob",
            "text/plain",
        )
        message = await asyncio.wait_for(inbox.get(), 30)
        assert message["type"] == "chat"
        assert message["body"] == "hi bob"
        assert str(message["from"]) == f"alice@{prosody.component_jid}"
        assert await wait_until(lambda: 202 in endpoint.responses)
    finally:
        xmpp.disconnect()


async def test_sip_message_to_a_domain_not_served_is_refused(gateway: Any) -> None:
    prosody, _, port, endpoint = gateway
    endpoint.send_message(
        port, f"sip:bob@{prosody.xmpp_domain}", "sip:eve@elsewhere.example", b"x", "text/plain"
    )
    assert await wait_until(lambda: 403 in endpoint.responses)
