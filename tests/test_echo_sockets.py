"""Echo's RTP/RTCP socket pool (control/echo/reflector.py EchoSockets), on loopback: a pair
an ended call gave back serves the next call on the same port without a new bind, reflects
to the new caller only, drops what arrives while idle, and never keeps more than
``max_idle`` idle pairs (the rest go back to the port allocator)."""

from __future__ import annotations

import asyncio
import socket

from control.echo.reflector import EchoMedia, EchoSockets, RtpReflector
from control.media.ports import PortAllocator
from control.media.rtp import RtpPacket
from tests.peers.ports import LOOPBACK, free_ports


def _caller() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    return sock


async def _echoed(sock: socket.socket, port: int, seq: int) -> RtpPacket | None:
    """Send one RTP packet to ``port``; the packet that comes back, None within 0.3 s."""
    sock.sendto(RtpPacket(0, seq, 160 * seq, 0x1234, bytes(160)).serialize(), (LOOPBACK, port))
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 0.3)
    except TimeoutError:
        return None
    return RtpPacket.parse(data)


def _allocator() -> PortAllocator:
    low = free_ports(1)[0] & ~1
    return PortAllocator(low, low + 40)


async def test_a_released_pair_serves_the_next_call_on_the_same_port() -> None:
    allocator = _allocator()
    sockets = EchoSockets(allocator, max_idle=4)
    first = EchoMedia(sockets, RtpReflector(0xAAAA0001))
    port = await first.open(LOOPBACK)
    alice, bob = _caller(), _caller()
    try:
        echoed = await _echoed(alice, port, 1)
        assert echoed is not None and echoed.ssrc == 0xAAAA0001
        first.close()
        assert first.port == 0 and sockets.idle() == 1 and allocator.in_use() == 1
        assert await _echoed(alice, port, 2) is None  # idle: dropped, nobody answers

        second = EchoMedia(sockets, RtpReflector(0xBBBB0002))
        assert await second.open(LOOPBACK) == port and sockets.reused == 1
        echoed = await _echoed(bob, port, 3)
        assert echoed is not None and echoed.ssrc == 0xBBBB0002  # the new call's SSRC
        assert first.reflector.packets_in == 1 and second.reflector.packets_in == 1
        second.close()
    finally:
        alice.close()
        bob.close()
        sockets.close()
    assert sockets.idle() == 0 and allocator.in_use() == 0


async def test_no_more_than_max_idle_pairs_wait_the_rest_free_their_ports() -> None:
    allocator = _allocator()
    sockets = EchoSockets(allocator, max_idle=1)
    calls = [EchoMedia(sockets, RtpReflector(n)) for n in range(3)]
    ports = [await call.open(LOOPBACK) for call in calls]
    assert len(set(ports)) == 3 and allocator.in_use() == 3
    for call in calls:
        call.close()
    assert sockets.idle() == 1 and allocator.in_use() == 1  # one kept, two released
    sockets.close()
    assert allocator.in_use() == 0
    late = EchoMedia(sockets, RtpReflector(9))
    await late.open(LOOPBACK)
    late.close()  # after close: closed at once, not pooled
    assert sockets.idle() == 0 and allocator.in_use() == 0
