"""An RTP reflector: what the caller sends comes back to it, under our own SSRC.

Symmetric RTP (RFC 4961): packets go back to the address they came from, so a caller behind a
NAT or a proxy's media relay still hears itself; before the first packet, the SDP address is
used. Garbage datagrams are dropped without a word.

With SDES-SRTP (RFC 4568) each packet is unprotected with the caller's key, given our SSRC
and protected again with ours (RFC 3711 §3.3): the caller's own protected packet, sent
back, would fail authentication (a new SSRC) or be a replay. Packets that fail are counted
and dropped.

RTCP (RFC 3550 §6): the echo is a sender of its own stream, so it sends sender reports on
the RFC 3550 schedule (`RtcpSession`, minimum interval from `[rtp] rtcp_interval`) and reads
the caller's reports: loss, jitter and round trip are in `reflector.rtcp.quality()`.  When
the offer has `a=rtcp-mux` the answer has it too (`negotiate`) and reports go to the
caller's RTP address from our RTP port (RFC 5761 §5.1.3); otherwise to the caller's RTCP
port (the address its RTCP came from, else RTP port + 1) from ours.  RTCP arriving on the
RTP port (RFC 5761 §4) is read either way and never echoed.  Jitter and the RTP half of a
sender report count in the negotiated clock of each payload type (`a=rtpmap`: Opus is
48000 whatever its audio rate, RFC 7587 §4.1), not a guessed 8 kHz.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
import time
from collections.abc import Callable
from typing import cast

from control.media.ports import PortAllocator
from control.media.rtcp import RtcpError
from control.media.rtcpsession import RtcpSession
from control.media.rtp import RtpError, RtpPacket, is_rtcp
from control.media.srtp import SrtpContext, SrtpError
from control.sip import sdp

log = logging.getLogger("chorus.echo.rtcp")

# RFC 3551 §6: RTP clock rates of the static payload types an echo call may use.
_STATIC_CLOCK = {0: 8000, 3: 8000, 4: 8000, 8: 8000, 9: 8000, 18: 8000}
_AUXILIARY = ("telephone-event", "cn")  # on the voice codec's clock (RFC 4733 §2.1, RFC 3389)

Address = tuple[str, int]

# RFC 3550 §6.3.1 report-interval jitter for every reflector: one generator shared, not one
# seeded from the system per call (seeding costs more than the rest of the RTCP set-up).
_RTCP_RNG = random.Random()


class RtpReflector(asyncio.DatagramProtocol):
    def __init__(
        self,
        ssrc: int,
        *,
        rtcp_interval: float = 5.0,  # RFC 3550 §6.2 minimum report interval
        clock_rate: int = 8000,  # until a negotiated or static payload type arrives
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,  # the event loop's clock (its default)
    ) -> None:
        self.ssrc = ssrc
        self.rtcp_interval = rtcp_interval
        self.clock_rate = clock_rate
        self.rtcp: RtcpSession | None = None  # made when the socket is (it needs a clock)
        self.rtcp_remote: Address | None = None
        self.rtcp_mux = False  # RFC 5761: RTCP on the RTP port, both ways
        self.clock_rates: dict[int, int] = {}  # payload type -> RTP clock, from a=rtpmap
        self.rtcp_errors = 0
        self.rtcp_sent = 0
        self._rng = rng or _RTCP_RNG
        self._clock = clock
        self.sending = True
        self.remote: Address | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.srtp: SrtpContext | None = None
        self.packets_in = 0
        self.packets_out = 0
        self.srtp_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.start_rtcp(self._clock(), time.time())

    def start_rtcp(self, now: float, wall: float) -> None:
        self.rtcp = RtcpSession(
            ssrc=self.ssrc,
            clock_rate=self.clock_rate,
            cname="chorus-echo",
            rng=self._rng,
            now=now,
            wall_offset=wall - now,
            min_interval=self.rtcp_interval,
        )

    def negotiate(self, offered: sdp.MediaDescription) -> list[sdp.Attribute]:
        """Take the RTCP terms of an offered (or re-offered) audio m-line; the attributes
        our answer adds for them.

        The clock of every offered voice payload type is kept (the caller sends with these
        numbers, which the answer keeps, RFC 3264 §6.1); static types without an rtpmap come
        from RFC 3551's table.  telephone-event and CN run on the voice codec's clock
        (RFC 4733 §2.1) and do not move it.  `a=rtcp-mux` offered is `a=rtcp-mux` answered
        (RFC 5761 §5.1.1).
        """
        self.clock_rates = {
            r.payload_type: r.clock_rate
            for r in offered.rtpmaps()
            if r.encoding.lower() not in _AUXILIARY
        }
        self.rtcp_mux = offered.rtcp_mux
        return [sdp.Attribute("rtcp-mux")] if self.rtcp_mux else []

    def clock_of(self, payload_type: int) -> int | None:
        """The RTP clock rate of a voice payload type the caller sends; None for one we do
        not know or an auxiliary one (the stream's clock stays as it is)."""
        return self.clock_rates.get(payload_type) or _STATIC_CLOCK.get(payload_type)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if is_rtcp(data):
            self.receive_rtcp(data, addr, self._clock())  # RFC 5761 §4
            return
        # RFC 3550 §5.1: version 2, at least the 12-byte fixed header.
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        self.packets_in += 1
        source = (str(addr[0]), int(addr[1]))
        self.remote = source
        if not self.sending or self.transport is None:
            return
        srtp = self.srtp
        try:
            caller = data if srtp is None else srtp.unprotect(data)
            packet = bytearray(caller)
            struct.pack_into("!I", packet, 8, self.ssrc)
            out = bytes(packet) if srtp is None else srtp.protect(bytes(packet))
        except SrtpError:
            self.srtp_errors += 1
            return
        self.transport.sendto(out, source)
        self.packets_out += 1
        if self.rtcp is not None:
            self._account(caller, self._clock())

    def _account(self, plain: bytes, now: float) -> None:
        """Feed the RTCP session: the caller's packet as received, ours as sent."""
        assert self.rtcp is not None
        try:
            rtp = RtpPacket.parse(plain)
        except RtpError:
            return
        rate = self.clock_of(rtp.payload_type)
        if rate is not None:
            self.rtcp.set_clock_rate(rate)
        self.rtcp.on_rtp(rtp, now)  # the caller's stream, under its own SSRC
        self.rtcp.on_sent(rtp.timestamp, len(rtp.payload), now)  # ours: same timestamps

    def receive_rtcp(self, data: bytes, addr: tuple[str | int, ...], now: float) -> None:
        """The caller's RTCP (on the RTCP port, or muxed): counted when it does not parse."""
        if self.rtcp is None:
            return
        try:
            if self.srtp is not None:
                data = self.srtp.unprotect_rtcp(data)
            self.rtcp.receive(data, now)
        except (SrtpError, RtcpError):
            self.rtcp_errors += 1
            return
        self.rtcp_remote = (str(addr[0]), int(addr[1]))

    def report(self, now: float) -> tuple[bytes, Address] | None:
        """Our report if one is due and we know where to send it (RFC 3550 §6.3)."""
        rtcp = self.rtcp
        if rtcp is None or not rtcp.due(now):
            return None
        data = rtcp.report(now)
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        return (data, dest) if (dest := self.rtcp_destination) is not None else None

    @property
    def rtcp_destination(self) -> Address | None:
        """The caller's RTP address with rtcp-mux (RFC 5761 §5.1.3), else where its RTCP
        came from, else its RTP port + 1 (RFC 3550 §11)."""
        if self.rtcp_mux:
            return self.remote
        if self.rtcp_remote is not None:
            return self.rtcp_remote
        return (self.remote[0], self.remote[1] + 1) if self.remote is not None else None


class _EchoRtcp(asyncio.DatagramProtocol):
    """The caller's RTCP on port + 1, into the reflector's RTCP session."""

    def __init__(self, reflector: RtpReflector) -> None:
        self._reflector = reflector

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._reflector.receive_rtcp(data, addr, asyncio.get_running_loop().time())


class EchoMedia:
    """One reflector on a port pair from the allocator."""

    def __init__(self, allocator: PortAllocator, reflector: RtpReflector) -> None:
        self._allocator = allocator
        self.reflector = reflector
        self.port = 0
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def open(self, host: str) -> int:
        self.port, self._rtp, self._rtcp = await self._allocator.bind_pair(
            host, lambda: self.reflector, lambda: _EchoRtcp(self.reflector)
        )
        self._arm()
        return self.port

    def _arm(self) -> None:
        rtcp = self.reflector.rtcp
        if rtcp is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(rtcp.next_report, self._send_report)

    def _send_report(self) -> None:
        """One timer per echo call, at the RTCP session's next report time."""
        now = asyncio.get_running_loop().time()
        try:
            due = self.reflector.report(now) if self.reflector.sending else None
        except SrtpError as exc:
            log.warning("echo RTCP report not protected: %s", exc)
            due = None
        if self.reflector.rtcp is not None and self.reflector.rtcp.due(now):
            self.reflector.rtcp.next_report = now + self.reflector.rtcp_interval  # not sent: later
        transport = self._rtp if self.reflector.rtcp_mux else self._rtcp
        if due is not None and transport is not None:
            data, dest = due
            transport.sendto(data, dest)
            self.reflector.rtcp_sent += 1
        self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        if self.port:
            self._allocator.release(self.port)
            self.port = 0
