"""The Event Socket client (greenswitch in its own gevent thread) against the ESL fake.

The fake (tests/peers/eslfake.py) is a protocol-level stand-in for FreeSWITCH 1.10's
mod_event_socket: what it writes is what FreeSWITCH writes. Here the client connects,
authenticates, subscribes, runs `api` commands and receives conference events; and it
survives what a real node does to it: half-written events, a connection cut in the middle
of a reply, a wrong password, a node that goes away and comes back (reconnect with
back-off), a node that stops answering.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from control.media.freeswitch.eslclient import (
    ClientEvent,
    EslAuthFailed,
    EslClient,
    EslConnected,
    EslDisconnected,
    EslEventReceived,
    EslUnavailable,
)
from tests.peers.eslfake import FakeFreeSwitch

pytestmark = pytest.mark.timeout(30)

PASSWORD = "n0t-ClueCon"


class Recorder:
    def __init__(self) -> None:
        self.events: list[ClientEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ClientEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[ClientEvent], bool], timeout: float = 10
    ) -> ClientEvent:
        async def found() -> ClientEvent:
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(found(), timeout)

    def conference_actions(self) -> list[str]:
        return [
            e.event.get("Action")
            for e in self.events
            if isinstance(e, EslEventReceived) and e.event.subclass == "conference::maintenance"
        ]


@pytest.fixture
async def fake() -> AsyncIterator[FakeFreeSwitch]:
    node = await FakeFreeSwitch(PASSWORD).start()
    yield node
    await node.stop()


def client_for(fake: FakeFreeSwitch, recorder: Recorder, password: str = PASSWORD) -> EslClient:
    return EslClient(
        "node-a",
        fake.host,
        fake.port,
        password,
        on_event=recorder,
        reconnect_min=0.05,
        reconnect_max=0.4,
        connect_timeout=2,
    )


async def connected(recorder: Recorder, count: int = 1) -> None:
    async def enough() -> None:
        while sum(isinstance(e, EslConnected) for e in recorder.events) < count:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(enough(), 10)


async def until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


async def test_connects_subscribes_and_runs_api_commands(fake: FakeFreeSwitch) -> None:
    recorder = Recorder()
    client = client_for(fake, recorder)
    client.start()
    try:
        await connected(recorder)
        assert fake.commands[:2] == [
            f"auth {PASSWORD}",
            "event plain CHANNEL_HANGUP_COMPLETE SHUTDOWN CUSTOM conference::maintenance",
        ]
        status = await client.api("status")
        assert "FreeSWITCH (Version 1.10.12" in status and status.startswith("UP ")
        member = fake.join("chorus-r1-0000", "alice")
        await recorder.wait_for(
            lambda e: isinstance(e, EslEventReceived) and e.event.get("Action") == "add-member"
        )
        assert recorder.conference_actions() == ["conference-create", "add-member"]
        reply = await client.api(f"conference chorus-r1-0000 mute {member}")
        assert reply == f"OK mute {member}\n"
        assert await client.api("conference chorus-r1-0000 kick 99") == "Non-Existant ID 99\n"
        listing = await client.api("conference chorus-r1-0000 list")
        assert listing.startswith(f"{member};sofia/chorus/alice@127.0.0.1;")
        assert ";alice;hear|floor;" in listing  # muted: no "speak"
        added = next(
            e.event
            for e in recorder.events
            if isinstance(e, EslEventReceived) and e.event.get("Action") == "add-member"
        )
        # The event as mod_conference 1.10 builds it, values URL-decoded.
        assert added.name == "CUSTOM" and added.subclass == "conference::maintenance"
        assert added.get("Member-ID") == str(member)
        assert added.get("Caller-Caller-ID-Number") == "alice"
        assert added.get("Channel-Name") == "sofia/chorus/alice@127.0.0.1"
        assert added.get("Speak") == "true" and added.get("Conference-Size") == "1"
    finally:
        await client.close()


async def test_half_written_events_arrive_whole(fake: FakeFreeSwitch) -> None:
    recorder = Recorder()
    client = client_for(fake, recorder)
    client.start()
    try:
        await connected(recorder)
        fake.half_written = True
        member = fake.join("chorus-r2-0000", "bob")
        fake.talk("chorus-r2-0000", member, True)
        await recorder.wait_for(
            lambda e: isinstance(e, EslEventReceived) and e.event.get("Action") == "start-talking"
        )
        assert recorder.conference_actions() == ["conference-create", "add-member", "start-talking"]
        # The connection survived the pauses mid-event.
        assert await client.api("status")
        assert fake.connections == 1
    finally:
        await client.close()


async def test_a_reply_cut_off_fails_the_command_and_the_client_reconnects(
    fake: FakeFreeSwitch,
) -> None:
    recorder = Recorder()
    client = client_for(fake, recorder)
    client.start()
    try:
        await connected(recorder)
        fake.cut_next_reply = "status"
        with pytest.raises(EslUnavailable):
            await client.api("status", timeout=5)
        await recorder.wait_for(lambda e: isinstance(e, EslDisconnected))
        await connected(recorder, 2)
        assert "is ready" in await client.api("status")
        assert fake.connections == 2
    finally:
        await client.close()


async def test_a_wrong_password_is_reported_and_retried_slowly(fake: FakeFreeSwitch) -> None:
    recorder = Recorder()
    client = client_for(fake, recorder, password="ClueCon")
    client.start()
    try:
        failed = await recorder.wait_for(lambda e: isinstance(e, EslAuthFailed))
        assert isinstance(failed, EslAuthFailed) and failed.reply == "-ERR invalid"
        await until(lambda: fake.auth_failures >= 3)
        assert not any(isinstance(e, EslConnected) for e in recorder.events)
        with pytest.raises(EslUnavailable):
            await client.api("status")
        # Back-off: 0.05, 0.1, 0.2, 0.4, 0.4 ... seconds between attempts, not a busy loop.
        await asyncio.sleep(1.0)
        assert fake.auth_failures < 12, fake.auth_failures
    finally:
        await client.close()


async def test_a_node_that_goes_away_is_reconnected_when_it_is_back(
    fake: FakeFreeSwitch,
) -> None:
    recorder = Recorder()
    client = client_for(fake, recorder)
    client.start()
    try:
        await connected(recorder)
        port = fake.port
        await fake.stop()
        await recorder.wait_for(lambda e: isinstance(e, EslDisconnected))
        with pytest.raises(EslUnavailable):
            await client.api("status")
        attempts = client.attempts
        await asyncio.sleep(0.8)
        assert client.attempts > attempts  # still trying, with back-off
        back = await FakeFreeSwitch(PASSWORD, port=port).start()
        try:
            await connected(recorder, 2)
            assert "is ready" in await client.api("status")
            assert back.subscribers == 1
        finally:
            await back.stop()
    finally:
        await client.close()


async def test_a_node_that_stops_answering_times_out_and_is_reconnected(
    fake: FakeFreeSwitch,
) -> None:
    recorder = Recorder()
    client = client_for(fake, recorder)
    client.start()
    try:
        await connected(recorder)
        fake.stalled = True
        with pytest.raises(EslUnavailable, match="no answer"):
            await client.api("status", timeout=0.5)
        # Replies come in order: a late one would be taken for the next command's, so the
        # client drops the connection and makes a fresh one.
        await recorder.wait_for(lambda e: isinstance(e, EslDisconnected))
        fake.stalled = False
        await connected(recorder, 2)
        assert "is ready" in await client.api("status")
        assert fake.connections == 2
    finally:
        await client.close()
