"""Echo RTCP (RFC 3550 §6) on a fake clock: the reflector's sender report describes the
stream it sends back, the caller's receiver report gives loss, jitter and round trip, and
muxed RTCP on the RTP port is read, never echoed."""

from __future__ import annotations

import asyncio
import random
from typing import cast

from control.echo.reflector import RtpReflector
from control.media.rtcp import (
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    parse_compound,
    serialize_compound,
)
from control.media.rtp import RtpPacket
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
