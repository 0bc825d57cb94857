"""See the UDP datagrams that reach one loopback port, whoever owns the socket.

SIPp's media socket is its own and SIPp keeps no RTP statistics, so a test cannot ask it what
it received. A raw IPv4 socket (``SOCK_RAW``, ``IPPROTO_UDP``) gets a copy of every UDP
datagram the kernel takes in, before delivery; this keeps those addressed to one port. It needs
root (CAP_NET_RAW), as SIPp's own ``play_pcap_audio`` does.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from dataclasses import dataclass

from tests.peers.ports import LOOPBACK

__all__ = ["Datagram", "UdpSniffer"]


@dataclass(frozen=True, slots=True)
class Datagram:
    source: tuple[str, int]
    payload: bytes


class UdpSniffer:
    """``with UdpSniffer(port) as sniffer:`` … ``sniffer.datagrams()``: to 127.0.0.1:port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        self._sock.settimeout(0.1)
        self._seen: list[Datagram] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                packet = self._sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            header = (packet[0] & 0x0F) * 4  # IPv4 header length
            if len(packet) < header + 8:
                continue
            source_port, dest_port, length = struct.unpack_from("!HHH", packet, header)
            if dest_port != self.port or socket.inet_ntoa(packet[16:20]) != LOOPBACK:
                continue
            payload = packet[header + 8 : header + length]
            with self._lock:
                self._seen.append(Datagram((socket.inet_ntoa(packet[12:16]), source_port), payload))

    def datagrams(self) -> list[Datagram]:
        with self._lock:
            return list(self._seen)

    def start(self) -> UdpSniffer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> UdpSniffer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
