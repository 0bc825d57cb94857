"""The health gauges of /metrics against what they watch: FreeSWITCH nodes' Event Sockets
(the ESL fake, tests/peers/eslfake.py: a protocol-level FAKE of FreeSWITCH's Event Socket)
going up and away; the Kamailio JSON-RPC link of cluster mode with a real Kamailio and with
nothing listening; the XMPP component with a real Prosody, before, while and after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from control.cli import build_server
from control.cluster import ClusterAgent
from control.config import parse_config
from control.media.freeswitch import FreeSwitchEngine
from control.metrics import MetricSources, NodeMetrics
from control.server import Server
from control.xmpp.app import XmppGateway
from tests.peers.eslfake import FakeFreeSwitch
from tests.peers.inprocess import running_server
from tests.peers.kamailio import KamailioProcess
from tests.peers.ports import free_ports
from tests.peers.prosody import ProsodyProcess, chorus_config
from tests.test_metrics import Samples, samples

pytestmark = pytest.mark.timeout(120)

PASSWORD = "ClueCon-test"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, rtp={}) as (chorus, _):
        yield chorus


async def scrape(metrics: NodeMetrics) -> Samples:
    body, _ = await metrics.render()
    return samples(body.decode())


async def eventually(check: Callable[[], Awaitable[bool]], tries: int = 200) -> bool:
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_freeswitch_nodes_up_then_gone(server: Server) -> None:
    fake = await FakeFreeSwitch(PASSWORD).start()
    (sip_port,) = free_ports(1)
    config = parse_config(
        {
            "audio": {"engine": "freeswitch"},
            "freeswitch": {
                "nodes": [
                    {
                        "sip": f"127.0.0.1:{sip_port}",
                        "esl": f"127.0.0.1:{fake.port}",
                        "password": PASSWORD,
                    }
                ]
            },
        }
    )
    engine = FreeSwitchEngine(
        server.ua,
        config.freeswitch.nodes,
        health_interval=0.5,
        failover_after=1.0,
        reconnect_max=0.5,
    )
    engine.start()
    metrics = NodeMetrics(MetricSources(server.ua, server.msrp, audio=engine))
    node = (("node", f"127.0.0.1:{sip_port}"),)
    try:

        async def up() -> bool:
            found = await scrape(metrics)
            return (
                found.get(("chorus_freeswitch_node_connected", node)) == 1
                and found.get(("chorus_freeswitch_node_up", node)) == 1
            )

        assert await eventually(up), await scrape(metrics)
        assert (await scrape(metrics))[("chorus_freeswitch_node_rooms", node)] == 0
        await fake.stop()

        async def down() -> bool:
            found = await scrape(metrics)
            return (
                found.get(("chorus_freeswitch_node_connected", node)) == 0
                and found.get(("chorus_freeswitch_node_up", node)) == 0
            )

        assert await eventually(down), await scrape(metrics)
    finally:
        await engine.close()
        await fake.stop()


def _agent(rpc_url: str, server: Server) -> ClusterAgent:
    port = server.config.sip.listen[0].port
    config = parse_config(
        {
            "sip": {"listen": [f"udp:127.0.0.1:{port}"]},
            "cluster": {"kamailio_rpc": rpc_url, "rpc_timeout": 1},
        }
    )
    return ClusterAgent.from_config(config)


@pytest.mark.peer("kamailio")
async def test_kamailio_rpc_up_with_a_real_edge_and_down_without(server: Server) -> None:
    (dead,) = free_ports(1)
    with KamailioProcess([]) as edge:
        live, gone = _agent(edge.rpc_url, server), _agent(f"http://127.0.0.1:{dead}/RPC", server)
        for agent in (live, gone):
            await agent.start()
        try:
            live_metrics = NodeMetrics(MetricSources(server.ua, server.msrp, cluster=live))
            gone_metrics = NodeMetrics(MetricSources(server.ua, server.msrp, cluster=gone))

            async def settled() -> bool:
                a, b = await scrape(live_metrics), await scrape(gone_metrics)
                return (
                    a[("chorus_cluster_registered", ())] == 1
                    and b[("chorus_kamailio_rpc_up", ())] == 0
                )

            assert await eventually(settled)
            found = await scrape(live_metrics)
            assert found[("chorus_kamailio_rpc_up", ())] == 1
            assert found[("chorus_cluster_phase", (("phase", "active"),))] == 1
            assert found[("chorus_cluster_phase", (("phase", "draining"),))] == 0
            assert (await scrape(gone_metrics))[("chorus_cluster_registered", ())] == 0
        finally:
            for agent in (live, gone):
                await agent.stop(timeout=2)


@pytest.mark.peer("prosody")
async def test_the_xmpp_component_connected_then_not(tmp_path: Path) -> None:
    """A real Prosody: the gauge is 0 until the component is up, 1 while it is, 0 after
    Prosody stops (the component then reconnects with back-off)."""
    prosody = ProsodyProcess().start()
    (port,) = free_ports(1)
    chorus = build_server(parse_config(chorus_config(prosody, tmp_path, port)))
    await chorus.start()
    gateway = chorus.applications["xmpp"]
    assert isinstance(gateway, XmppGateway)
    metrics = NodeMetrics(MetricSources(chorus.ua, chorus.msrp, xmpp=gateway))
    gauge = ("chorus_xmpp_component_connected", ())
    try:
        assert (await scrape(metrics))[gauge] == 0
        gateway.start()

        async def connected(value: int) -> bool:
            return (await scrape(metrics))[gauge] == value

        assert await eventually(lambda: connected(1), tries=600)
        prosody.stop()
        assert await eventually(lambda: connected(0), tries=600)
    finally:
        await chorus.stop()
        prosody.cleanup()
