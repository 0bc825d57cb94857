"""RFC 4475 torture messages sent to a running ``chorus serve`` over UDP and over TCP.

tests/test_sip_rfc4475.py holds the parser to the status each vector deserves; here the same
octets go through sockets, the transport, the transaction layer and the server, and each answer
on the wire must carry that status: 400 for the malformed ones, 505 for SIP/7.0, 416 for an
unknown Request-URI scheme, 420 for an unknown Require, 415 for a body that is not SDP; a
request with Max-Forwards 0 is processed as usual (Chorus is its endpoint). Responses among
the vectors get no answer at all. After every vector the server still takes an echo call
(INVITE 200, BYE 200) and has logged no traceback.

"Nothing else came back" is proven without sleeping, as in test_malformed_input.py: each
vector is followed by an OPTIONS probe on the same socket; the server handles one socket's
input in order, so any answer to the vector arrives before the probe's 200.

Each transport gets its own server: a vector sent over UDP leaves a server transaction behind
(Timer J, 32 s) that the same octets over TCP would match as a retransmission. Within one run
every top Via branch gets a suffix, since unkscm and novelsc share one (and a transaction).
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from control.sip.errors import SipParseError
from control.sip.message import parse_message
from tests.peers.chorus import ChorusProcess
from tests.peers.rawsip import HOST, RawTcp, RawUdp, raw_request, status_of, token
from tests.peers.sipclient import SipClient
from tests.test_sip_rfc4475 import INVALID, INVALID_RESPONSES, head_and_length, load

pytestmark = pytest.mark.timeout(240)

# The status each request vector must get from the server. INVALID is the parser suite's
# (400 and 505); the well-formed ones are answered above the parser (control/server.py,
# control/sip/useragent.py).
EXPECTED: dict[str, int] = {
    **{name: status for name, status in INVALID.items() if name not in INVALID_RESPONSES},
    "unkscm": 416,  # an unknown scheme in the Request-URI
    "novelsc": 416,  # soap.beep: a scheme Chorus does not serve
    "bext01": 420,  # Require: nothingSupportsThis, with an Unsupported header
    "invut": 415,  # INVITE with Content-Type application/unknownformat, with Accept
    # Max-Forwards 0 to an endpoint is processed as usual (RFC 4475 on zeromf); Chorus is
    # the endpoint, never a proxy.
    "zeromf": 200,
    # RFC 2543 style: 400 over UDP since an INVITE must carry a Contact (RFC 3261 §8.1.1.8),
    # over TCP since a stream needs a Content-Length (§18.3).
    "inv2543": 400,
}
# The same for a request the application answers: zeromf as a MESSAGE (request line and
# CSeq method changed, nothing else) reaches the application its Request-URI routes to (the
# conference, which relays a MESSAGE into a live room and answers 404 for a room that does not
# exist, as this one) instead of a 483.
ZEROMF_MESSAGE = "zeromf-message"
EXPECTED[ZEROMF_MESSAGE] = 404

SDP = (
    b"v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


def vector(name: str, transport: str) -> bytes:
    """The vector's octets, with a branch no other vector in this run shares."""
    if name == ZEROMF_MESSAGE:
        data = load("zeromf").replace(b"OPTIONS", b"MESSAGE")
        assert data.count(b"MESSAGE") == 2  # the request line and the CSeq
    else:
        data = load(name)
    if name == "multi01" and transport == "tcp":
        # Its l: 154 overstates the 152-octet body: a stream waits for two more octets
        # (the parser suite supplies them the same way).
        data += b"\r\n"
    try:
        parse_message(data)
    except SipParseError:
        return data  # refused by the parser: no transaction is made, leave every octet
    suffix = f"-{transport}-{name}".encode()
    # inv2543 has no branch: its RFC 2543 transaction is keyed by its own Call-ID.
    return re.sub(rb"(branch=[^;,\s]+)", rb"\1" + suffix, data, count=1)


def final_statuses(statuses: list[int]) -> list[int]:
    return [status for status in statuses if status >= 200]


def exchange_udp(port: int, data: bytes) -> list[int]:
    """Statuses of every answer to ``data``, up to the OPTIONS probe's 200."""
    probe_call_id = "probe-" + token()
    with RawUdp() as udp:
        udp.send(data, port)
        udp.send(raw_request("OPTIONS", port, call_id=probe_call_id, local_port=udp.port), port)
        statuses: list[int] = []
        while (answer := udp.receive(15.0)) is not None:
            if f"Call-ID: {probe_call_id}\r\n".encode() in answer:
                assert status_of(answer) == 200
                return statuses
            statuses.append(status_of(answer))
    raise AssertionError(f"no answer to the OPTIONS probe; got {statuses}")


def exchange_tcp(port: int, data: bytes) -> tuple[list[int], bool]:
    """Statuses of every answer to ``data`` on one connection, and whether it was closed.

    The probe follows on the same connection; a server that lost the framing closes it
    instead of answering the probe.
    """
    probe_call_id = "probe-" + token()
    probe = raw_request("OPTIONS", port, transport="TCP", call_id=probe_call_id)
    with RawTcp(port, timeout=15.0) as tcp:
        assert tcp.send(data)
        tcp.send(probe)
        result = tcp.read(quiet=15.0, limit=30.0, until_call_id=probe_call_id)
    answered = [r.call_id for r in result.responses]
    statuses = result.raw_statuses
    if probe_call_id in answered:
        assert statuses[-1] == 200
        statuses = statuses[:-1]
    else:
        assert result.closed, f"neither the probe's 200 nor a close; got {statuses}"
    return statuses, result.closed


def stream_unframeable(data: bytes) -> bool:
    """A message a stream cannot frame: no Content-Length, or a negative or doubled one."""
    head = data[: data.index(b"\r\n\r\n")].lower()
    lengths = re.findall(rb"\r\n(?:content-length|l)[ \t]*:", head)
    if len(lengths) != 1:
        return True
    _, length = head_and_length(data)
    return length is None or length < 0


async def echo_call_succeeds(chorus: ChorusProcess, transport: str) -> None:
    async with SipClient(transport) as sip:
        session, response = await asyncio.wait_for(
            sip.call(f"sip:echo@{HOST}:{chorus.sip_port}", SDP, chorus.sip_port), 15
        )
        assert response.status == 200 and session is not None, response.status
        bye = await asyncio.wait_for(session.request("BYE"), 15)
        assert bye.status == 200


@pytest.fixture(scope="module", params=["udp", "tcp"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, ChorusProcess]]:
    overrides: dict[str, dict[str, Any]] = {"server": {"trace_sip": False}}
    with ChorusProcess(overrides) as process:
        yield request.param, process
        assert process.alive, process.log()


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_request_vector_gets_its_status(served: tuple[str, ChorusProcess], name: str) -> None:
    transport, chorus = served
    data = vector(name, transport)
    if transport == "tcp" and name == "clerr":
        await clerr_waits_for_the_declared_body(chorus)
        return
    if transport == "udp":
        statuses = exchange_udp(chorus.sip_port, data)
        closed = False
    else:
        statuses, closed = exchange_tcp(chorus.sip_port, data)
    # One final answer, after at most a 100 Trying (an INVITE's, RFC 3261 §17.2.1).
    assert final_statuses(statuses) == [EXPECTED[name]], statuses
    assert all(s == 100 for s in statuses[:-1]), statuses
    if transport == "tcp":
        # Only a message the stream cannot frame ends the connection (RFC 3261 §18.3).
        assert closed == stream_unframeable(data)
    await echo_call_succeeds(chorus, transport)
    assert chorus.alive, chorus.log()
    assert "Traceback" not in chorus.log(), chorus.log()


@pytest.mark.parametrize("name", sorted(INVALID_RESPONSES))
async def test_response_vector_gets_no_answer(served: tuple[str, ChorusProcess], name: str) -> None:
    # RFC 3261 §8.1.3.3: a malformed response is discarded; nothing is ever answered to it.
    transport, chorus = served
    data = load(name)
    if transport == "udp":
        assert exchange_udp(chorus.sip_port, data) == []
    else:
        statuses, closed = exchange_tcp(chorus.sip_port, data)
        assert statuses == [] and not closed
    await echo_call_succeeds(chorus, transport)
    assert "Traceback" not in chorus.log(), chorus.log()


async def clerr_waits_for_the_declared_body(chorus: ChorusProcess) -> None:
    """RFC 4475 §3.1.2.2: over a stream a Content-Length past the octets sent makes an
    incomplete message, not an error: nothing is answered and the connection stays open for
    the rest (so no probe can follow it on this connection)."""
    with RawTcp(chorus.sip_port) as tcp:
        assert tcp.send(load("clerr"))
        result = tcp.read(quiet=3.0, limit=3.0)
        assert result.raw == [] and not result.closed
        tcp.sock.shutdown(socket.SHUT_WR)
    await echo_call_succeeds(chorus, "tcp")
    assert "Traceback" not in chorus.log(), chorus.log()
