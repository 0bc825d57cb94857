"""An RTP reflector: what the caller sends comes back to it, under our own SSRC.

Symmetric RTP (RFC 4961): packets go back to the address they came from, so a caller behind a
NAT or a proxy's media relay still hears itself; before the first packet, the SDP address is
used. Garbage datagrams are dropped without a word.

With SDES-SRTP (RFC 4568) each packet is unprotected with the caller's key, given our SSRC
and protected again with ours (RFC 3711 §3.3): the caller's own protected packet, sent
back, would fail authentication (a new SSRC) or be a replay. Packets that fail are counted
and dropped.
"""

from __future__ import annotations

import asyncio
import struct
from typing import cast

from control.media.ports import PortAllocator
from control.media.srtp import SrtpContext, SrtpError

Address = tuple[str, int]


class RtpReflector(asyncio.DatagramProtocol):
    def __init__(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self.sending = True
        self.remote: Address | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.srtp: SrtpContext | None = None
        self.packets_in = 0
        self.packets_out = 0
        self.srtp_errors = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        # RFC 3550 §5.1: version 2, at least the 12-byte fixed header; RTCP types are not echoed.
        if len(data) < 12 or data[0] >> 6 != 2 or 72 <= data[1] & 0x7F <= 79:
            return
        self.packets_in += 1
        source = (str(addr[0]), int(addr[1]))
        self.remote = source
        if not self.sending or self.transport is None:
            return
        srtp = self.srtp
        try:
            packet = bytearray(data if srtp is None else srtp.unprotect(data))
            struct.pack_into("!I", packet, 8, self.ssrc)
            out = bytes(packet) if srtp is None else srtp.protect(bytes(packet))
        except SrtpError:
            self.srtp_errors += 1
            return
        self.transport.sendto(out, source)
        self.packets_out += 1


class _Drain(asyncio.DatagramProtocol):
    """RTCP from the caller: read and dropped (echo has no reports worth sending)."""


class EchoMedia:
    """One reflector on a port pair from the allocator."""

    def __init__(self, allocator: PortAllocator, reflector: RtpReflector) -> None:
        self._allocator = allocator
        self.reflector = reflector
        self.port = 0
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None

    async def open(self, host: str) -> int:
        self.port, self._rtp, self._rtcp = await self._allocator.bind_pair(
            host, lambda: self.reflector, _Drain
        )
        return self.port

    def close(self) -> None:
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        if self.port:
            self._allocator.release(self.port)
            self.port = 0
