"""RTP, RTCP and RFC 4733 DTMF: byte vectors built by hand, properties, trackers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.media.dtmf import DtmfError, DtmfReceiver, TelephoneEvent, digit_to_event
from control.media.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpError,
    RtcpUnknown,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    parse_compound,
    serialize_compound,
)
from control.media.rtp import (
    RtpError,
    RtpPacket,
    RtpSender,
    SequenceTracker,
    is_rtcp,
    seq_delta,
    ts_delta,
)

# A PCMU packet: V=2, PT 0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304, 4 octets payload.
PCMU_PACKET = bytes.fromhex("80 00 1234 deadbeef 01020304 ff7f0080")
# V=2 P=1 X=1 CC=2 M=1 PT=101 seq 65535 ts 1 ssrc 0xAABBCCDD, CSRCs 1 and 2,
# extension profile 0xBEDE with one word, payload 0x0a8003e8, then 4 octets padding.
FULL_PACKET = bytes.fromhex(
    "b2 e5 ffff 00000001 aabbccdd 00000001 00000002 bede0001 10ff0000 0a8003e8 00000004"
)


def test_parse_simple_vector() -> None:
    p = RtpPacket.parse(PCMU_PACKET)
    assert (p.payload_type, p.sequence, p.timestamp, p.ssrc) == (0, 0x1234, 0xDEADBEEF, 0x01020304)
    assert p.payload == bytes.fromhex("ff7f0080")
    assert not p.marker and p.csrcs == () and not p.has_extension and p.padding == 0
    assert p.serialize() == PCMU_PACKET


def test_parse_full_vector() -> None:
    p = RtpPacket.parse(FULL_PACKET)
    assert p.marker and p.payload_type == 101 and p.sequence == 65535 and p.timestamp == 1
    assert p.csrcs == (1, 2)
    assert p.extension_profile == 0xBEDE and p.extension == bytes.fromhex("10ff0000")
    assert p.padding == 4
    assert p.payload == bytes.fromhex("0a8003e8")
    assert p.serialize() == FULL_PACKET


@pytest.mark.parametrize(
    "data",
    [
        b"",
        PCMU_PACKET[:11],
        bytes([0x40]) + PCMU_PACKET[1:],  # version 1
        bytes([0x8F]) + PCMU_PACKET[1:],  # 15 CSRCs that are not there
        bytes([0x90]) + PCMU_PACKET[1:12],  # extension header missing
        bytes([0x90]) + PCMU_PACKET[1:12] + bytes.fromhex("bede0005"),  # extension too long
        bytes([0xA0]) + PCMU_PACKET[1:-1] + b"\x00",  # padding count 0
        bytes([0xA0]) + PCMU_PACKET[1:-1] + b"\x20",  # padding longer than the packet
    ],
)
def test_garbage_is_rejected(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


@given(st.binary(max_size=80))
def test_any_bytes_parse_or_raise(data: bytes) -> None:
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        return
    again = RtpPacket.parse(p.serialize())
    assert again == p


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=40),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    ext=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12))),
    padding=st.integers(0, 255),
)
def test_round_trip(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    payload: bytes,
    marker: bool,
    csrcs: list[int],
    ext: tuple[int, bytes] | None,
    padding: int,
) -> None:
    profile, data = (None, b"") if ext is None else (ext[0], ext[1] + bytes(-len(ext[1]) % 4))
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, tuple(csrcs), profile, data, padding)
    assert RtpPacket.parse(p.serialize()) == p


def test_rtcp_demux() -> None:
    assert not is_rtcp(PCMU_PACKET)
    assert is_rtcp(bytes.fromhex("80c8 0006") + bytes(24))  # SR
    assert is_rtcp(bytes.fromhex("81c9 0007") + bytes(28))  # RR
    # RTP with marker and PT 72 would be 0xC8: that is why RFC 5761 §4 forbids PT 64-95.
    assert not is_rtcp(bytes.fromhex("80e5") + bytes(10))  # PT 101 with marker
    assert not is_rtcp(b"\x80")


def test_wrap_deltas() -> None:
    assert seq_delta(2, 65534) == 4
    assert seq_delta(65534, 2) == -4
    assert seq_delta(10, 10) == 0
    assert ts_delta(100, 0xFFFFFF00) == 356
    assert ts_delta(0xFFFFFF00, 100) == -356


def test_tracker_probation_then_wrap() -> None:
    t = SequenceTracker()
    first = t.update(7, 65534)
    assert first.new_source and not first.valid
    second = t.update(7, 65535)
    assert second.valid and second.extended_seq == 65535
    assert t.update(7, 0).extended_seq == 65536
    assert t.update(7, 2).extended_seq == 65538  # 1 lost
    late = t.update(7, 1)
    assert late.valid and late.extended_seq == 65537
    assert t.expected == 4 and t.received == 4 and t.lost == 0
    assert t.cycles == 65536


def test_tracker_loss_and_ssrc_change() -> None:
    t = SequenceTracker(min_sequential=1)
    assert t.update(1, 100).valid
    t.update(1, 101)
    t.update(1, 104)
    assert t.expected == 5 and t.received == 3 and t.lost == 2
    change = t.update(2, 5000)
    assert change.new_source and change.valid and t.ssrc == 2 and t.received == 1


def test_tracker_restart_needs_two_sequential() -> None:
    t = SequenceTracker(min_sequential=1)
    t.update(1, 100)
    jump = t.update(1, 20000)
    assert not jump.valid
    confirmed = t.update(1, 20001)
    assert confirmed.valid and confirmed.resynced and t.base_seq == 20001


def test_sender_stamps_and_marks_talkspurts() -> None:
    s = RtpSender(0, random.Random(1))
    ssrc, seq, ts = s.ssrc, s.sequence, s.timestamp
    p1 = s.stamp(b"a" * 160, 160)
    p2 = s.stamp(b"b" * 160, 160)
    s.skip(800)
    p3 = s.stamp(b"c" * 160, 160)
    assert (p1.ssrc, p1.sequence, p1.timestamp, p1.marker) == (ssrc, seq, ts, True)
    assert p2.sequence == (seq + 1) & 0xFFFF and p2.timestamp == (ts + 160) & 0xFFFFFFFF
    assert not p2.marker
    assert p3.marker and p3.timestamp == (ts + 1120) & 0xFFFFFFFF
    assert s.packets_sent == 3 and s.octets_sent == 480
    # Same seed, same numbers: nothing random sneaks in.
    assert RtpSender(0, random.Random(1)).ssrc == ssrc


# --- RTCP --------------------------------------------------------------------------

# SR from SSRC 0x11111111 with one report block about 0x22222222, then SDES CNAME
# "ab" and a BYE with reason "bye"; assembled by hand per RFC 3550 §6.4.1, §6.5, §6.6.
SR_SDES_BYE = bytes.fromhex(
    "81c8000c 11111111 e8e8e8e8 80000000 00001000 00000064 00003e80"
    "22222222 05000003 00010010 00000020 e8e88000 00010000"
    "81ca0003 11111111 01026162 00000000"
    "81cb0002 11111111 03627965"
)


def test_rtcp_compound_vector() -> None:
    sr, sdes, bye = parse_compound(SR_SDES_BYE)
    assert isinstance(sr, SenderReport)
    assert sr.ssrc == 0x11111111 and sr.ntp_seconds == 0xE8E8E8E8
    assert sr.ntp_fraction == 0x80000000 and sr.rtp_timestamp == 0x1000
    assert sr.packet_count == 100 and sr.octet_count == 16000
    (block,) = sr.reports
    assert block == ReportBlock(0x22222222, 5, 3, 0x10010, 0x20, 0xE8E88000, 0x10000)
    assert sr.ntp_middle == 0xE8E88000
    assert isinstance(sdes, SourceDescription) and sdes.chunks[0].cname == "ab"
    assert bye == Bye((0x11111111,), b"bye")
    assert serialize_compound([sr, sdes, bye]) == SR_SDES_BYE


def test_rtcp_negative_cumulative_loss_and_unknown_types() -> None:
    rr = ReceiverReport(7, (ReportBlock(9, 0, -2, 70000, 5),))
    app = RtcpUnknown(204, 1, b"name" + b"data")
    data = serialize_compound([rr, app])
    assert parse_compound(data) == [rr, app]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9",
        bytes.fromhex("40c90001 00000001"),  # version 1
        bytes.fromhex("80c90005 00000001"),  # length past the datagram
        bytes.fromhex("81c90001 00000001"),  # one report block that is not there
        bytes.fromhex("a0c90001 00000001 80c90001 00000002"),  # padding not on the last
        bytes.fromhex("81ca0002 00000001 0105616263"),  # SDES item past the end
        bytes.fromhex("81ca0001 00000001"),  # SDES chunk without its end item
    ],
)
def test_rtcp_garbage(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_compound(data)


@given(st.binary(max_size=120))
def test_rtcp_any_bytes(data: bytes) -> None:
    try:
        packets = parse_compound(data)
    except RtcpError:
        return
    # Whatever parsed re-serializes and parses to the same thing.
    assert parse_compound(serialize_compound(packets)) == packets


@given(
    st.lists(
        st.tuples(
            st.integers(0, 31),
            st.sampled_from([200, 201, 202, 203, 204, 205]),
            st.binary(max_size=64).map(lambda b: b + bytes(-len(b) % 4)),
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(0, 3),
)
def test_rtcp_well_framed_bytes(packets: list[tuple[int, int, bytes]], pad: int) -> None:
    # Framing is right, bodies are random: the body parsers get exercised for real.
    data = b"".join(
        bytes([0x80 | c, pt]) + (len(b) // 4).to_bytes(2, "big") + b for c, pt, b in packets
    )
    if pad:
        last = len(data) - 4 - len(packets[-1][2])
        body = packets[-1][2] + bytes(4 * pad - 1) + bytes([4 * pad])
        data = data[:last] + bytes([0xA0 | packets[-1][0], packets[-1][1]])
        data += (len(body) // 4).to_bytes(2, "big") + body
    try:
        parsed = parse_compound(data)
    except RtcpError:
        return
    assert parse_compound(serialize_compound(parsed)) == parsed


def test_reception_stats_loss_and_jitter() -> None:
    stats = ReceptionStats(8000, min_sequential=1)
    ssrc = 0x22222222
    # 10 packets, 20 ms apart, seq 4 and 7 lost; packet 5 arrives 10 ms late.
    for i in range(10):
        if i in (4, 7):
            continue
        arrival = 100.0 + i * 0.02 + (0.01 if i == 5 else 0.0)
        stats.on_rtp(RtpPacket(0, 1000 + i, 160 * i, ssrc), arrival)
    sr = SenderReport(ssrc, *ntp_from_unix(1_700_000_000.5), 0, 10, 1600)
    stats.on_sender_report(sr, now=100.3)
    block = stats.report_block(now=100.8)
    assert block is not None
    assert block.ssrc == ssrc and block.highest_seq == 1009
    assert block.cumulative_lost == 2
    assert block.fraction_lost == (2 << 8) // 10
    # A.8: transit jumps by 80 ticks at packet 5 and back at 6, then two steady packets.
    expected = (80 / 16 + (80 - 80 / 16) / 16) * (15 / 16) ** 2
    assert block.jitter == int(expected)
    assert block.lsr == sr.ntp_middle and block.dlsr == int(0.5 * 65536)
    # The next interval with no loss reports fraction 0 but keeps the cumulative count.
    stats.on_rtp(RtpPacket(0, 1010, 1600, ssrc), 100.9)
    nxt = stats.report_block(now=101.0)
    assert nxt is not None and nxt.fraction_lost == 0 and nxt.cumulative_lost == 2


# --- RFC 4733 DTMF -----------------------------------------------------------------


def test_telephone_event_vector() -> None:
    # RFC 4733 §2.3 layout: digit 5, E=1, volume 10, duration 800.
    ev = TelephoneEvent.parse(bytes.fromhex("058a0320"))
    assert ev == TelephoneEvent(5, True, 10, 800) and ev.digit == "5"
    assert ev.serialize() == bytes.fromhex("058a0320")
    assert TelephoneEvent(11, False, 7, 160).serialize() == bytes.fromhex("0b0700a0")
    assert TelephoneEvent.parse(bytes.fromhex("0b0700a0")).digit == "#"
    with pytest.raises(DtmfError):
        TelephoneEvent.parse(b"\x05\x8a")
    assert digit_to_event("*") == 10 and digit_to_event("d") == 15


def _event_packets(digit: str, ts: int, seq: int) -> list[RtpPacket]:
    code = digit_to_event(digit)
    packets = [
        RtpPacket(101, seq + i, ts, 9, TelephoneEvent(code, False, 10, 160 * (i + 1)).serialize())
        for i in range(3)
    ]
    end = TelephoneEvent(code, True, 10, 640).serialize()
    packets += [RtpPacket(101, seq + 3 + i, ts, 9, end) for i in range(3)]
    return packets


def test_dtmf_receiver_dedups_end_packets() -> None:
    rx = DtmfReceiver()
    digits = []
    for p in _event_packets("1", 1000, 10) + _event_packets("#", 3000, 16):
        digits += rx.receive(p)
    assert [(d.digit, d.duration, d.timestamp) for d in digits] == [
        ("1", 640, 1000),
        ("#", 640, 3000),
    ]


def test_dtmf_receiver_lost_end_packets() -> None:
    rx = DtmfReceiver()
    first = [p for p in _event_packets("7", 1000, 10) if not TelephoneEvent.parse(p.payload).end]
    digits = []
    for p in first + _event_packets("8", 2000, 20):
        digits += rx.receive(p)
    assert [d.digit for d in digits] == ["7", "8"]
    assert digits[0].duration == 480
    only_start = _event_packets("9", 5000, 30)[:1]
    assert rx.receive(only_start[0]) == []
    assert [d.digit for d in rx.flush()] == ["9"]
    assert rx.receive(RtpPacket(101, 40, 6000, 9, b"\x01")) == []  # garbage ignored
