"""Echo RTCP (RFC 3550 §6) on a fake clock: the reflector's sender report describes the
stream it sends back, the caller's receiver report gives loss, jitter and round trip, and
muxed RTCP on the RTP port is read, never echoed; a=rtcp-mux is answered (RFC 5761) and
Opus counts in its 48 kHz RTP clock.  Then through the server's own objects, on loopback:
`[rtp] rtcp_interval` reaches the echo and reports flow on the negotiated port."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from control.echo.app import EchoApp
from control.echo.reflector import RtpReflector
from control.media.rtcp import (
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    parse_compound,
    serialize_compound,
)
from control.media.rtp import RtpPacket, is_rtcp
from control.server import Server
from control.sip import sdp
from tests.peers.inprocess import running_server
from tests.peers.ports import LOOPBACK
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until
from tests.test_echo_srtp import CALLER, OUR_SSRC, RecordingTransport

CALLER_SSRC = 0x11223344


def test_echo_sends_sender_reports_and_reads_the_callers_receiver_report() -> None:
    clock = [100.0]
    reflector = RtpReflector(
        OUR_SSRC, rtcp_interval=1.0, rng=random.Random(1), clock=lambda: clock[0]
    )
    transport = RecordingTransport()
    reflector.connection_made(cast(asyncio.BaseTransport, transport))
    assert reflector.rtcp is not None
    for k in range(50):
        clock[0] = 100.0 + k * 0.02
        packet = RtpPacket(0, 7 + k, 3000 + 160 * k, CALLER_SSRC, bytes(160))
        reflector.datagram_received(packet.serialize(), CALLER)
    assert reflector.packets_out == 50
    # the first report falls due within 0.62 s (half the 1 s minimum, randomised, A.7)
    assert reflector.rtcp.next_report <= 100.0 + 0.5 * 1.5 / 1.21828 + 1e-9
    clock[0] = 101.0
    due = reflector.report(clock[0])
    assert due is not None
    data, dest = due
    assert dest == (CALLER[0], CALLER[1] + 1)  # no RTCP from them yet: RTP port + 1
    sr, sdes = parse_compound(data)
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert sr.ssrc == OUR_SSRC and sr.packet_count >= 50
    (block,) = sr.reports  # about the caller's stream, under the caller's SSRC
    assert block.ssrc == CALLER_SSRC and block.cumulative_lost == 0
    # The caller's RR about our stream, muxed on the RTP port: read, not echoed back.
    rr = serialize_compound(
        [
            ReceiverReport(CALLER_SSRC, (ReportBlock(OUR_SSRC, 128, 3, 0, 160, sr.ntp_middle, 0),)),
            SourceDescription.cname(CALLER_SSRC, "caller"),
        ]
    )
    sent_before = len(transport.sent)
    reflector.datagram_received(rr, CALLER)
    assert len(transport.sent) == sent_before
    quality = reflector.rtcp.quality()
    assert quality.remote_fraction_lost == 0.5 and quality.remote_packets_lost == 3
    assert quality.remote_jitter == 160 / 8000
    assert quality.rtt is not None and 0.0 <= quality.rtt < 0.01  # answered "at once"
    assert reflector.rtcp_remote == CALLER  # their RTCP came from here: ours goes there
    reflector.datagram_received(b"\x80\xc9\x00\x05junk", CALLER)
    assert reflector.rtcp_errors == 1


OPUS_MUX_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\n"
    "a=rtpmap:101 telephone-event/48000\r\n{extra}"
)


def test_echo_answers_rtcp_mux_and_counts_opus_in_its_48_khz_clock() -> None:
    """RFC 5761 §5.1.1 a=rtcp-mux answered; RFC 7587 §4.1: Opus's RTP clock is 48000, so
    perfectly paced 20 ms packets (960 ticks apart) have no jitter, and the SR's RTP
    timestamp runs on 48 kHz from the last one sent (RFC 3550 §6.4.1)."""
    offer = sdp.parse(OPUS_MUX_OFFER.format(port=40000, extra="a=rtcp-mux\r\n").encode())
    clock = [10.0]
    reflector = RtpReflector(
        OUR_SSRC, rtcp_interval=0.5, rng=random.Random(2), clock=lambda: clock[0]
    )
    transport = RecordingTransport()
    reflector.connection_made(cast(asyncio.BaseTransport, transport))
    assert reflector.negotiate(offer.media[0]) == [sdp.Attribute("rtcp-mux")]
    assert reflector.rtcp_mux and reflector.clock_of(111) == 48000
    assert reflector.clock_of(0) == 8000  # a static type keeps RFC 3551's clock
    for k in range(50):
        clock[0] = 10.0 + k * 0.02
        packet = RtpPacket(111, 1 + k, 5000 + 960 * k, CALLER_SSRC, bytes(40))
        reflector.datagram_received(packet.serialize(), CALLER)
    assert reflector.rtcp is not None and reflector.rtcp.clock_rate == 48000
    assert reflector.clock_of(101) is None  # telephone-event rides on Opus's clock
    dtmf = RtpPacket(101, 51, 5000 + 960 * 49, CALLER_SSRC, bytes(4))
    reflector.datagram_received(dtmf.serialize(), CALLER)  # does not restart the statistics
    assert reflector.rtcp.clock_rate == 48000
    quality = reflector.rtcp.quality()
    # 49 voice packets + the DTMF one (RFC 3550 A.1: the first, on probation, is not counted)
    assert quality.packets_received == 50 and quality.jitter == 0.0
    clock[0] = 10.0 + 49 * 0.02 + 0.1
    due = reflector.report(clock[0])
    assert due is not None
    data, dest = due
    assert dest == CALLER  # rtcp-mux: to their RTP address (RFC 5761 §5.1.3)
    sr = parse_compound(data)[0]
    assert isinstance(sr, SenderReport)
    assert sr.rtp_timestamp == 5000 + 960 * 49 + 4800  # 0.1 s later on a 48 kHz clock
    (block,) = sr.reports
    assert block.jitter == 0
    # A re-offer without rtcp-mux goes back to port + 1 (RFC 3550 §11).
    plain = sdp.parse(OPUS_MUX_OFFER.format(port=40000, extra="").encode())
    assert reflector.negotiate(plain.media[0]) == []
    assert reflector.rtcp_destination == (CALLER[0], CALLER[1] + 1)


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int]]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.append((data, (str(addr[0]), int(addr[1]))))

    def reports(self) -> list[tuple[SenderReport, tuple[str, int]]]:
        found = []
        for data, addr in self.received:
            if is_rtcp(data):
                first = parse_compound(data)[0]
                if isinstance(first, SenderReport):
                    found.append((first, addr))
        return found


async def _pair() -> tuple[int, _Socket, _Socket]:
    """An RTP socket on an even port and its RTCP socket on the next one."""
    loop = asyncio.get_running_loop()
    for _ in range(50):
        low = random.randrange(30000, 60000, 2)
        try:
            rtp_t, rtp = await loop.create_datagram_endpoint(_Socket, local_addr=(LOOPBACK, low))
        except OSError:
            continue
        try:
            _, rtcp = await loop.create_datagram_endpoint(_Socket, local_addr=(LOOPBACK, low + 1))
        except OSError:
            rtp_t.close()
            continue
        return low, rtp, rtcp
    raise RuntimeError("no free RTP/RTCP port pair")


@pytest.fixture
async def echo_server(tmp_path: Path) -> AsyncIterator[tuple[Server, int]]:
    async with running_server(
        tmp_path / "spool",
        rtp={"codecs": ["opus", "PCMU", "telephone-event"], "rtcp_interval": 0.25},
        transports=("udp",),
        rtp_ports=100,
    ) as running:
        yield running


@pytest.mark.parametrize("mux", [True, False], ids=["rtcp-mux", "port-plus-one"])
async def test_echo_call_reports_on_the_negotiated_rtcp_port_at_the_configured_interval(
    echo_server: tuple[Server, int], mux: bool
) -> None:
    """Through `chorus serve`'s objects: `[rtp] rtcp_interval` reaches the echo, an offered
    a=rtcp-mux is answered and the echo's sender reports come from its RTP port to ours;
    without it they go between the RTCP ports.  The caller's RR comes back the same way and
    gives a round trip."""
    server, sip_port = echo_server
    echo = cast(EchoApp, server.applications["echo"])
    port, rtp, rtcp = await _pair()
    extra = "a=rtcp-mux\r\n" if mux else ""
    try:
        async with SipClient("udp") as sip:
            session, response = await sip.call(
                f"sip:echo@127.0.0.1:{sip_port}",
                OPUS_MUX_OFFER.format(port=port, extra=extra).encode(),
                sip_port,
            )
            assert session is not None, response.status
            answer = sdp.parse(response.body)
            audio = answer.media[0]
            assert audio.rtcp_mux is mux
            assert audio.rtpmaps()[0].matches("opus", 48000)
            (call,) = echo.calls
            reflector = call.media.reflector
            assert reflector.rtcp_interval == 0.25  # from [rtp] rtcp_interval
            ours = (LOOPBACK, audio.port)
            assert rtp.transport is not None and rtcp.transport is not None
            listener = rtp if mux else rtcp
            k = 0
            while not listener.reports():  # send until a report came back (A.7 timing)
                packet = RtpPacket(111, 1 + k, 960 * k, CALLER_SSRC, bytes(40))
                rtp.transport.sendto(packet.serialize(), ours)
                k += 1
                await asyncio.sleep(0.02)
                assert k < 1500, "no sender report from the echo"
            sr, source = listener.reports()[0]
            assert sr.ssrc == reflector.ssrc
            assert source == (ours if mux else (LOOPBACK, audio.port + 1))
            other = rtcp if mux else rtp
            assert not other.reports(), "a report on the port not negotiated"
            assert reflector.rtcp is not None and reflector.rtcp.clock_rate == 48000
            rr = serialize_compound(
                [
                    ReceiverReport(
                        CALLER_SSRC, (ReportBlock(reflector.ssrc, 0, 0, 0, 0, sr.ntp_middle, 0),)
                    ),
                    SourceDescription.cname(CALLER_SSRC, "caller"),
                ]
            )
            assert listener.transport is not None
            listener.transport.sendto(rr, source)
            session_rtcp = reflector.rtcp
            assert await wait_until(lambda: session_rtcp.rtt is not None)
            assert reflector.rtcp_errors == 0
            await session.bye()
    finally:
        for sock in (rtp, rtcp):
            if sock.transport is not None:
                sock.transport.close()
