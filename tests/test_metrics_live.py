"""/metrics of a real ``chorus serve`` (issue 13, "Must show": /metrics parses with
prometheus-client's parser and its counters move with the traffic): SIPp echo calls and
OPTIONS move the call and request counters by exactly what SIPp sent; an MSRP chat moves the
MSRP counters by exactly the messages and bytes the chat clients' own transports counted;
a SIPp participant playing a pcap into a room shows as a mixed participant with per-stream
RTP figures; a conference-info watcher is one subscription, and the NOTIFYs it received are
the NOTIFYs the server counted; a file pushed into a room (RFC 5547) is one more stored file
of its size; the route wants the operator's token.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest

from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import free_ports
from tests.peers.sipp import run_sipp_async, scenario_path
from tests.test_conference_info_live import notify_bodies
from tests.test_metrics import Samples, samples
from tests.test_room_files_live import Upload, push

pytestmark = pytest.mark.timeout(300)

TOKEN = "metrics-operator-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    (web_port,) = free_ports(1)
    settings = {
        "web": {"listen": f"http:127.0.0.1:{web_port}"},
        "api": {"token": TOKEN},
    }
    with ChorusProcess(settings) as process:
        process.metrics_url = f"http://127.0.0.1:{web_port}/metrics"  # type: ignore[attr-defined]
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def scrape(chorus: ChorusProcess) -> Samples:
    url = chorus.metrics_url  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http, http.get(url, headers=AUTH) as response:
        assert response.status == 200
        return samples(await response.text())


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


async def eventually(check: Callable[[], Awaitable[bool]], tries: int = 150) -> bool:
    """Scrape-and-check until it holds: what is in flight (REPORTs, RTP) lands first."""
    for _ in range(tries):
        if await check():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_the_operator_token_is_required(chorus: ChorusProcess) -> None:
    url = chorus.metrics_url  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer " + "y" * 27}):
            async with http.get(url, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert value(await scrape(chorus), "chorus_info", version="0.1.0") == 1


@pytest.mark.peer("sipp")
async def test_sipp_calls_and_options_move_the_counters_exactly(chorus: ChorusProcess) -> None:
    before = await scrape(chorus)
    calls = await run_sipp_async(
        scenario_path("uac_echo.xml"),
        f"127.0.0.1:{chorus.sip_port}",
        calls=5,
        rate=10,
        service="echo",
        pause_ms=100,
        timeout=60,
    )
    assert calls.returncode == 0, calls.describe()
    probes = await run_sipp_async(
        scenario_path("uac_options.xml"), f"127.0.0.1:{chorus.sip_port}", calls=3, rate=10
    )
    assert probes.returncode == 0, probes.describe()
    after = await scrape(chorus)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chorus_calls_total", outcome="2xx") == 5
    for klass in ("3xx", "4xx", "5xx", "6xx"):
        assert moved("chorus_calls_total", outcome=klass) == 0
    for method, count in (("INVITE", 5), ("ACK", 5), ("BYE", 5), ("OPTIONS", 3)):
        assert moved("chorus_sip_requests_received_total", method=method) == count, method
    assert moved("chorus_sip_responses_sent_total", method="INVITE", **{"class": "2xx"}) == 5
    assert moved("chorus_sip_responses_sent_total", method="BYE", **{"class": "2xx"}) == 5
    assert moved("chorus_sip_responses_sent_total", method="OPTIONS", **{"class": "2xx"}) == 3
    assert value(after, "chorus_sip_dialogs") == 0


async def test_an_msrp_chat_moves_the_msrp_counters_exactly(chorus: ChorusProcess) -> None:
    before = await scrape(chorus)
    async with ChatClient("alice", "Alice") as alice, ChatClient("bob", "Bob") as bob:
        alice_chat = await alice.join(chorus, "metrics-chat")
        bob_chat = await bob.join(chorus, "metrics-chat")
        sent = [await alice_chat.say(f"metrics line {n}") for n in range(3)]
        for mid in sent:
            assert await alice_chat.status_of(mid) == 200
        assert await bob_chat.wait_public(3)
        during = await scrape(chorus)
        assert value(during, "chorus_rooms") == 1
        assert value(during, "chorus_participants") == 2
        assert value(during, "chorus_participants_by_media", media="chat") == 2
        assert value(during, "chorus_participants_by_media", media="audio") == 0
        clients = (alice.msrp.counters, bob.msrp.counters)
        latest: dict[str, Samples] = {}

        async def settled() -> bool:
            found = latest["s"] = await scrape(chorus)

            def moved(name: str) -> float:
                return value(found, name) - value(before, name)

            return (
                moved("chorus_msrp_messages_received_total") == 3
                and moved("chorus_msrp_received_bytes_total") == sum(c.bytes_sent for c in clients)
                and moved("chorus_msrp_sent_bytes_total") == sum(c.bytes_received for c in clients)
                and moved("chorus_msrp_messages_sent_total")
                == sum(c.messages_received for c in clients)
            )

        assert await eventually(settled), (latest["s"], clients)
        assert alice.msrp.counters.messages_sent == 3
        # bob got alice's three lines, and the room's notices were messages too
        assert bob.msrp.counters.messages_received >= 3


@pytest.mark.peer("sipp", "sipp-pcap")
async def test_a_mixed_participant_has_rtp_figures(chorus: ChorusProcess) -> None:
    room = "metrics-audio@127.0.0.1"
    call = asyncio.create_task(
        run_sipp_async(
            scenario_path("uac_pcap_audio.xml"),
            f"127.0.0.1:{chorus.sip_port}",
            service="metrics-audio",
            pause_ms=8000,
            timeout=60,
        )
    )
    latest: list[Samples] = []

    def received() -> float:
        found = latest[-1] if latest else {}
        return sum(
            v
            for (name, labels), v in found.items()
            if name == "chorus_rtp_packets_received" and ("room", room) in labels
        )

    async def mixed() -> bool:
        latest.append(await scrape(chorus))
        return received() > 0 and value(latest[-1], "chorus_mixer_participants") == 1

    assert await eventually(mixed), latest[-1] if latest else None
    found = latest[-1]
    assert value(found, "chorus_participants_by_media", media="audio") == 1
    assert value(found, "chorus_mixer_ticks_total") > 0
    jitter = [k for k in found if k[0] == "chorus_rtp_jitter_seconds" and ("room", room) in k[1]]
    assert len(jitter) == 1 and found[jitter[0]] >= 0
    result = await call
    assert result.returncode == 0, result.describe()

    async def gone() -> bool:
        after = await scrape(chorus)
        streams = [k for k in after if k[0] == "chorus_rtp_packets_received"]
        return value(after, "chorus_mixer_participants") == 0 and not streams

    assert await eventually(gone)


async def test_a_pushed_file_is_counted_as_stored(chorus: ChorusProcess) -> None:
    before = await scrape(chorus)
    data = random.Random(13).randbytes(300_000)
    upload = Upload(data, hashlib.sha1(data).digest(), name="metrics.bin")
    async with ChatClient("fred", "Fred") as fred:
        statuses = await push(fred, chorus, upload, room="metrics-files")
    assert statuses and statuses[-1] == 200
    after = await scrape(chorus)
    assert value(after, "chorus_files_stored") - value(before, "chorus_files_stored") == 1
    stored = value(after, "chorus_files_stored_bytes") - value(before, "chorus_files_stored_bytes")
    assert stored == len(data)


@pytest.mark.peer("sipp")
async def test_a_watcher_moves_the_subscription_and_notify_counters(chorus: ChorusProcess) -> None:
    """A SIPp conference-info watcher (uac_subscribe_conference.xml) of a live room: one
    subscription while it watches; every NOTIFY SIPp received is one the server counted."""
    before = await scrape(chorus)
    async with ChatClient("gina", "Gina") as gina, ChatClient("hal", "Hal") as hal:
        gina_chat = await gina.join(chorus, "metrics-watch")
        watcher = asyncio.create_task(
            run_sipp_async(
                "uac_subscribe_conference",
                f"127.0.0.1:{chorus.sip_port}",
                service="metrics-watch",
                trace_messages=True,
                timeout=120,
            )
        )

        async def watched() -> bool:
            return value(await scrape(chorus), "chorus_conference_subscriptions") == 1

        assert await eventually(watched)
        hal_chat = await hal.join(chorus, "metrics-watch")  # a partial NOTIFY
        await hal_chat.leave()
        await gina_chat.leave()  # the room ends: the terminated NOTIFY ends SIPp's scenario
        result = await watcher
    assert result.returncode == 0, result.describe()
    received = len(notify_bodies(result.messages))
    assert received >= 2
    after = await scrape(chorus)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chorus_sip_requests_sent_total", method="NOTIFY") == received
    assert moved("chorus_sip_requests_received_total", method="SUBSCRIBE") == 1
    assert moved("chorus_sip_responses_sent_total", method="SUBSCRIBE", **{"class": "2xx"}) == 1
    assert value(after, "chorus_conference_subscriptions") == 0
