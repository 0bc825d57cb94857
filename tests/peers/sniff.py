"""See what reaches a UDP port on loopback, without being the program that owns it.

SIPp cannot tell a test what audio it received, so a test listens beside it: an AF_PACKET
socket on `lo` (root only, passive, loopback only) collects every IPv4 UDP datagram sent to
one port. Linux hands loopback frames to AF_PACKET with a 14-byte Ethernet header.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from types import TracebackType

ETH_P_ALL = 0x0003
ETH_HEADER = 14


def can_sniff() -> bool:
    return hasattr(socket, "AF_PACKET") and os.geteuid() == 0


class LoopbackUdpSniffer:
    """``with LoopbackUdpSniffer(port) as sniffer:`` then ``sniffer.payloads()``."""

    def __init__(self, dst_port: int) -> None:
        self.dst_port = dst_port
        self._payloads: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] == socket.PACKET_OUTGOING:
                continue  # loopback shows each datagram twice: keep the incoming copy
            self._take(frame)

    def _take(self, frame: bytes) -> None:
        ip = frame[ETH_HEADER:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_UDP:
            return
        header = (ip[0] & 0x0F) * 4
        if len(ip) < header + 8:
            return
        _, dst_port, length = struct.unpack("!HHH", ip[header : header + 6])
        if dst_port == self.dst_port:
            with self._lock:
                self._payloads.append(ip[header + 8 : header + length])

    def payloads(self) -> list[bytes]:
        with self._lock:
            return list(self._payloads)

    def __enter__(self) -> LoopbackUdpSniffer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
