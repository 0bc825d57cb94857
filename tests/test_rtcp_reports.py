"""RTCP sender/receiver reports (RFC 3550 §6) from the mixer: intervals, loss, jitter, RTT.

The sans-IO session is driven with a fake clock, two of them back to back, so every figure
is exact; then a running mixer on loopback sends its reports over rtcp-mux (RFC 5761) and
SRTCP, and reads back a receiver report whose LSR/DLSR give the round trip.
"""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from control.media.engine import ParticipantId, RoomId
from control.media.rtcp import (
    ReceiverReport,
    ReportBlock,
    SenderReport,
    SourceDescription,
    parse_compound,
    serialize_compound,
)
from control.media.rtcpsession import RtcpSession, rtcp_interval
from control.media.rtp import RtpPacket, is_rtcp
from control.media.stream import ParticipantStream
from control.sip import sdp
from tests.peers.wait import wait_until
from tests.test_media_mixer import _core_stream, _peer, make_mixer

E_MINUS_HALF = 2.718281828459045 - 1.5


def test_interval_follows_rfc3550_a7() -> None:
    rng = random.Random(1)
    common = {"members": 2, "senders": 2, "we_sent": True, "rng": rng}
    # small packets, plenty of bandwidth: the minimum applies, halved before the first report
    first = [
        rtcp_interval(rtcp_bandwidth=400.0, avg_rtcp_size=100, initial=True, minimum=5.0, **common)
        for _ in range(200)
    ]
    assert 2.5 * 0.5 / E_MINUS_HALF <= min(first) < max(first) <= 2.5 * 1.5 / E_MINUS_HALF
    later = [
        rtcp_interval(rtcp_bandwidth=400.0, avg_rtcp_size=100, initial=False, minimum=5.0, **common)
        for _ in range(200)
    ]
    assert 5 * 0.5 / E_MINUS_HALF <= min(later) < max(later) <= 5 * 1.5 / E_MINUS_HALF
    # little bandwidth: the interval grows past the minimum (avg size × members / bandwidth)
    slow = rtcp_interval(
        rtcp_bandwidth=10.0, avg_rtcp_size=200, initial=False, minimum=5.0, **common
    )
    assert slow >= 40 * 0.5 / E_MINUS_HALF
    # §6.2: a reduced minimum is the application's choice
    fast = rtcp_interval(
        rtcp_bandwidth=400.0, avg_rtcp_size=100, initial=False, minimum=0.2, **common
    )
    assert fast <= 0.5 * 1.5 / E_MINUS_HALF


def test_two_sessions_back_to_back_measure_loss_jitter_and_rtt() -> None:
    """A sends 100 packets to B, 10 lost; B reports; A works out the round trip: 0.3 s.

    Clocks: A's reports leave at t, arrive at B 0.1 s later; B answers 0.1 s after that
    (DLSR 0.1 s) and the answer arrives 0.1 s later: RTT = 0.3 - 0.1 = 0.2 s of transit.
    """
    a = RtcpSession(ssrc=0xA, clock_rate=8000, cname="a", rng=random.Random(2), now=0.0,
                    wall_offset=1000.0, min_interval=1.0)  # fmt: skip
    b = RtcpSession(ssrc=0xB, clock_rate=8000, cname="b", rng=random.Random(3), now=0.0,
                    wall_offset=5000.0, min_interval=1.0)  # fmt: skip
    lost = set(range(20, 30))
    for k in range(100):
        t = k * 0.02
        a.on_sent(1000 + 160 * k, 160, t)
        if k not in lost:
            b.on_rtp(RtpPacket(0, 500 + k, 1000 + 160 * k, 0xA, bytes(160)), t + 0.05)
    now = 2.0
    assert a.due(now)
    sr = a.report(now)
    first, sdes = parse_compound(sr)
    assert isinstance(first, SenderReport) and isinstance(sdes, SourceDescription)
    assert (first.ssrc, first.packet_count, first.octet_count) == (0xA, 100, 16000)
    # the SR's RTP time is the last packet's (at 1.98 s) moved on to 2.0 s: 160 more units
    assert first.rtp_timestamp == 1000 + 160 * 99 + 160
    assert sdes.chunks[0].cname == "a"
    b.receive(sr, now + 0.1)
    rr = b.report(now + 0.2)
    report = parse_compound(rr)[0]
    assert isinstance(report, ReceiverReport)  # B sent no RTP: RR, not SR
    (block,) = report.reports
    assert block.ssrc == 0xA and block.cumulative_lost == 10
    assert block.fraction_lost == (10 << 8) // 100
    assert block.lsr == first.ntp_middle and abs(block.dlsr / 65536 - 0.1) < 1e-3
    a.receive(rr, now + 0.3)
    quality = a.quality()
    assert quality.rtt == pytest.approx(0.2, abs=1e-3)
    assert quality.remote_packets_lost == 10
    assert quality.remote_fraction_lost == pytest.approx(block.fraction_lost / 256)
    theirs = b.quality()
    # A.1: the first packet only starts the source's probation and is not counted
    assert (theirs.packets_received, theirs.packets_lost) == (89, 10)
    assert theirs.fraction_lost == pytest.approx(block.fraction_lost / 256)
    assert theirs.jitter == 0.0  # evenly spaced arrivals: no interarrival jitter (A.8)
    assert a.next_report > now and b.next_report > now + 0.2


def test_stream_reads_rtcp_from_either_port_and_picks_where_reports_go() -> None:
    rng = random.Random(4)
    plain = _core_stream("PCMU", 6000, rng)  # no rtcp-mux offered: port + 1
    assert not plain.terms.rtcp_mux
    assert plain.rtcp_destination == ("127.0.0.1", 6001)
    rr = serialize_compound([ReceiverReport(0x1234), SourceDescription.cname(0x1234, "x")])
    assert plain.receive_rtcp(rr, ("127.0.0.1", 6007), now=1.0)
    assert plain.rtcp_destination == ("127.0.0.1", 6007)  # symmetric: where theirs come from
    assert not plain.receive_rtcp(b"\x80\xc9\x00", ("127.0.0.1", 6007), now=1.0)
    assert (plain.stats.rtcp_received, plain.stats.rtcp_errors) == (1, 1)
    muxed = _muxed_stream(rng)
    muxed.receive(rr, ("127.0.0.1", 6100), now=1.0)  # RTCP on the RTP port (RFC 5761 §4)
    assert muxed.stats.rtcp_received == 1 and muxed.stats.garbage == 0
    assert muxed.rtcp_destination == ("127.0.0.1", 6100)


def _muxed_stream(rng: random.Random) -> ParticipantStream:
    from control.media.answer import answer_audio, supported_rtpmaps
    from control.media.srtp import SrtpPolicy

    peer = _peer("PCMU")
    peer.port = 6100
    offer = peer.offer()
    offer.media[0].attributes.append(sdp.Attribute("rtcp-mux"))
    terms = answer_audio(
        offer, 0, supported=supported_rtpmaps(["PCMU"]), srtp=SrtpPolicy.OPTIONAL,
        randbytes=rng.randbytes,
    )  # fmt: skip
    return ParticipantStream(terms, rng=rng, now=0.0)


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
async def test_mixer_sends_reports_over_rtcp_mux_and_reads_the_answer(srtp: bool) -> None:
    engine = make_mixer(21, rtcp_interval=0.2)
    try:
        peers = [_peer("PCMU", srtp=srtp, seed=1), _peer("PCMA", srtp=srtp, seed=2)]
        for peer in peers:
            await peer.open()
        offers = []
        for index, peer in enumerate(peers):
            offer = peer.offer()
            offer.media[0].attributes.append(sdp.Attribute("rtcp-mux"))
            answer = await engine.attach(RoomId("r"), ParticipantId(f"p{index}"), offer, 0)
            assert sdp.Attribute("rtcp-mux") in answer.accept.attributes  # RFC 5761 §5.1.1
            peer.answered(offer, answer)
            offers.append(offer)
        listener = peers[0]
        context = listener._context

        def reports() -> list[SenderReport]:
            found = []
            for data in list(listener.receiver.datagrams):
                if not is_rtcp(data):
                    continue
                if context is not None:
                    try:
                        data = context.unprotect_rtcp(data)
                    except Exception:
                        continue  # already unprotected once (replay check)
                found += [p for p in parse_compound(data) if isinstance(p, SenderReport)]
            return found

        seen: list[SenderReport] = []

        def got_sr() -> bool:
            seen.extend(reports())
            listener.receiver.datagrams[:] = [
                d for d in listener.receiver.datagrams if not is_rtcp(d)
            ]
            return bool(seen)

        play = asyncio.ensure_future(peers[1].play(700.0, 3.0))
        assert await wait_until(got_sr, timeout=30.0), "no sender report on the RTP port"
        sr = seen[0]
        rtp_ssrcs = {p.ssrc for p in listener.packets()}
        assert rtp_ssrcs == {sr.ssrc} and sr.packet_count > 0
        # Answer it: an RR about the mixer's stream, echoing its NTP time (LSR) at once.
        block = ReportBlock(sr.ssrc, 64, 7, 0, 80, lsr=sr.ntp_middle, dlsr=0)
        rr = serialize_compound([ReceiverReport(0x5EED, (block,)),
                                 SourceDescription.cname(0x5EED, "t")])  # fmt: skip
        if context is not None:
            rr = context.protect_rtcp(rr)
        assert listener.receiver.transport is not None and listener.remote is not None
        listener.receiver.transport.sendto(rr, listener.remote)

        async def measured() -> bool:
            quality = (await engine.quality())[(RoomId("r"), ParticipantId("p0"))]
            return quality.rtt is not None

        deadline = asyncio.get_running_loop().time() + 30.0
        while not await measured() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        quality = (await engine.quality())[(RoomId("r"), ParticipantId("p0"))]
        assert quality.rtt is not None and 0.0 <= quality.rtt < 5.0
        assert quality.remote_fraction_lost == 0.25 and quality.remote_packets_lost == 7
        assert quality.remote_jitter == pytest.approx(80 / 8000)
        await play
        talker = (await engine.quality())[(RoomId("r"), ParticipantId("p1"))]
        assert talker.packets_received > 100 and talker.packets_lost == 0
        counters = await engine.stats()
        assert counters.rtcp_sent >= 2 and counters.rtcp_received >= 1
        assert counters.rtcp_errors == 0
        for peer in peers:
            peer.close()
    finally:
        await engine.close()


def test_sr_timestamp_matches_what_was_sent() -> None:
    """The SR's RTP timestamp extrapolates the last sent packet's (§6.4.1)."""
    stream = _core_stream("PCMU", 6200, random.Random(9))
    for k in range(5):
        data = stream.packet(bytes(160), now=k * 0.02)
    (last_ts,) = struct.unpack_from("!I", data, 4)
    sr = parse_compound(stream.rtcp.report(0.08 + 0.01))[0]
    assert isinstance(sr, SenderReport)
    assert sr.rtp_timestamp == (last_ts + 80) & 0xFFFFFFFF
    assert sr.packet_count == 5 and sr.octet_count == 800
