"""RTCP (RFC 3550 §6): SR, RR, SDES, BYE and compound packets, plus reception statistics.

Sans-IO like `rtp.py`: parse bytes into frozen packet objects, serialize them back, and
compute the numbers an RR carries (RFC 3550 §6.4.1, Appendix A.3 and A.8) from packets
and arrival times the caller feeds in.  Packet types we don't model (APP, RTPFB, PSFB,
XR) are kept opaque as `RtcpUnknown` so a compound packet still round-trips.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from control.media.rtp import RtpPacket, SequenceTracker, SequenceUpdate, ts_delta

__all__ = [
    "NTP_EPOCH_OFFSET",
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "SDES_CNAME",
    "Bye",
    "ReceiverReport",
    "ReceptionStats",
    "ReportBlock",
    "RtcpError",
    "RtcpPacket",
    "RtcpUnknown",
    "SdesChunk",
    "SenderReport",
    "SourceDescription",
    "ntp_from_unix",
    "ntp_middle",
    "parse_compound",
    "serialize_compound",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
SDES_END = 0
SDES_CNAME = 1
# RFC 5905 §6: NTP era 0 starts 1900-01-01, 2208988800 s before the Unix epoch.
NTP_EPOCH_OFFSET = 2_208_988_800

_COMMON = struct.Struct("!BBH")
_BLOCK = struct.Struct("!IIIIII")
_SR_INFO = struct.Struct("!IIIII")


class RtcpError(ValueError):
    """A datagram that is not valid RTCP (RFC 3550 §6.4, Appendix A.2 validity checks)."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block, RFC 3550 §6.4.1.

    `cumulative_lost` is a signed 24-bit value (duplicates can make it negative);
    `lsr` / `dlsr` are the middle 32 bits of the last SR's NTP time and the delay since
    it in units of 1/65536 s.
    """

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int = 0
    dlsr: int = 0

    def _pack(self) -> bytes:
        lost = max(-(1 << 23), min((1 << 23) - 1, self.cumulative_lost)) & 0xFFFFFF
        return _BLOCK.pack(
            self.ssrc,
            (self.fraction_lost & 0xFF) << 24 | lost,
            self.highest_seq & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.lsr & 0xFFFFFFFF,
            self.dlsr & 0xFFFFFFFF,
        )

    @classmethod
    def _unpack(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, fl, ext, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost = fl & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, fl >> 24, lost, ext, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    """RTCP SR, RFC 3550 §6.4.1; `extension` keeps any profile-specific trailer."""

    ssrc: int
    ntp_seconds: int
    ntp_fraction: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    @property
    def ntp_middle(self) -> int:
        """The 32 bits an RR echoes as LSR (§6.4.1)."""
        return ntp_middle(self.ntp_seconds, self.ntp_fraction)


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    """RTCP RR, RFC 3550 §6.4.2."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""


@dataclass(frozen=True, slots=True)
class SdesChunk:
    """One SDES chunk: an SSRC/CSRC and its (item type, value) pairs, RFC 3550 §6.5."""

    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class SourceDescription:
    """RTCP SDES, RFC 3550 §6.5."""

    chunks: tuple[SdesChunk, ...] = ()

    @classmethod
    def cname(cls, ssrc: int, cname: str) -> SourceDescription:
        return cls((SdesChunk(ssrc, ((SDES_CNAME, cname.encode("utf-8")),)),))


@dataclass(frozen=True, slots=True)
class Bye:
    """RTCP BYE, RFC 3550 §6.6."""

    sources: tuple[int, ...] = ()
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class RtcpUnknown:
    """Any other packet type (APP, feedback, XR), kept as its body after the common header."""

    packet_type: int
    count: int
    body: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | RtcpUnknown


def ntp_from_unix(unix_time: float) -> tuple[int, int]:
    """(seconds, fraction) NTP timestamp for a Unix time, RFC 3550 §4."""
    ntp = unix_time + NTP_EPOCH_OFFSET
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return seconds & 0xFFFFFFFF, fraction


def ntp_middle(seconds: int, fraction: int) -> int:
    """Middle 32 bits of a 64-bit NTP timestamp (LSR in an RR), RFC 3550 §6.4.1."""
    return ((seconds & 0xFFFF) << 16) | (fraction >> 16)


def _pad4(body: bytes) -> bytes:
    return body + bytes(-len(body) % 4)


def _parse_blocks(data: bytes, pos: int, count: int, end: int) -> tuple[ReportBlock, ...]:
    if pos + count * _BLOCK.size > end:
        raise RtcpError("report blocks run past the packet")
    return tuple(ReportBlock._unpack(data, pos + i * _BLOCK.size) for i in range(count))


def _parse_sdes(data: bytes, pos: int, count: int, end: int) -> SourceDescription:
    chunks = []
    for _ in range(count):
        if pos + 4 > end:
            raise RtcpError("SDES chunk runs past the packet")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= end:
                raise RtcpError("SDES chunk lacks its end item")
            kind = data[pos]
            if kind == SDES_END:
                pos += 1
                pos += -pos % 4  # §6.5: null octets up to the next 32-bit boundary
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpError("SDES item runs past the packet")
            length = data[pos + 1]
            items.append((kind, bytes(data[pos + 2 : pos + 2 + length])))
            pos += 2 + length
        chunks.append(SdesChunk(ssrc, tuple(items)))
    if pos > end:
        raise RtcpError("SDES padding runs past the packet")
    return SourceDescription(tuple(chunks))


def _parse_one(pt: int, count: int, data: bytes, pos: int, end: int) -> RtcpPacket:
    if pt == RTCP_SR:
        if pos + 4 + _SR_INFO.size > end:
            raise RtcpError("SR too short")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        ntp_s, ntp_f, rtp_ts, pkts, octets = _SR_INFO.unpack_from(data, pos + 4)
        start = pos + 4 + _SR_INFO.size
        blocks = _parse_blocks(data, start, count, end)
        ext = bytes(data[start + count * _BLOCK.size : end])
        return SenderReport(ssrc, ntp_s, ntp_f, rtp_ts, pkts, octets, blocks, ext)
    if pt == RTCP_RR:
        if pos + 4 > end:
            raise RtcpError("RR too short")
        (ssrc,) = struct.unpack_from("!I", data, pos)
        blocks = _parse_blocks(data, pos + 4, count, end)
        ext = bytes(data[pos + 4 + count * _BLOCK.size : end])
        return ReceiverReport(ssrc, blocks, ext)
    if pt == RTCP_SDES:
        return _parse_sdes(data, pos, count, end)
    if pt == RTCP_BYE:
        if pos + 4 * count > end:
            raise RtcpError("BYE source list runs past the packet")
        sources = struct.unpack_from(f"!{count}I", data, pos)
        pos += 4 * count
        reason = b""
        if pos < end:
            length = data[pos]
            if pos + 1 + length > end:
                raise RtcpError("BYE reason runs past the packet")
            reason = bytes(data[pos + 1 : pos + 1 + length])
        return Bye(tuple(sources), reason)
    return RtcpUnknown(pt, count, bytes(data[pos:end]))


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse a (compound) RTCP datagram, RFC 3550 §6.1 and Appendix A.2.

    Each packet must be version 2 and the lengths must add up to the datagram exactly;
    only the last packet may carry padding.  We don't insist that the first packet is an
    SR or RR: RFC 5506 reduced-size RTCP is legal on the wire.
    """
    packets: list[RtcpPacket] = []
    pos = 0
    total = len(data)
    if total < _COMMON.size:
        raise RtcpError("RTCP packet too short")
    while pos < total:
        if pos + _COMMON.size > total:
            raise RtcpError("trailing octets after RTCP packet")
        b0, pt, words = _COMMON.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpError(f"RTCP version {b0 >> 6} is not 2")
        end = pos + 4 * (words + 1)
        if end > total:
            raise RtcpError("RTCP length runs past the datagram")
        if b0 & 0x20:
            if end != total:
                raise RtcpError("padding on an RTCP packet that is not the last")
            pad = data[end - 1]
            if pad == 0 or end - pad < pos + _COMMON.size:
                raise RtcpError("bad RTCP padding count")
            body_end = end - pad
        else:
            body_end = end
        packets.append(_parse_one(pt, b0 & 0x1F, data, pos + _COMMON.size, body_end))
        pos = end
    return packets


def _header(count: int, pt: int, body: bytes) -> bytes:
    pad = -len(body) % 4
    if pad:
        # §6.4.1: a body that is not whole words (an odd extension or APP body we
        # parsed from a padded packet) goes out padded, with P set.
        body += bytes(pad - 1) + bytes([pad])
        return _COMMON.pack(0xA0 | count, pt, len(body) // 4) + body
    return _COMMON.pack(0x80 | count, pt, len(body) // 4) + body


def _serialize_one(packet: RtcpPacket) -> bytes:
    if isinstance(packet, SenderReport | ReceiverReport) and len(packet.reports) > 31:
        raise ValueError("at most 31 report blocks per packet")
    if isinstance(packet, SenderReport):
        body = struct.pack("!I", packet.ssrc) + _SR_INFO.pack(
            packet.ntp_seconds,
            packet.ntp_fraction,
            packet.rtp_timestamp & 0xFFFFFFFF,
            packet.packet_count & 0xFFFFFFFF,
            packet.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(b._pack() for b in packet.reports) + packet.extension
        return _header(len(packet.reports), RTCP_SR, body)
    if isinstance(packet, ReceiverReport):
        body = struct.pack("!I", packet.ssrc)
        body += b"".join(b._pack() for b in packet.reports) + packet.extension
        return _header(len(packet.reports), RTCP_RR, body)
    if isinstance(packet, SourceDescription):
        if len(packet.chunks) > 31:
            raise ValueError("at most 31 SDES chunks per packet")
        parts = []
        for chunk in packet.chunks:
            raw = struct.pack("!I", chunk.ssrc)
            for kind, value in chunk.items:
                if not 1 <= kind <= 255 or len(value) > 255:
                    raise ValueError("bad SDES item")
                raw += bytes([kind, len(value)]) + value
            raw += b"\x00"  # end item, then pad to 32 bits (§6.5)
            parts.append(_pad4(raw))
        return _header(len(packet.chunks), RTCP_SDES, b"".join(parts))
    if isinstance(packet, Bye):
        if len(packet.sources) > 31 or len(packet.reason) > 255:
            raise ValueError("BYE too large")
        body = struct.pack(f"!{len(packet.sources)}I", *packet.sources)
        if packet.reason:
            body += _pad4(bytes([len(packet.reason)]) + packet.reason)
        return _header(len(packet.sources), RTCP_BYE, body)
    return _header(packet.count & 0x1F, packet.packet_type, packet.body)


def serialize_compound(packets: Sequence[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound datagram (RFC 3550 §6.1)."""
    return b"".join(_serialize_one(p) for p in packets)


class ReceptionStats:
    """What we know about one remote sender, to fill its RR report block.

    Feeds RFC 3550 A.1 (`SequenceTracker`), computes loss per A.3 and interarrival jitter
    per A.8 (in RTP timestamp units), and remembers the last SR for LSR/DLSR (§6.4.1).
    `now` is any monotonic clock in seconds, as long as the caller is consistent.
    """

    def __init__(
        self,
        clock_rate: int,
        *,
        min_sequential: int = 2,
        tracker: type[SequenceTracker] = SequenceTracker,  # or the native one
    ) -> None:
        self.clock_rate = clock_rate
        self.tracker = tracker(min_sequential=min_sequential)
        self._jitter = 0.0
        self._transit: int | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self._last_sr: int | None = None
        self._last_sr_at = 0.0

    @property
    def ssrc(self) -> int | None:
        return self.tracker.ssrc

    @property
    def jitter(self) -> int:
        """Interarrival jitter in timestamp units, as reported (A.8)."""
        return int(self._jitter)

    def on_rtp(self, packet: RtpPacket, now: float) -> SequenceUpdate:
        result = self.tracker.update(packet.ssrc, packet.sequence)
        if result.new_source or result.resynced:
            self._jitter = 0.0
            self._transit = None
            self._expected_prior = 0
            self._received_prior = 0
            if result.new_source:
                self._last_sr = None
        if not result.valid:
            return result
        # A.8: transit time in timestamp units; only its differences matter.
        arrival = round(now * self.clock_rate)
        transit = ts_delta(arrival & 0xFFFFFFFF, packet.timestamp)
        if self._transit is not None:
            d = abs(transit - self._transit)
            self._jitter += (d - self._jitter) / 16.0
        self._transit = transit
        return result

    def on_sender_report(self, report: SenderReport, now: float) -> None:
        if report.ssrc == self.tracker.ssrc:
            self._last_sr = report.ntp_middle
            self._last_sr_at = now

    def report_block(self, now: float) -> ReportBlock | None:
        """A report block for our next RR/SR, or None before the source is validated.

        Advances the "prior" counters, so call it once per report interval (A.3).
        """
        t = self.tracker
        if t.ssrc is None or t.probation:
            return None
        expected = t.expected
        expected_interval = expected - self._expected_prior
        received_interval = t.received - self._received_prior
        self._expected_prior = expected
        self._received_prior = t.received
        lost_interval = expected_interval - received_interval
        if expected_interval == 0 or lost_interval <= 0:
            fraction = 0
        else:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        lsr = self._last_sr or 0
        dlsr = int((now - self._last_sr_at) * 65536) if self._last_sr is not None else 0
        return ReportBlock(
            ssrc=t.ssrc,
            fraction_lost=fraction,
            cumulative_lost=t.lost,
            highest_seq=t.extended_max & 0xFFFFFFFF,
            jitter=self.jitter,
            lsr=lsr,
            dlsr=max(0, dlsr),
        )
