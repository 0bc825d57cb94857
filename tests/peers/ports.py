"""Free loopback ports for peer programs that must be told a port number up front.

Kamailio and SIPp take their ports on the command line, so the usual "bind port 0" trick
has to happen here: the kernel picks a port, we release it and hand the number on. Another
process could grab it in between; the window is short and the ports come from the
ephemeral range, which is good enough on a test machine.
"""

from __future__ import annotations

import socket
from typing import Literal

__all__ = ["LOOPBACK", "free_port", "free_ports"]

LOOPBACK = "127.0.0.1"

Kind = Literal["udp", "tcp"]


def _socket(kind: Kind) -> socket.socket:
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    return socket.socket(socket.AF_INET, sock_type)


def free_port(kind: Kind = "udp") -> int:
    """Return a port that is free for `kind` on 127.0.0.1 right now."""
    with _socket(kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(n: int = 1, *, attempts: int = 200) -> list[int]:
    """Return `n` distinct ports that are free on both UDP and TCP at 127.0.0.1.

    SIP listens on the same port number for UDP and TCP (RFC 3261 §18), so a port is only
    useful when both are free. Sockets stay bound until all `n` are found, so the ports
    returned are distinct.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(attempts):
            if len(ports) == n:
                break
            udp = _socket("udp")
            udp.bind((LOOPBACK, 0))
            held.append(udp)
            port: int = udp.getsockname()[1]
            tcp = _socket("tcp")
            held.append(tcp)
            try:
                tcp.bind((LOOPBACK, port))
            except OSError:
                continue
            ports.append(port)
        if len(ports) < n:
            raise RuntimeError(f"found only {len(ports)} of {n} free UDP+TCP ports")
        return ports
    finally:
        for sock in held:
            sock.close()
