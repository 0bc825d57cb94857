"""Two `chorus serve` nodes behind a real Kamailio (deploy/kamailio/kamailio.cfg), cluster mode.

Each node registers itself in Kamailio's dispatcher set over JSON-RPC and pins every live
room to itself in htable ``rooms``; Kamailio follows a pin before it hashes. Callers are
Chorus's own UA (tests/peers/sipclient.py), one client (one source port) per member, calling
``sip:<room>@<kamailio>``; the node that answered is the port in the 200's Contact, and the
pins are read back over JSON-RPC. Kamailio probes the nodes with OPTIONS every second.

Shown here: rooms spread over both nodes, each pinned to the node that answered, and every
member of a room on that node; a node that joins later does not split the rooms already
live; a drained node (``chorus drain``) keeps its rooms — joins still reach it — while new
rooms go to the other, and exits once its last room ends; kill -9 of a node moves new
rooms (and new joins to its dead rooms) to the other once the probes have found it dead.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from control.kamailio import DispatcherTarget, parse_dispatcher_list, parse_htable_dump
from control.sip.session import Session
from tests.peers.chorus import ROOT, ChorusProcess
from tests.peers.kamailio import CONFIG, KamailioProcess, check_config
from tests.peers.ports import free_ports
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until

pytestmark = [pytest.mark.timeout(240), pytest.mark.peer("kamailio")]

# Probes every second, a probe times out after 1 s, two failed probes mark a node inactive.
EDGE = {"WITH_DS_PING": True, "DS_PING_INTERVAL": 1, "TM_FR_TIMER": 1000, "DS_FR_TIMER": 1000}


def offer(rtp_port: int) -> bytes:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    ).encode()


def node_uri(node: ChorusProcess) -> str:
    return f"sip:127.0.0.1:{node.sip_port}"


@dataclass
class Member:
    room: str
    node_port: int
    session: Session
    client: SipClient
    rtp: socket.socket


@dataclass
class Cluster:
    edge: KamailioProcess
    stack: AsyncExitStack
    members: list[Member] = field(default_factory=list)

    def targets(self) -> list[DispatcherTarget]:
        try:
            return parse_dispatcher_list(self.edge.rpc_call("dispatcher.list"))
        except OSError:  # HTTP 500 "No Destination Sets"
            return []

    def flags(self, node: ChorusProcess) -> str | None:
        for target in self.targets():
            if target.uri == node_uri(node):
                return target.flags
        return None

    def pins(self) -> dict[str, str | int]:
        return parse_htable_dump(self.edge.rpc_call("htable.dump", "rooms"))

    async def join(self, room: str) -> Member:
        """A new member from a new source (its own client and port) joins `room`."""
        client = await self.stack.enter_async_context(SipClient("udp"))
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        self.stack.callback(rtp.close)
        session, response = await client.call(
            f"sip:{room}@127.0.0.1:{self.edge.sip_port}",
            offer(rtp.getsockname()[1]),
            self.edge.sip_port,
        )
        assert session is not None, f"{response.status} {response.reason}"
        port = response.contacts[0].uri.port
        assert port is not None
        member = Member(room, port, session, client, rtp)
        self.members.append(member)
        return member

    async def leave(self, member: Member) -> None:
        await member.session.bye()
        self.members.remove(member)


def start_node(edge: KamailioProcess) -> ChorusProcess:
    node = ChorusProcess(
        {
            "cluster": {"kamailio_rpc": edge.rpc_url, "drain_timeout": 60},
            "rtp": {"timeout": 300},
        }
    )
    return node.start()


async def registered(cluster: Cluster, *nodes: ChorusProcess) -> bool:
    return await wait_until(lambda: all(cluster.flags(n) == "AP" for n in nodes), timeout=20)


@pytest.fixture
def edge() -> Iterator[KamailioProcess]:
    with KamailioProcess([], defines=EDGE) as proxy:
        yield proxy


@pytest.fixture
async def cluster(edge: KamailioProcess) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        yield Cluster(edge, stack)


@pytest.fixture
def nodes(edge: KamailioProcess) -> Iterator[list[ChorusProcess]]:
    started: list[ChorusProcess] = []
    try:
        started.extend(start_node(edge) for _ in range(2))
        yield started
    finally:
        for node in started:
            node.stop()


async def test_rooms_spread_and_pinned_and_a_room_stays_on_one_node(
    cluster: Cluster, nodes: list[ChorusProcess]
) -> None:
    assert await registered(cluster, *nodes), cluster.targets()
    by_port = {n.sip_port: node_uri(n) for n in nodes}
    landed: dict[str, set[int]] = {}
    for n in range(8):
        room = f"spread-{n}"
        for _ in range(3):  # three members, three sources
            member = await cluster.join(room)
            landed.setdefault(room, set()).add(member.node_port)
    assert all(len(ports) == 1 for ports in landed.values()), landed
    assert set().union(*landed.values()) == set(by_port), landed  # both nodes carry rooms
    pins = cluster.pins()
    for room, ports in landed.items():
        assert pins[f"{room}@127.0.0.1"] == by_port[next(iter(ports))], pins
    for member in list(cluster.members):
        await cluster.leave(member)
    assert await wait_until(lambda: cluster.pins() == {}), cluster.pins()


async def test_a_node_that_joins_later_does_not_split_live_rooms(
    cluster: Cluster, edge: KamailioProcess
) -> None:
    first = start_node(edge)
    second: ChorusProcess | None = None
    try:
        assert await registered(cluster, first), cluster.targets()
        rooms = [f"early-{n}" for n in range(8)]
        for room in rooms:
            assert (await cluster.join(room)).node_port == first.sip_port
        second = start_node(edge)
        assert await registered(cluster, first, second), cluster.targets()
        # The hash would now send about half of these rooms to the new node; the pins win.
        for room in rooms:
            assert (await cluster.join(room)).node_port == first.sip_port, room
        # New rooms use the new node too.
        fresh = {(await cluster.join(f"late-{n}")).node_port for n in range(8)}
        assert second.sip_port in fresh, fresh
        for member in list(cluster.members):
            await cluster.leave(member)
    finally:
        for node in (first, second):
            if node is not None:
                node.stop()


async def test_a_drained_node_keeps_its_rooms_until_they_empty_then_exits(
    cluster: Cluster, nodes: list[ChorusProcess]
) -> None:
    assert await registered(cluster, *nodes), cluster.targets()
    drained, other = nodes
    kept: list[Member] = []
    for n in range(12):
        member = await cluster.join(f"drain-{n}")
        if member.node_port == drained.sip_port:
            kept.append(member)
    assert len(kept) >= 2, [m.node_port for m in cluster.members]
    done = subprocess.run(
        [sys.executable, "-m", "control.cli", "drain", "--config", str(drained.config_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "drains" in done.stdout
    assert await wait_until(lambda: cluster.flags(drained) == "DX"), cluster.targets()
    assert cluster.edge.rpc_call("htable.get", "nodes", node_uri(drained))
    # Joins to the drained node's rooms still reach it ...
    for member in list(kept):
        again = await cluster.join(member.room)
        assert again.node_port == drained.sip_port, member.room
        kept.append(again)
    # ... while new rooms go to the other node.
    for n in range(8):
        assert (await cluster.join(f"after-drain-{n}")).node_port == other.sip_port
    assert drained.alive
    # Its rooms empty one by one; with the last one the node exits by itself.
    for member in kept[:-1]:
        await cluster.leave(member)
    assert drained.alive
    await cluster.leave(kept[-1])
    assert drained.process is not None
    assert drained.process.wait(20) == 0, drained.log()
    assert await wait_until(lambda: cluster.flags(drained) is None), cluster.targets()
    assert node_uri(drained) not in cluster.pins().values(), cluster.pins()
    assert "draining" in drained.log() and "drained, stopping" in drained.log()
    assert other.alive
    for member in list(cluster.members):
        await cluster.leave(member)


async def test_kill_9_moves_new_rooms_to_the_live_node(
    cluster: Cluster, nodes: list[ChorusProcess]
) -> None:
    assert await registered(cluster, *nodes), cluster.targets()
    victim, survivor = nodes
    orphaned: list[str] = []
    for n in range(12):
        member = await cluster.join(f"kill-{n}")
        if member.node_port == victim.sip_port:
            orphaned.append(member.room)
            cluster.members.remove(member)  # its node dies: no BYE later
    assert orphaned
    assert victim.process is not None
    victim.process.kill()
    victim.process.wait(10)
    # Kamailio's OPTIONS probes find it dead and mark it inactive (and probing).
    assert await wait_until(lambda: (cluster.flags(victim) or "").startswith("I"), timeout=30), (
        cluster.targets()
    )
    for n in range(8):
        assert (await cluster.join(f"after-kill-{n}")).node_port == survivor.sip_port
    # A room the dead node hosted starts anew on the live node, and is pinned there.
    member = await cluster.join(orphaned[0])
    assert member.node_port == survivor.sip_port
    assert await wait_until(
        lambda: cluster.pins().get(f"{orphaned[0]}@127.0.0.1") == node_uri(survivor)
    ), cluster.pins()
    for member in list(cluster.members):
        await cluster.leave(member)


async def test_sigterm_drains_and_stops_when_the_last_room_ends(
    cluster: Cluster, nodes: list[ChorusProcess]
) -> None:
    """SIGTERM is a drain first: the node's room goes on, then the node leaves and exits."""
    assert await registered(cluster, *nodes), cluster.targets()
    node, other = nodes
    mine: Member | None = None
    for n in range(12):
        member = await cluster.join(f"term-{n}")
        if member.node_port == node.sip_port:
            mine = member
            break
    assert mine is not None
    assert node.process is not None
    node.process.send_signal(signal.SIGTERM)
    assert await wait_until(lambda: cluster.flags(node) == "DX"), cluster.targets()
    again = await cluster.join(mine.room)  # its room still reaches it
    assert again.node_port == node.sip_port
    assert (await cluster.join("term-new")).node_port == other.sip_port
    assert node.alive
    await cluster.leave(mine)
    await cluster.leave(again)
    assert node.process.wait(20) == 0, node.log()
    assert await wait_until(lambda: cluster.flags(node) is None), cluster.targets()
    for member in list(cluster.members):
        await cluster.leave(member)


# --------------------------------------------------------------------------- the edge itself


def options(sock: socket.socket, edge_port: int, count: int) -> int:
    """Send `count` keepalive OPTIONS to the edge from `sock`; return how many were answered."""
    local = sock.getsockname()[1]
    for n in range(count):
        branch = "z9hG4bK" + uuid.uuid4().hex
        message = (
            f"OPTIONS sip:127.0.0.1:{edge_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n"
            f"From: <sip:flood@127.0.0.1:{local}>;tag={n}\r\n"
            f"To: <sip:127.0.0.1:{edge_port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(message.encode(), ("127.0.0.1", edge_port))
    answered = 0
    sock.settimeout(1.0)
    try:
        while True:
            data, _ = sock.recvfrom(65535)
            answered += data.startswith(b"SIP/2.0 200")
    except TimeoutError:
        pass
    return answered


def test_a_flood_is_banned_but_a_control_node_never_is() -> None:
    """Loopback is not trusted here (TRUSTED_NET elsewhere) and pike allows 5 requests per
    2 s: a stranger at 127.0.0.1 is banned (htable ipban), while a control node at the same
    IP (its address in the dispatcher set) sends as much as it likes."""
    node_port = free_ports(1)[0]
    flood = {"PIKE_DENSITY": 5, "TRUSTED_NET": "192.0.2.0/24,198.51.100.0/24"}
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as node,
    ):
        stranger.bind(("127.0.0.1", 0))
        node.bind(("127.0.0.1", node_port))
        with KamailioProcess([f"sip:127.0.0.1:{node_port}"], defines=flood) as edge:
            assert options(stranger, edge.sip_port, 30) < 30
            assert "pike blocked" in edge.log()
            assert edge.rpc_call("htable.get", "ipban", "127.0.0.1")
            # banned now: not one answer, even at a trickle
            assert options(stranger, edge.sip_port, 1) == 0
            assert options(node, edge.sip_port, 30) == 30


def test_config_check_with_the_cluster_parameters(tmp_path: Path) -> None:
    key, cert = tmp_path / "edge.key", tmp_path / "edge.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=edge"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    sip, rpc, tls = free_ports(3)
    defines: dict[str, str | int | bool] = {
        "SIP_PORT": sip,
        "RPC_PORT": rpc,
        "WITH_DS_PING": True,
        "DS_PING_INTERVAL": 2,
        "TM_FR_TIMER": 2000,
        "TRUSTED_NET": "10.0.0.0/8,192.168.0.0/16",
        "PIN_TABLE_SPEC": "rooms=>size=14;autoexpire=600;",
        "IPBAN_TABLE_SPEC": "ipban=>size=8;autoexpire=60;",
        "WITH_TLS": True,
        "TLS_PORT": tls,
        "TLS_CERTIFICATE": str(cert),
        "TLS_PRIVATE_KEY": str(key),
        "TLS_CA_LIST": str(cert),
    }
    done = check_config(CONFIG, defines)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"tls: 127.0.0.1 [127.0.0.1]:{tls}" in output
    without = check_config(CONFIG, {"WITHOUT_PIKE": True, "SIP_PORT": sip, "RPC_PORT": rpc})
    assert without.returncode == 0, without.stdout + without.stderr


async def test_a_restarted_kamailio_gets_the_node_and_its_pins_back(cluster: Cluster) -> None:
    """Kamailio keeps dispatcher.add and the pins in memory only. A node checks every
    min(pin_expiry / 3, 30) s whether it is still listed; after a restart it is not, so it
    registers again and re-pins its live rooms, and meanwhile its calls go on."""
    first = cluster.edge
    node = ChorusProcess(
        {
            "cluster": {"kamailio_rpc": first.rpc_url, "pin_expiry": 9, "drain_timeout": 0},
            "rtp": {"timeout": 300},
        }
    ).start()
    try:
        assert await registered(cluster, node), cluster.targets()
        member = await cluster.join("survivor")
        assert await wait_until(lambda: "survivor@127.0.0.1" in cluster.pins())
        first.stop()
        second = KamailioProcess(
            [], sip_port=first.sip_port, rpc_port=first.rpc_port, defines=EDGE
        ).start()
        try:
            cluster.edge = second
            assert cluster.targets() == [] and cluster.pins() == {}
            assert await registered(cluster, node), cluster.targets()
            assert await wait_until(
                lambda: cluster.pins().get("survivor@127.0.0.1") == node_uri(node)
            ), cluster.pins()
            again = await cluster.join("survivor")  # the pin leads the next member there
            assert again.node_port == member.node_port == node.sip_port
            for joined in list(cluster.members):
                await cluster.leave(joined)
        finally:
            second.stop()
            second.cleanup()
    finally:
        node.stop()


async def test_a_dead_nodes_pins_expire_on_their_own() -> None:
    """The safety net: nobody joins the dead node's room again, yet its pin goes away once
    its expiry (here 3 s, refreshed every second while the node lives) has passed."""
    with KamailioProcess([], defines={**EDGE, "HTABLE_TIMER": 1}) as quick:
        cluster = Cluster(quick, AsyncExitStack())
        node = ChorusProcess(
            {"cluster": {"kamailio_rpc": quick.rpc_url, "pin_expiry": 3}, "rtp": {"timeout": 300}}
        ).start()
        try:
            assert await registered(cluster, node), cluster.targets()
            await cluster.join("orphan")
            assert await wait_until(lambda: "orphan@127.0.0.1" in cluster.pins())
            assert node.process is not None
            node.process.kill()
            node.process.wait(10)
            assert await wait_until(lambda: cluster.pins() == {}, timeout=20), cluster.pins()
            assert "pin of room orphan@127.0.0.1" in quick.log()
        finally:
            node.stop()
            await cluster.stack.aclose()
