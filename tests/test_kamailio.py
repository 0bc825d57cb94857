"""The Kamailio edge proxy (deploy/kamailio/kamailio.cfg) with real Kamailio and SIPp.

SIPp UACs call through a real Kamailio to SIPp UASes standing in for control nodes:
record-routing and the BYE path (RFC 3261 §16.6, §16.12), room affinity by hashing the
Request-URI user, failover on 503 (§16.7), and refusal of requests outside the conference
domain. The JSON-RPC client (control.kamailio) is checked against the same Kamailio.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from control.kamailio import (
    DispatcherState,
    KamailioRpc,
    KamailioRpcError,
    KamailioUnreachable,
    parse_statistics,
)
from tests.peers.kamailio import CONFIG, KamailioProcess, check_config
from tests.peers.ports import LOOPBACK, free_port, free_ports
from tests.peers.require import require_peer
from tests.peers.sipp import SippUas, answer_contacts, run_sipp

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.peer("kamailio"),
]

needs_sipp = pytest.mark.peer("sipp")

# --------------------------------------------------------------------------- helpers


def sip_request(
    method: str,
    ruri: str,
    port: int,
    *,
    to_tag: str | None = None,
    route: str | None = None,
    max_forwards: int = 70,
) -> tuple[bytes, int]:
    """A minimal request (RFC 3261 §8.1.1) from a throwaway UDP socket."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    local = sock.getsockname()[1]
    branch = "z9hG4bK" + uuid.uuid4().hex
    lines = [
        f"{method} {ruri} SIP/2.0",
        f"Via: SIP/2.0/UDP {LOOPBACK}:{local};branch={branch};rport",
        f"From: <sip:tester@{LOOPBACK}:{local}>;tag={uuid.uuid4().hex[:8]}",
        f"To: <{ruri}>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {uuid.uuid4().hex}@{LOOPBACK}",
        f"CSeq: 1 {method}",
        f"Contact: <sip:tester@{LOOPBACK}:{local}>",
        f"Max-Forwards: {max_forwards}",
    ]
    if route:
        lines.append(f"Route: {route}")
    lines += ["Content-Length: 0", "", ""]
    try:
        sock.settimeout(5.0)
        sock.sendto("\r\n".join(lines).encode(), (LOOPBACK, port))
        while True:
            data, _ = sock.recvfrom(65535)
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                return data, status
    finally:
        sock.close()


def contact_port(contact: str) -> int:
    found = re.search(r":(\d+)(?:[;>]|$)", contact)
    assert found, contact
    return int(found.group(1))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def edge() -> Iterator[tuple[KamailioProcess, SippUas, SippUas]]:
    """One Kamailio with two SIPp UASes as the control-node set, shared by the module."""
    require_peer("sipp")
    with SippUas() as first, SippUas() as second:
        proxy = KamailioProcess([first.sip_uri, second.sip_uri])
        with proxy:
            yield proxy, first, second


@pytest.fixture
def lone_kamailio() -> Iterator[KamailioProcess]:
    """A Kamailio whose destinations are dead ports (no SIPp needed)."""
    dead_a, dead_b = free_ports(2)
    with KamailioProcess([f"sip:{LOOPBACK}:{dead_a}", f"sip:{LOOPBACK}:{dead_b}"]) as proxy:
        yield proxy


# --------------------------------------------------------------------------- config


def test_config_passes_check_with_defaults() -> None:
    done = check_config(CONFIG)
    assert done.returncode == 0, done.stderr
    assert "config file ok" in done.stdout + done.stderr


def test_config_passes_check_with_every_parameter_set() -> None:
    sip, rpc = free_ports(2)
    done = check_config(
        CONFIG,
        {
            "SIP_IP": "127.0.0.1",
            "SIP_PORT": sip,
            "RPC_PORT": rpc,
            "DS_LIST": "/tmp/chorus-dispatcher.list",
            "DS_SETID": 7,
            "CONF_DOMAIN": "conf.test.invalid",
            "ACCEPT_MYSELF": 0,
            "DS_RELOAD_DELTA": 5,
            "DS_FR_TIMER": 1000,
            "WITH_DS_PING": True,
            "DS_PING_INTERVAL": 5,
            "WITH_PIKE": True,
            "TRUSTED_NET": "127.0.0.0/8",
            "CHILDREN": 2,
        },
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert f"udp: 127.0.0.1 [127.0.0.1]:{sip}" in output
    assert f"tcp: 127.0.0.1 [127.0.0.1]:{rpc}" in output


def test_config_check_is_not_vacuous(tmp_path: Path) -> None:
    """A broken copy fails `kamailio -c`, so the two checks above mean something."""
    broken = tmp_path / "broken.cfg"
    broken.write_text(CONFIG.read_text().replace("route(REQINIT);", "route(REQINIT)", 1))
    assert check_config(broken).returncode != 0


# --------------------------------------------------------------------------- JSON-RPC


async def test_rpc_version_and_dispatcher_list(
    edge: tuple[KamailioProcess, SippUas, SippUas],
) -> None:
    proxy, first, second = edge
    async with aiohttp.ClientSession() as session:
        rpc = KamailioRpc(session, proxy.rpc_url)
        assert (await rpc.version()).startswith("kamailio 5.")
        targets = await rpc.dispatcher_list()
    assert {t.uri for t in targets} == {first.sip_uri, second.sip_uri}
    assert all(t.setid == 1 and t.active and not t.probing for t in targets)


async def test_rpc_set_state_add_remove(lone_kamailio: KamailioProcess) -> None:
    extra = f"sip:{LOOPBACK}:{free_port()}"
    async with aiohttp.ClientSession() as session:
        rpc = KamailioRpc(session, lone_kamailio.rpc_url)
        first = lone_kamailio.destinations[0]
        await rpc.dispatcher_set_state(DispatcherState.INACTIVE_PROBING, 1, first)
        await rpc.dispatcher_add(1, extra)
        # reload_delta is 0: a second change right away is accepted
        await rpc.dispatcher_add(2, extra, 0, 5)
        by_key = {(t.setid, t.uri): t for t in await rpc.dispatcher_list()}
        assert by_key[(1, first)].flags == "IP"
        assert not by_key[(1, first)].active and by_key[(1, first)].probing
        assert by_key[(1, extra)].active
        assert by_key[(2, extra)].priority == 5
        await rpc.dispatcher_remove(1, extra)
        await rpc.dispatcher_set_state(DispatcherState.ACTIVE, 1, first)
        by_key = {(t.setid, t.uri): t for t in await rpc.dispatcher_list()}
    assert (1, extra) not in by_key
    assert by_key[(1, first)].active


async def test_rpc_errors(lone_kamailio: KamailioProcess) -> None:
    async with aiohttp.ClientSession() as session:
        rpc = KamailioRpc(session, lone_kamailio.rpc_url)
        with pytest.raises(KamailioRpcError) as unknown:
            await rpc.call("no.such.method")
        assert unknown.value.code == 500
        assert not isinstance(unknown.value, KamailioUnreachable)
        with pytest.raises(KamailioRpcError):
            await rpc.dispatcher_set_state("a", 1, "sip:192.0.2.1:9")  # not in the set
        closed = KamailioRpc(session, f"http://{LOOPBACK}:{free_port('tcp')}/RPC", timeout=2)
        with pytest.raises(KamailioUnreachable):
            await closed.version()
        # the SIP port does not serve JSON-RPC
        sip_port = KamailioRpc(session, f"http://{LOOPBACK}:{lone_kamailio.sip_port}/RPC")
        with pytest.raises(KamailioUnreachable) as forbidden:
            await sip_port.version()
        assert forbidden.value.code == 403


def test_parse_statistics_keeps_names_and_ints() -> None:
    stats = parse_statistics(["tmx:2xx_transactions = 4", "core:x = abc", "junk", 5])
    assert stats == {"tmx:2xx_transactions": 4, "core:x": "abc"}


# --------------------------------------------------------------------------- calls


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_calls_through_the_edge_all_succeed(
    edge: tuple[KamailioProcess, SippUas, SippUas], transport: str
) -> None:
    """50 INVITE/ACK/BYE calls: ACK and BYE follow the Record-Route set back through us."""
    proxy, _, _ = edge
    result = run_sipp(
        "uac_echo",
        proxy.sip_address,
        transport="u1" if transport == "u1" else "t1",
        calls=50,
        rate=100,
        service=f"echo-{transport}",
        trace_messages=True,
    )
    assert result.ok, result.describe()
    assert result.stats is not None and result.stats.successful == 50
    # the 200 carried our Record-Route (two of them when UDP meets TCP, RFC 3261 §16.6)
    rr = re.findall(rf"^Record-Route:.*{proxy.sip_port}.*$", result.messages, re.M)
    assert rr, result.messages[:3000]
    if transport == "t1":
        assert any("transport=tcp" in line for line in rr)
    async with aiohttp.ClientSession() as session:
        stats = await KamailioRpc(session, proxy.rpc_url).statistics("tmx")
    assert isinstance(stats["tmx:2xx_transactions"], int)
    assert stats["tmx:2xx_transactions"] >= 100  # 50 INVITEs + 50 BYEs relayed


@needs_sipp
def test_conference_domain_is_routed(edge: tuple[KamailioProcess, SippUas, SippUas]) -> None:
    proxy, _, _ = edge
    result = run_sipp(
        "uac_domain",
        proxy.sip_address,
        calls=5,
        rate=20,
        service="room-domain",
        keys={"domain": proxy.conf_domain},
    )
    assert result.ok, result.describe()


@needs_sipp
def test_room_affinity(edge: tuple[KamailioProcess, SippUas, SippUas]) -> None:
    """Every call to one room reaches one UAS; different rooms use both UASes."""
    proxy, first, second = edge
    landed: dict[str, set[int]] = {}
    for room in [f"room-{n}" for n in range(8)]:
        result = run_sipp(
            "uac_echo",
            proxy.sip_address,
            calls=4,
            rate=50,
            service=room,
            trace_messages=True,
        )
        assert result.ok, result.describe()
        ports = [contact_port(c) for c in answer_contacts(result.messages)]
        assert len(ports) == 4, result.messages[:2000]
        landed[room] = set(ports)
    assert all(len(ports) == 1 for ports in landed.values()), landed
    used = set().union(*landed.values())
    assert used == {first.port, second.port}, landed


@needs_sipp
def test_same_room_same_node_whatever_the_host(
    edge: tuple[KamailioProcess, SippUas, SippUas],
) -> None:
    """sip:room@<edge address> and sip:room@<conference domain> hash alike (user only)."""
    proxy, _, _ = edge
    by_ip = run_sipp(
        "uac_echo", proxy.sip_address, calls=2, service="same-room", trace_messages=True
    )
    by_domain = run_sipp(
        "uac_domain",
        proxy.sip_address,
        calls=2,
        service="same-room",
        keys={"domain": proxy.conf_domain},
        trace_messages=True,
    )
    assert by_ip.ok and by_domain.ok, by_ip.describe() + by_domain.describe()
    ports = {contact_port(c) for c in answer_contacts(by_ip.messages + by_domain.messages)}
    assert len(ports) == 1


@needs_sipp
def test_failover_on_503() -> None:
    """A node answering 503 is skipped: every call still reaches the healthy node."""
    with SippUas("uas_503") as overloaded, SippUas() as healthy:
        with KamailioProcess([overloaded.sip_uri, healthy.sip_uri]) as proxy:
            for room in [f"fo-{n}" for n in range(6)]:
                result = run_sipp("uac_echo", proxy.sip_address, calls=2, rate=20, service=room)
                assert result.ok, result.describe() + proxy.log()[-3000:]
        bad = overloaded.stop()
        good = healthy.stop()
    assert bad.stats is not None and good.stats is not None
    assert bad.stats.incoming > 0  # some rooms hash to the overloaded node first
    assert good.stats.successful == 12


@needs_sipp
def test_pike_spares_trusted_sources() -> None:
    """With pike on, 127.0.0.0/8 is whitelisted: one busy load generator is not banned."""
    with (
        SippUas() as uas,
        KamailioProcess([uas.sip_uri], defines={"WITH_PIKE": True, "PIKE_DENSITY": 5}) as proxy,
    ):
        result = run_sipp("uac_echo", proxy.sip_address, calls=60, rate=100, service="busy")
        assert result.ok, result.describe()


@needs_sipp
def test_pike_bans_an_untrusted_flood() -> None:
    """The same load from an untrusted source exceeds 5 requests per 2 s and is dropped."""
    untrusted: dict[str, str | int | bool] = {
        "WITH_PIKE": True,
        "PIKE_DENSITY": 5,
        "TRUSTED_NET": "192.0.2.0/24",
    }
    # stop_timeout=1: the banned calls never end, do not wait for them
    with (
        SippUas(stop_timeout=1) as uas,
        KamailioProcess([uas.sip_uri], defines=untrusted) as proxy,
    ):
        result = run_sipp(
            "uac_echo",
            proxy.sip_address,
            calls=60,
            rate=100,
            service="flood",
            recv_timeout_ms=2000,
            extra_args=["-max_invite_retrans", "1", "-max_non_invite_retrans", "1"],
            timeout=10,
        )
        assert not result.ok
        assert "pike blocked" in proxy.log()


# --------------------------------------------------------------------------- refusals


def test_foreign_domain_is_refused(lone_kamailio: KamailioProcess) -> None:
    _, status = sip_request("INVITE", "sip:bob@other.example.org", lone_kamailio.sip_port)
    assert status == 403
    _, status = sip_request("MESSAGE", "sip:bob@192.0.2.10:5060", lone_kamailio.sip_port)
    assert status == 403


def test_requests_to_the_proxy_itself(lone_kamailio: KamailioProcess) -> None:
    port = lone_kamailio.sip_port
    # keepalive: OPTIONS without a user part is answered by the proxy
    _, status = sip_request("OPTIONS", f"sip:{LOOPBACK}:{port}", port)
    assert status == 200
    # an in-dialog request that does not carry our Route has nowhere to go
    _, status = sip_request("BYE", f"sip:nobody@{LOOPBACK}:{port}", port, to_tag="abc")
    assert status == 404
    # RFC 3261 §16.3 step 3: Max-Forwards exhausted
    _, status = sip_request("INVITE", f"sip:room@{LOOPBACK}:{port}", port, max_forwards=0)
    assert status == 483


def test_myself_can_be_excluded_from_the_conference_domain() -> None:
    with KamailioProcess([f"sip:{LOOPBACK}:{free_port()}"], defines={"ACCEPT_MYSELF": 0}) as proxy:
        port = proxy.sip_port
        _, status = sip_request("INVITE", f"sip:room@{LOOPBACK}:{port}", port)
        assert status == 404


def test_dead_nodes_give_an_error_not_silence() -> None:
    """With every node dead, the caller gets a final answer after the failover timers."""
    dead = free_ports(1)[0]
    with KamailioProcess([f"sip:{LOOPBACK}:{dead}"], defines={"DS_FR_TIMER": 500}) as proxy:
        _, status = sip_request("OPTIONS", f"sip:room@{proxy.conf_domain}", proxy.sip_port)
    assert status == 503
