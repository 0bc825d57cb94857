"""Errors in the SIP stack are logged once with their context, and the stack keeps going.

Each test drives a path that raises (a response that cannot be matched, a handler that throws,
a Via that cannot be stamped, a background task that fails, a UDP send error) and asserts both
the log line and that the next message is still handled.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

import control.sip.transport as transport_module
from control.config import ListenAddress
from control.sip.errors import SipError
from control.sip.headers import Headers
from control.sip.message import Request, Response
from control.sip.transport import Peer, SipTransportLayer
from control.sip.uri import SipUri
from control.sip.useragent import UserAgent
from tests.peers.wait import wait_until

PEER = Peer("udp", "127.0.0.1", 5999)


def options(call_id: str = "err-1") -> bytes:
    return (
        "OPTIONS sip:room@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-err\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a\r\n"
        "To: <sip:room@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


async def test_unmatchable_response_is_logged_with_its_call_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ua = UserAgent()
    headers = Headers(
        [
            ("Via", "not a via at all"),
            ("From", "<sip:a@127.0.0.1>;tag=1"),
            ("To", "<sip:b@127.0.0.1>;tag=2"),
            ("Call-ID", "bad-via-1"),
            ("CSeq", "1 INVITE"),
        ]
    )
    with caplog.at_level(logging.WARNING, "chorus.sip.ua"):
        ua.handle_message(Response(headers=headers, status=200, reason="OK"), PEER)
    [record] = [r for r in caplog.records if r.name == "chorus.sip.ua"]
    assert "dropping 200 response" in record.getMessage()
    assert "bad-via-1" in record.getMessage() and str(PEER) in record.getMessage()


async def test_handler_failure_is_logged_and_the_socket_keeps_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    def handler(message: Request | Response, peer: Peer) -> None:
        seen.append(message.call_id)
        if message.call_id == "boom":
            raise RuntimeError("handler bug")

    layer = SipTransportLayer(handler)
    await layer.start((ListenAddress("udp", "127.0.0.1", 0),))
    bound = layer.local_address("udp")
    assert bound is not None
    loop = asyncio.get_running_loop()
    sender, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, remote_addr=("127.0.0.1", bound.port)
    )
    try:
        with caplog.at_level(logging.ERROR, "chorus.sip.transport"):
            sender.sendto(options("boom"))
            assert await wait_until(lambda: "boom" in seen)
            sender.sendto(options("after"))
            assert await wait_until(lambda: "after" in seen)
    finally:
        sender.close()
        await layer.stop()
    [record] = [r for r in caplog.records if r.name == "chorus.sip.transport"]
    assert "handler failed on OPTIONS" in record.getMessage()
    assert "Call-ID boom" in record.getMessage()
    assert record.exc_info is not None and "handler bug" in str(record.exc_info[1])


async def test_via_that_cannot_be_stamped_is_logged_and_still_delivered(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(request: Request, source: Peer) -> None:
        raise SipError(400, "cannot stamp")

    monkeypatch.setattr(transport_module, "stamp_via", broken)
    delivered: list[Request | Response] = []
    layer = SipTransportLayer(lambda message, peer: delivered.append(message))
    receiver = transport_module._Receiver(layer)
    with caplog.at_level(logging.WARNING, "chorus.sip.transport"):
        assert receiver.handle_bytes(options("stamp-1"), PEER, stream=False) is None
    assert [m.call_id for m in delivered] == ["stamp-1"]
    [record] = caplog.records
    assert "could not stamp Via of OPTIONS" in record.getMessage()
    assert "stamp-1" in record.getMessage()


async def test_a_failing_background_task_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    ua = UserAgent()

    async def fails() -> None:
        raise OSError("network gone")

    with caplog.at_level(logging.ERROR, "chorus.sip.ua"):
        task = ua.spawn(fails())
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done callbacks run on the next loop turn
    records = [r for r in caplog.records if r.name == "chorus.sip.ua"]
    assert len(records) == 1
    assert records[0].exc_info is not None and "network gone" in str(records[0].exc_info[1])
    await ua.close()


async def test_udp_send_errors_are_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    layer = SipTransportLayer(lambda message, peer: None)
    await layer.start((ListenAddress("udp", "127.0.0.1", 0),))
    try:
        protocol = layer._udp[0]
        with caplog.at_level(logging.WARNING, "chorus.sip.transport"):
            protocol.error_received(ConnectionRefusedError(111, "Connection refused"))
            protocol.error_received(ConnectionRefusedError(111, "Connection refused"))
    finally:
        await layer.stop()
    assert layer.send_errors == 2
    # Rate-limited: a flood of ICMP errors is one line a second, with the running count.
    [record] = [r for r in caplog.records if r.name == "chorus.sip.transport"]
    assert "Connection refused" in record.getMessage()
    assert "1 send errors so far" in record.getMessage()


async def test_application_failure_is_logged_with_context_and_answered_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sent: list[bytes] = []

    class Recorder(SipTransportLayer):
        def send(self, data: bytes, peer: Peer) -> None:
            sent.append(data)

    ua = UserAgent()
    layer = Recorder(ua.handle_message)
    ua.transport = layer
    layer.bound.append(ListenAddress("udp", "127.0.0.1", 5060))

    async def handler(incoming: object) -> None:
        raise ValueError("application bug")

    ua.request_handler = handler  # type: ignore[assignment]
    request = Request(
        headers=Headers(
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-app"),
                ("From", "<sip:alice@127.0.0.1>;tag=a"),
                ("To", "<sip:room@127.0.0.1>"),
                ("Call-ID", "app-1"),
                ("CSeq", "1 MESSAGE"),
            ]
        ),
        method="MESSAGE",
        uri=SipUri(host="127.0.0.1", user="room"),
    )
    with caplog.at_level(logging.ERROR, "chorus.sip.ua"):
        ua.handle_message(request, PEER)
        assert await wait_until(lambda: any(b.startswith(b"SIP/2.0 500") for b in sent))
    [record] = [r for r in caplog.records if r.name == "chorus.sip.ua"]
    assert "application failed on MESSAGE" in record.getMessage()
    assert "app-1" in record.getMessage()
    await ua.close()
