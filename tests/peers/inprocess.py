"""A Chorus server in the test's own process: the objects ``chorus serve`` builds
(`build_server`), started on free loopback ports, so a test can reach into its engine
(inject a fault, read `quality()`) while real peers talk to it over sockets.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from control.cli import build_server
from control.config import parse_config
from control.server import Server
from tests.peers.ports import free_ports


@contextlib.asynccontextmanager
async def running_server(
    spool: Path,
    *,
    rtp: Mapping[str, object],
    transports: Sequence[str] = ("udp", "tcp"),
    rtp_ports: int = 200,
    sections: Mapping[str, Mapping[str, object]] | None = None,
) -> AsyncIterator[tuple[Server, int]]:
    """The started server and its SIP port; `rtp` is the `[rtp]` section (minus ports),
    `sections` more config (merged into the sections set here).

    The RTP range starts at a random even port so that servers of tests running side by
    side rarely meet; SIP listens on one free port for every transport named.
    """
    (port,) = free_ports(1)
    rtp_low = random.randrange(20000, 60000 - rtp_ports, 2)
    root: dict[str, dict[str, object]] = {
        "sip": {"listen": [f"{transport}:127.0.0.1:{port}" for transport in transports]},
        "rtp": {"port_range": f"{rtp_low}-{rtp_low + rtp_ports - 1}", **rtp},
        "msrp": {"listen": ["tcp:127.0.0.1:0"]},
        "server": {"spool_dir": str(spool)},
    }
    for name, values in (sections or {}).items():
        root[name] = {**root.get(name, {}), **values}
    config = parse_config(root)
    server = build_server(config)
    await server.start()
    try:
        yield server, port
    finally:
        await server.stop()
