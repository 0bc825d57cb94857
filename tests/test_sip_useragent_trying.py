"""The INVITE's 100 (Trying) goes out only when the application has not answered first
(RFC 3261 §17.2.1: the server transaction MUST send it when the TU takes longer than 200 ms):
an INVITE answered at once gets its final response alone, one answered late gets 100 then
the final (the 100 with the request's Timestamp, §8.2.6.1), and a retransmission before any
answer gets the 100 at once. A recording transport stands in for the socket (what was sent
is the assertion)."""

from __future__ import annotations

import asyncio

from control.sip.message import Response, parse_message
from control.sip.transport import Peer
from control.sip.useragent import IncomingRequest, UserAgent

PEER = Peer("udp", "127.0.0.1", 5999)


def invite(call_id: str) -> bytes:
    return (
        "INVITE sip:echo@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-" + call_id + "\r\n"
        "From: <sip:alice@127.0.0.1>;tag=a\r\n"
        "To: <sip:echo@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\n"
        "Timestamp: 54\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class RecordingTransport:
    """What the UA sends, parsed, in order."""

    def __init__(self) -> None:
        self.sent: list[Response] = []

    def send(self, data: bytes, peer: Peer) -> None:
        message = parse_message(data)
        assert isinstance(message, Response)
        self.sent.append(message)

    def statuses(self) -> list[int]:
        return [r.status for r in self.sent]


def user_agent(answer_after: asyncio.Event | None) -> tuple[UserAgent, RecordingTransport]:
    ua = UserAgent()
    transport = RecordingTransport()
    ua.transport = transport  # type: ignore[assignment]

    async def handler(incoming: IncomingRequest) -> None:
        if answer_after is not None:
            await answer_after.wait()
        incoming.respond(200)  # Accepted: no retransmission of its own

    ua.request_handler = handler
    return ua, transport


def receive(ua: UserAgent, data: bytes) -> None:
    message = parse_message(data)
    ua.handle_message(message, PEER)


async def settle(transport: RecordingTransport, count: int) -> None:
    async with asyncio.timeout(30):
        while len(transport.sent) < count:
            await asyncio.sleep(0.01)


async def test_an_invite_answered_at_once_gets_no_100() -> None:
    ua, transport = user_agent(None)
    receive(ua, invite("quick"))
    await settle(transport, 1)
    await asyncio.sleep(0.3)  # past the moment a 100 would have gone out
    assert transport.statuses() == [200]
    await ua.close()


async def test_an_invite_answered_late_gets_its_100_first_with_the_timestamp() -> None:
    later = asyncio.Event()
    ua, transport = user_agent(later)
    receive(ua, invite("slow"))
    await settle(transport, 1)
    assert transport.statuses() == [100]
    assert transport.sent[0].headers.get_raw("Timestamp") == ["54"]
    assert transport.sent[0].to.tag is None
    later.set()
    await settle(transport, 2)
    assert transport.statuses() == [100, 200]
    await ua.close()


async def test_a_retransmission_before_any_answer_gets_the_100_at_once() -> None:
    later = asyncio.Event()
    ua, transport = user_agent(later)
    receive(ua, invite("again"))
    receive(ua, invite("again"))  # same branch: the transaction's retransmission
    assert transport.statuses() == [100]  # sent synchronously, not at the sweep
    await asyncio.sleep(0.3)
    assert transport.statuses() == [100]  # the sweep sends no second one
    later.set()
    await settle(transport, 2)
    assert transport.statuses() == [100, 200]
    await ua.close()
