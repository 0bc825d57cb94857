"""RTP port allocation from the configured range: even RTP ports, RTCP on the next odd one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


class PortsExhausted(Exception):
    pass


class PortAllocator:
    """Hands out even ports round-robin, skipping those in use here or by other processes."""

    def __init__(self, low: int, high: int) -> None:
        self.low = low + (low % 2)
        self.high = high
        self._next = self.low
        self._used: set[int] = set()

    @property
    def capacity(self) -> int:
        return (self.high - self.low) // 2 + 1

    def in_use(self) -> int:
        return len(self._used)

    async def bind_pair(
        self,
        host: str,
        rtp_factory: Callable[[], asyncio.DatagramProtocol],
        rtcp_factory: Callable[[], asyncio.DatagramProtocol] | None = None,
    ) -> tuple[int, asyncio.DatagramTransport, asyncio.DatagramTransport | None]:
        """Bind an RTP socket (and RTCP on port+1) on the first free even port."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(self.capacity):
            port = self._next
            self._next = self._next + 2 if self._next + 2 < self.high else self.low
            if port in self._used:
                continue
            try:
                rtp, _ = await loop.create_datagram_endpoint(
                    rtp_factory, local_addr=(host, port), family=family
                )
            except OSError:
                continue
            rtcp: asyncio.DatagramTransport | None = None
            if rtcp_factory is not None:
                try:
                    rtcp, _ = await loop.create_datagram_endpoint(
                        rtcp_factory, local_addr=(host, port + 1), family=family
                    )
                except OSError:
                    rtp.close()
                    continue
            self._used.add(port)
            return port, rtp, rtcp
        raise PortsExhausted(f"no free RTP port in {self.low}-{self.high}")

    def release(self, port: int) -> None:
        self._used.discard(port)
