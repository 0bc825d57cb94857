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


class _Relay(asyncio.DatagramProtocol):
    """A pooled socket's protocol: datagrams go to the call holding the socket now, and are
    dropped while it waits in the pool."""

    def __init__(self) -> None:
        self.target: asyncio.DatagramProtocol | None = None
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.target is not None:
            self.target.datagram_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP unreachable for a caller gone: the next packet tells


class _SocketPair:
    """An RTP/RTCP socket pair bound on one allocated port, with the relays in front."""

    def __init__(self, host: str, port: int, rtp: _Relay, rtcp: _Relay) -> None:
        self.host = host
        self.port = port
        self.rtp = rtp
        self.rtcp = rtcp

    @property
    def usable(self) -> bool:
        rtp, rtcp = self.rtp.transport, self.rtcp.transport  # asked twice per call: no genexpr
        return not (rtp is None or rtp.is_closing() or rtcp is None or rtcp.is_closing())

    @property
    def relays(self) -> tuple[_Relay, _Relay]:
        return self.rtp, self.rtcp

    def close(self) -> None:
        for relay in self.relays:
            relay.target = None
            if relay.transport is not None:
                relay.transport.close()


class EchoSockets:
    """The echo calls' RTP/RTCP socket pairs, kept bound between calls.

    Binding two sockets (and building their transports) cost more than the rest of an
    echo call's media set-up (bench/RESULTS.md, issue 14): a pair a call ended with waits
    here, still holding its port in the allocator, and the next call takes it as it is. At
    most ``max_idle`` pairs wait; beyond that a pair is closed and its port released, so the
    port range (the allocator's limit, shared with the conferences) is never held by more
    idle sockets than that. An idle pair drops what it receives; a late packet of the
    previous call that arrives after the pair was handed on reaches the new reflector, which
    sends it back to where it came from (RFC 4961) or drops it failing SRTP.
    """

    def __init__(self, allocator: PortAllocator, *, max_idle: int = 64) -> None:
        self.allocator = allocator
        self.max_idle = max_idle
        self._idle: dict[str, list[_SocketPair]] = {}
        self._closed = False
        self.reused = 0

    async def acquire(self, host: str) -> _SocketPair:
        idle = self._idle.get(host)
        while idle:
            pair = idle.pop()
            if pair.usable:
                self.reused += 1
                return pair
            self._discard(pair)
        rtp, rtcp = _Relay(), _Relay()
        port, _, _ = await self.allocator.bind_pair(host, lambda: rtp, lambda: rtcp)
        return _SocketPair(host, port, rtp, rtcp)

    def release(self, pair: _SocketPair) -> None:
        for relay in pair.relays:
            relay.target = None
        idle = self._idle.setdefault(pair.host, [])
        if not self._closed and pair.usable and self.idle() < self.max_idle:
            idle.append(pair)
        else:
            self._discard(pair)

    def idle(self) -> int:
        return sum(map(len, self._idle.values()))

    def _discard(self, pair: _SocketPair) -> None:
        pair.close()
        self.allocator.release(pair.port)

    def close(self) -> None:
        """Close every idle pair and give its port back (the application stops); a pair
        released after this is closed at once."""
        self._closed = True
        for pairs in self._idle.values():
            for pair in pairs:
                self._discard(pair)
        self._idle.clear()


class EchoMedia:
    """One reflector on a port pair from the echo socket pool."""

    def __init__(self, sockets: EchoSockets, reflector: RtpReflector) -> None:
        self._sockets = sockets
        self.reflector = reflector
        self.port = 0
        self._pair: _SocketPair | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def open(self, host: str) -> int:
        pair = await self._sockets.acquire(host)
        self._pair = pair
        self.port = pair.port
        self._rtp, self._rtcp = pair.rtp.transport, pair.rtcp.transport
        pair.rtp.target = self.reflector
        pair.rtcp.target = _EchoRtcp(self.reflector)
        assert self._rtp is not None
        self.reflector.connection_made(self._rtp)
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
        self.reflector.transport = None  # the socket is the next call's
        self._rtp = self._rtcp = None
        if self._pair is not None:
            self._sockets.release(self._pair)
            self._pair = None
        self.port = 0
