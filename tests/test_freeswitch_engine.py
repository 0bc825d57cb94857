"""FreeSwitchEngine's Event Socket side and its faults, with SIPp + the ESL fake as nodes.

The fake is a protocol-level FAKE of FreeSWITCH's Event Socket (tests/peers/eslfake.py); the
test plays FreeSWITCH's inside by joining the leg to the conference (`fake.join`) once SIPp
answered it. Then: Chorus's mute/unmute/kick go out as `api conference <name> …`; an
operator's kick or mute from another ESL client comes back as Kicked/MuteChanged;
talking events become TalkingStarted/Stopped; a node killed with -9 (SIPp and its Event
Socket process) has its room re-homed to the second node (new INVITE there, StreamMoved), or
with no second node the participants get AudioLost; the engine reconnects with back-off
when a node is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from control.media.engine import (
    AudioEngineError,
    AudioEvent,
    AudioLost,
    Kicked,
    MuteChanged,
    ParticipantId,
    StreamMoved,
    TalkingStarted,
    TalkingStopped,
)
from control.media.freeswitch import FreeSwitchEngine, conference_name
from control.server import Server
from tests.peers import fsnode
from tests.peers.eslfake import FakeFreeSwitch, operator
from tests.peers.fsnode import (
    ALICE,
    PASSWORD,
    ROOM,
    MediaNode,
    Participant,
    echoed,
    engine_for,
    offer,
)

server = fsnode.server_fixture
node = fsnode.node_fixture
participant = fsnode.participant_fixture

pytestmark = [pytest.mark.timeout(60), pytest.mark.peer("sipp")]


class Events:
    def __init__(self, engine: FreeSwitchEngine) -> None:
        self.seen: list[AudioEvent] = []
        self._task = asyncio.ensure_future(self._read(engine))

    async def _read(self, engine: FreeSwitchEngine) -> None:
        async for event in engine.events():
            self.seen.append(event)

    async def wait(
        self, predicate: Callable[[AudioEvent], bool], timeout: float = 15
    ) -> AudioEvent:
        async def poll() -> AudioEvent:
            while True:
                for event in self.seen:
                    if predicate(event):
                        return event
                await asyncio.sleep(0.02)

        return await asyncio.wait_for(poll(), timeout)

    def stop(self) -> None:
        self._task.cancel()


@contextlib.asynccontextmanager
async def watched(engine: FreeSwitchEngine, *nodes: MediaNode) -> AsyncIterator[Events]:
    """The engine's events while the test runs; then the engine closed, the nodes stopped."""
    events = Events(engine)
    try:
        yield events
    finally:
        events.stop()
        await engine.close()
        for node in nodes:
            await node.stop()


async def until(predicate: Callable[[], bool], timeout: float = 15) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


@pytest.fixture
async def engine(server: Server, node: MediaNode) -> AsyncIterator[FreeSwitchEngine]:
    engine = engine_for(server, node)
    yield engine
    await engine.close()


async def joined(engine: FreeSwitchEngine, fake: FakeFreeSwitch, port: int) -> int:
    """Attach ALICE and put her leg into the conference, as the node's dialplan would."""
    await engine.attach(ROOM, ALICE, offer(port), 0)
    member = fake.join(conference_name(ROOM), ALICE)
    await until(lambda: engine.member_id(ROOM, ALICE) == member)
    return member


async def test_mute_unmute_kick_are_conference_api_commands(
    engine: FreeSwitchEngine, node: MediaNode, participant: Participant
) -> None:
    assert node.fake is not None
    member = await joined(engine, node.fake, participant.port)
    name = conference_name(ROOM)
    await engine.set_muted(ROOM, ALICE, True)
    await engine.set_muted(ROOM, ALICE, False)
    assert await engine.kick(ROOM, ALICE)
    assert [c for c in node.fake.commands if c.startswith("api conference")] == [
        f"api conference {name} mute {member}",
        f"api conference {name} unmute {member}",
        f"api conference {name} kick {member}",
    ]
    assert node.fake.members(name) == []


async def test_deaf_undeaf_and_energy_are_conference_api_commands(
    engine: FreeSwitchEngine, node: MediaNode, participant: Participant
) -> None:
    fake = node.fake
    assert fake is not None
    member = await joined(engine, fake, participant.port)
    name = conference_name(ROOM)
    events = Events(engine)
    try:
        assert engine.deaf(ROOM, ALICE) is False and engine.energy_level(ROOM, ALICE) == 200
        await engine.set_deaf(ROOM, ALICE, True)
        (listed,) = fake.members(name)
        assert listed.deaf
        await until(lambda: engine.deaf(ROOM, ALICE) is True)
        await engine.set_deaf(ROOM, ALICE, False)
        assert not listed.deaf
        assert await engine.set_energy(ROOM, ALICE, 450) == 450
        assert listed.energy == 450
        await until(lambda: engine.energy_level(ROOM, ALICE) == 450)  # energy-level-member
        with pytest.raises(ValueError):
            await engine.set_energy(ROOM, ALICE, -1)
        assert [c for c in fake.commands if c.startswith("api conference")] == [
            f"api conference {name} deaf {member}",
            f"api conference {name} undeaf {member}",
            f"api conference {name} energy {member} 450",
        ]
        # An operator's deaf is the node's state, not a mute: no event for the room.
        reply = await operator(
            "127.0.0.1", node.esl_port, PASSWORD, f"conference {name} deaf {member}"
        )
        assert reply == f"OK deaf {member}\n"
        await until(lambda: engine.deaf(ROOM, ALICE) is True)
        assert not [e for e in events.seen if not isinstance(e, TalkingStarted | TalkingStopped)]
    finally:
        events.stop()
    # No member (yet): nothing is sent, nothing raised.
    assert await engine.set_energy(ROOM, ParticipantId("nobody"), 300) is None


async def test_operator_kick_mute_and_talking_are_reflected(
    engine: FreeSwitchEngine, node: MediaNode, participant: Participant
) -> None:
    assert node.fake is not None
    events = Events(engine)
    try:
        member = await joined(engine, node.fake, participant.port)
        name = conference_name(ROOM)
        node.fake.talk(name, member, True)
        node.fake.talk(name, member, False)
        await events.wait(lambda e: isinstance(e, TalkingStopped))
        # Our own mute: no news. Another ESL client's: MuteChanged, by the operator.
        await engine.set_muted(ROOM, ALICE, True)
        reply = await operator(
            "127.0.0.1", node.esl_port, PASSWORD, f"conference {name} unmute {member}"
        )
        assert reply == f"OK unmute {member}\n"
        changed = await events.wait(lambda e: isinstance(e, MuteChanged))
        assert changed == MuteChanged(ROOM, ALICE, muted=False, by_operator=True)
        reply = await operator(
            "127.0.0.1", node.esl_port, PASSWORD, f"conference {name} kick {member}"
        )
        assert reply == f"OK kicked {member}\n"
        kicked = await events.wait(lambda e: isinstance(e, Kicked))
        assert kicked == Kicked(ROOM, ALICE, "operator")
        assert events.seen[:2] == [TalkingStarted(ROOM, ALICE), TalkingStopped(ROOM, ALICE)]
        assert [e for e in events.seen if isinstance(e, MuteChanged)] == [changed]
        assert sum(isinstance(e, Kicked) for e in events.seen) == 1
        assert not [e for e in events.seen if isinstance(e, AudioLost)]
    finally:
        events.stop()


async def test_a_killed_node_moves_its_room_to_the_other(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    first = await MediaNode(tmp_path / "a", esl_in_process=False).start()
    second = await MediaNode(tmp_path / "b").start()
    engine = engine_for(server, first, second)
    events = Events(engine)
    try:
        answer = await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        assert answer.accept.port == first.media_port
        assert engine.leg(ROOM, ALICE).node == first.name
        await until(lambda: engine.node_states()[second.name].connected)
        first.kill()  # kill -9 of SIPp and of its Event Socket
        moved = await events.wait(lambda e: isinstance(e, StreamMoved))
        assert isinstance(moved, StreamMoved) and moved.participant == ALICE
        assert (moved.answer.address, moved.answer.accept.port) == ("127.0.0.1", second.media_port)
        (invite,) = await second.wait_received("INVITE")
        assert f"m=audio {participant.port} RTP/AVP 0 101" in invite  # the same offer again
        assert engine.leg(ROOM, ALICE).node == second.name
        assert await echoed(participant, "127.0.0.1", second.media_port)
        # The killed node comes back: its Event Socket is reconnected (with back-off).
        first.start_esl_process()
        await until(lambda: engine.node_states()[first.name].connected)
        assert not engine.node_states()[first.name].failed
        assert not any(isinstance(e, AudioLost) for e in events.seen)
    finally:
        events.stop()
        await engine.close()
        await first.stop()
        await second.stop()


async def test_with_no_node_left_the_participants_audio_is_lost(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    only = await MediaNode(tmp_path / "only", esl_in_process=False).start()
    engine = engine_for(server, only)
    events = Events(engine)
    try:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        only.kill()
        failed = await events.wait(lambda e: isinstance(e, AudioLost))
        assert isinstance(failed, AudioLost) and failed.participant == ALICE
        assert "no other node is up" in failed.reason
        assert engine.leg(ROOM, ALICE) is None
    finally:
        events.stop()
        await engine.close()
        await only.stop()


async def test_a_node_that_refuses_our_password_gets_no_room(
    server: Server, node: MediaNode, participant: Participant
) -> None:
    assert node.fake is not None
    node.fake.password = "not-what-chorus-has"
    engine = engine_for(server, node)
    try:
        with pytest.raises(AudioEngineError) as failed:
            await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        assert failed.value.status == 503
        assert node.fake.auth_failures >= 1
        assert not engine.node_states()[node.name].connected
        assert node.received("INVITE") == []  # no leg to a node Chorus cannot control
    finally:
        await engine.close()
