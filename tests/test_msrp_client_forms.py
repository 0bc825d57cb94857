"""What real clients send, end to end through a running `chorus serve` (issue 8, item 5).

Blink and SylkServer (python-sipsimple) write CPIM with a bare-LF MIME part; the echo used to
answer it 400, so every message from those clients was refused. Here the form goes through the
echo service twice: as the body of one of our own SEND requests, and as the whole SEND chunk
of tests/data/msrp/cpim_sipsimple_lf.msrp byte for byte (only its paths filled in for this
session), written on a TCP connection of our own as msrplib would write it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from control.msrp import (
    ConnectionFailed,
    MessageReceived,
    ReportReceived,
    ResponseReceived,
    parse_chunk,
    parse_cpim,
)
from control.msrp.chat import ChatStream
from control.msrp.sdp import parse_msrp_media
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.session import Session
from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import SipClient, client_tls_context

pytestmark = pytest.mark.timeout(60)

DATA = Path(__file__).parent / "data" / "msrp"
VECTOR = (DATA / "cpim_sipsimple_lf.msrp").read_bytes()
SIPSIMPLE_CPIM = parse_chunk(VECTOR).body or b""


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess() as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


@pytest.fixture
async def msrp() -> AsyncIterator[MsrpTransport]:
    transport = MsrpTransport()
    transport.ssl_client = client_tls_context()
    yield transport
    await transport.stop()


def offer(media: sdp.MediaDescription) -> bytes:
    description = sdp.build_offer(
        origin=sdp.Origin("tester", "1", 1, "IN", "IP4", "127.0.0.1"),
        connection=sdp.Connection.for_address("127.0.0.1"),
        media=[media],
    )
    return sdp.serialize(description)


async def call_echo(sip: SipClient, chorus: ChorusProcess, stream: ChatStream) -> Session:
    port = chorus.tls_port if sip.transport_name == "tls" else chorus.sip_port
    scheme = "sips" if sip.transport_name == "tls" else "sip"
    session, response = await sip.call(
        f"{scheme}:echo@127.0.0.1:{port}", offer(stream.offer_media()), port
    )
    assert session is not None, response.status
    stream.answered(sdp.parse(response.body).media[0])
    return session


def test_vector_is_the_sipsimple_form() -> None:
    assert b"\r\n\r\nMIME-Version: 1.0\nContent-Type: text/plain" in SIPSIMPLE_CPIM
    assert SIPSIMPLE_CPIM.endswith(b'charset="utf8"\n\nhello')


@pytest.mark.parametrize("secure", [True, False], ids=["msrps", "msrp"])
async def test_sipsimple_cpim_is_echoed_with_200_not_400(
    chorus: ChorusProcess, msrp: MsrpTransport, secure: bool
) -> None:
    stream = ChatStream(msrp, secure=secure)
    async with SipClient("udp") as sip:
        session = await call_echo(sip, chorus, stream)
        await stream.wait_connected(10)
        mid = await stream.send("message/cpim", SIPSIMPLE_CPIM, success_report=True)
        status: int | None = None
        report: int | None = None
        echoed: MessageReceived | None = None
        while status is None or report is None or echoed is None:
            event = await asyncio.wait_for(stream.receive(), 10)
            match event:
                case ResponseReceived(message_id=m, status=s) if m == mid:
                    status = s
                    assert status == 200, f"the sipsimple form was refused: {event}"
                case ReportReceived(message_id=m, status=s) if m == mid:
                    report = s
                case MessageReceived():
                    echoed = event
                case ConnectionFailed():
                    pytest.fail(f"connection lost: {event}")
        assert (status, report) == (200, 200)
        assert echoed.content_type == "message/cpim" and echoed.body is not None
        back = parse_cpim(echoed.body)
        assert back.body == b"hello"
        assert back.content_type == 'text/plain; charset="utf8"'
        # What the echo sends is the strict RFC 3862 form: CRLF in both header blocks.
        assert b'MIME-Version: 1.0\r\nContent-Type: text/plain; charset="utf8"\r\n\r\nhello' in (
            echoed.body
        )
        assert b"\n" not in echoed.body.replace(b"\r\n", b"")
        assert [r.uri for r in back.recipients] == ["sip:alice@example.com"]
        await session.bye()


async def test_whole_msrplib_send_chunk_gets_200(
    chorus: ChorusProcess, msrp: MsrpTransport
) -> None:
    """The vector chunk as msrplib writes it (its header order, its transaction id and
    Message-ID), on a connection of our own: the echo answers 200, not 400."""
    stream = ChatStream(msrp, secure=False)
    async with SipClient("udp") as sip:
        port = chorus.sip_port
        session, response = await sip.call(
            f"sip:echo@127.0.0.1:{port}", offer(stream.offer_media()), port
        )
        assert session is not None, response.status
        theirs = parse_msrp_media(sdp.parse(response.body).media[0])
        chunk = parse_chunk(VECTOR)
        wire = VECTOR.replace(
            f"To-Path: {chunk.head.header('To-Path')}\r\n".encode(),
            f"To-Path: {theirs.endpoint}\r\n".encode(),
        ).replace(
            f"From-Path: {chunk.head.header('From-Path')}\r\n".encode(),
            f"From-Path: {stream.local_uri}\r\n".encode(),
        )
        assert wire.count(SIPSIMPLE_CPIM) == 1  # the body went out untouched
        reader, writer = await asyncio.open_connection(theirs.endpoint.host, theirs.endpoint.port)
        try:
            writer.write(wire)
            await writer.drain()
            seen = b""
            while b"MSRP kd93nf7sle2b " not in seen:
                piece = await asyncio.wait_for(reader.read(4096), 10)
                assert piece, f"connection closed; got {seen!r}"
                seen += piece
            assert b"MSRP kd93nf7sle2b 200 OK\r\n" in seen, seen
        finally:
            writer.close()
        await session.bye()
