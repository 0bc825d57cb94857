"""One stream's RTCP (RFC 3550 §6): when to report, what to report, what the peer reported.

Sans-IO: the owner feeds the RTP it accepted (`on_rtp`), the RTP it sent (`on_sent`) and
the RTCP datagrams it received (`receive`, already SRTCP-unprotected), all with `now` on one
monotonic clock; it asks `due(now)` once in a while and sends what `report(now)` returns.
NTP times are `now + wall_offset` (the owner measures the offset between its clock and the
wall clock once), so the round trip worked out from an echoed LSR/DLSR (§6.4.1) uses the
same clock at both ends of the measurement.

Intervals follow §6.3 and Appendix A.7 for a unicast session of two members: the
deterministic interval from the RTCP bandwidth (5 % of the session's) and the average
compound size, floored at the minimum (5 s by default, half of it before the first report;
§6.2 lets an application use a smaller minimum, down to 360 / session kbit/s), then
randomised over [0.5, 1.5] and divided by e − 3/2 to compensate for timer reconsideration.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from control.media.rtcp import (
    Bye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpPacket,
    SenderReport,
    SourceDescription,
    ntp_from_unix,
    ntp_middle,
    parse_compound,
    serialize_compound,
)
from control.media.rtp import RtpPacket, SequenceTracker

__all__ = ["RtcpSession", "StreamQuality", "rtcp_interval"]

_UDP_IP_OVERHEAD = 28  # §6.3.1: sizes include the lower-layer headers (IPv4 + UDP)
_COMPENSATION = math.e - 1.5  # §6.3.1 / A.7


def rtcp_interval(
    *,
    members: int,
    senders: int,
    rtcp_bandwidth: float,
    we_sent: bool,
    avg_rtcp_size: float,
    initial: bool,
    minimum: float,
    rng: random.Random,
) -> float:
    """RFC 3550 Appendix A.7 `rtcp_interval()`: seconds until the next report.

    `rtcp_bandwidth` is in octets per second; `minimum` is the §6.2 minimum interval.
    """
    t_min = minimum / 2 if initial else minimum
    n = members
    if 0 < senders <= members * 0.25:  # §6.3.1: senders get a quarter of the bandwidth
        if we_sent:
            rtcp_bandwidth *= 0.25
            n = senders
        else:
            rtcp_bandwidth *= 0.75
            n = members - senders
    t = max(avg_rtcp_size * n / rtcp_bandwidth, t_min)
    return t * rng.uniform(0.5, 1.5) / _COMPENSATION


@dataclass(frozen=True, slots=True)
class StreamQuality:
    """Per-participant reception quality, both ways, for the engine's stats.

    The first group is what we measured of the participant's RTP (what our reports carry);
    the `remote_*` group and `rtt` come from the participant's own reports about the stream
    we send them, None until one arrived.
    """

    packets_received: int
    packets_lost: int  # cumulative (§6.4.1: expected − received, may be negative)
    fraction_lost: float  # over the last report interval, 0..1
    jitter: float  # interarrival jitter, seconds (A.8)
    remote_packets_lost: int | None
    remote_fraction_lost: float | None
    remote_jitter: float | None  # seconds
    rtt: float | None  # seconds, from LSR/DLSR (§6.4.1)
    reports_sent: int
    reports_received: int


class RtcpSession:
    """See the module docstring; one per RTP stream, both directions."""

    def __init__(
        self,
        *,
        ssrc: int,
        clock_rate: int,
        cname: str,
        rng: random.Random,
        now: float,
        wall_offset: float = 0.0,  # wall clock minus `now`'s clock, for NTP timestamps
        min_interval: float = 5.0,  # §6.2
        session_bandwidth: float = 64000.0,  # bit/s: the AS a 64 kbit/s G.711/G.722 call uses
        tracker: type[SequenceTracker] = SequenceTracker,  # or the native one
    ) -> None:
        self.ssrc = ssrc
        self.cname = cname
        self.clock_rate = clock_rate
        self._tracker = tracker
        self.reception = ReceptionStats(clock_rate, tracker=tracker)
        self._rng = rng
        self._wall_offset = wall_offset
        self._min_interval = min_interval
        self._rtcp_bandwidth = 0.05 * session_bandwidth / 8  # §6.2: 5 %, in octets/s
        self._avg_size = 100.0  # a first guess; the compounds we send and read refine it
        self._initial = True
        self._sent_since_report = False
        self._peer_sends = False
        self._last_ts: int | None = None
        self._last_ts_at = 0.0
        self._packets = 0
        self._octets = 0
        self._fraction_lost = 0.0
        self.remote_block: ReportBlock | None = None
        self.rtt: float | None = None
        self.reports_sent = 0
        self.reports_received = 0
        self.peer_left = False  # an RTCP BYE arrived for the peer's source (§6.6)
        self.next_report = now + self._interval()

    # --- what the owner feeds in ---------------------------------------------------------

    def on_rtp(self, packet: RtpPacket, now: float) -> None:
        """An RTP packet from the peer that passed source validation."""
        self.reception.on_rtp(packet, now)
        self._peer_sends = True

    def on_sent(self, timestamp: int, payload_octets: int, now: float) -> None:
        """We sent one RTP packet with this timestamp (for the SR's sender info, §6.4.1)."""
        self._last_ts = timestamp
        self._last_ts_at = now
        self._packets += 1
        self._octets += payload_octets
        self._sent_since_report = True

    def set_clock_rate(self, clock_rate: int) -> None:
        """A codec change to another RTP clock: reception statistics start over."""
        if clock_rate != self.clock_rate:
            self.clock_rate = clock_rate
            self.reception = ReceptionStats(clock_rate, tracker=self._tracker)
            self._last_ts = None

    def receive(self, data: bytes, now: float) -> list[RtcpPacket]:
        """A compound RTCP packet from the peer; raises RtcpError when it does not parse."""
        packets = parse_compound(data)
        self.reports_received += 1
        self._avg_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_size) / 16  # §6.3.3
        for packet in packets:
            if isinstance(packet, SenderReport):
                self.reception.on_sender_report(packet, now)
                self._blocks(packet.reports, now)
            elif isinstance(packet, ReceiverReport):
                self._blocks(packet.reports, now)
            elif isinstance(packet, Bye) and self.reception.ssrc in packet.sources:
                self.peer_left = True
        return packets

    def _blocks(self, blocks: tuple[ReportBlock, ...], now: float) -> None:
        for block in blocks:
            if block.ssrc != self.ssrc:
                continue  # about another source (a conference bridge reports on several)
            self.remote_block = block
            if block.lsr:
                arrival = ntp_middle(*ntp_from_unix(now + self._wall_offset))
                units = (arrival - block.lsr - block.dlsr) & 0xFFFFFFFF
                if units < 1 << 31:  # a clock step or a bogus block would go "negative"
                    self.rtt = units / 65536

    # --- what we send --------------------------------------------------------------------

    def due(self, now: float) -> bool:
        return now >= self.next_report

    def report(self, now: float) -> bytes:
        """Our compound report for this interval: SR (or RR) + SDES CNAME (§6.1); reschedules."""
        block = self.reception.report_block(now)
        blocks = (block,) if block is not None else ()
        if block is not None:
            self._fraction_lost = block.fraction_lost / 256
        first: RtcpPacket
        if self._sent_since_report and self._last_ts is not None:
            seconds, fraction = ntp_from_unix(now + self._wall_offset)
            # §6.4.1: the RTP timestamp of the same instant as the NTP one.
            elapsed = round((now - self._last_ts_at) * self.clock_rate)
            first = SenderReport(
                self.ssrc,
                seconds,
                fraction,
                (self._last_ts + elapsed) & 0xFFFFFFFF,
                self._packets,
                self._octets,
                blocks,
            )
        else:
            first = ReceiverReport(self.ssrc, blocks)
        data = serialize_compound([first, SourceDescription.cname(self.ssrc, self.cname)])
        self._avg_size += (len(data) + _UDP_IP_OVERHEAD - self._avg_size) / 16
        self.reports_sent += 1
        self._initial = False
        self._sent_since_report = False
        self.next_report = now + self._interval()
        return data

    def bye(self) -> bytes:
        """RR + SDES + BYE for when the stream ends (§6.6)."""
        packets: list[RtcpPacket] = [
            ReceiverReport(self.ssrc),
            SourceDescription.cname(self.ssrc, self.cname),
            Bye((self.ssrc,)),
        ]
        return serialize_compound(packets)

    def _interval(self) -> float:
        senders = int(self._sent_since_report or self._packets > 0) + int(self._peer_sends)
        return rtcp_interval(
            members=2,
            senders=senders,
            rtcp_bandwidth=self._rtcp_bandwidth,
            we_sent=self._sent_since_report,
            avg_rtcp_size=self._avg_size,
            initial=self._initial,
            minimum=self._min_interval,
            rng=self._rng,
        )

    # --- what the engine exposes ---------------------------------------------------------

    def quality(self) -> StreamQuality:
        tracker = self.reception.tracker
        remote = self.remote_block
        return StreamQuality(
            packets_received=tracker.received,
            packets_lost=tracker.lost if tracker.ssrc is not None else 0,
            fraction_lost=self._fraction_lost,
            jitter=self.reception.jitter / self.clock_rate,
            remote_packets_lost=remote.cumulative_lost if remote else None,
            remote_fraction_lost=remote.fraction_lost / 256 if remote else None,
            remote_jitter=remote.jitter / self.clock_rate if remote else None,
            rtt=self.rtt,
            reports_sent=self.reports_sent,
            reports_received=self.reports_received,
        )
