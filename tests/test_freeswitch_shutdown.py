"""A FreeSWITCH node that shuts down cleanly (``fsctl shutdown``, SIGTERM) is going away at
once (issue 11, faults), against the ESL FAKE (tests/peers/eslfake.py) and SIPp nodes.

FreeSWITCH 1.10's ``switch_core_destroy`` fires SHUTDOWN (``Event-Info: System Shutting
Down``) on the Event Socket, then hangs every channel up with SYSTEM_SHUTDOWN (a BYE on each
of Chorus's legs, del-member events) and unloads mod_event_socket (disconnect notice, socket
closed). Without SHUTDOWN, those BYEs would each be one lost leg (AudioLost) while the Event
Socket is still up, and the room would move only after ``failover_after`` of a dead socket.
With it, the node's rooms move at once to another fit node — here ``failover_after`` is ten
minutes and the reconnect back-off as long, so nothing else could move them — or, with no
node left, their participants get AudioLost at once.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.config import parse_config
from control.media.engine import AudioLost, RoomId, StreamMoved
from control.media.freeswitch import FreeSwitchEngine, conference_name
from control.media.freeswitch.esl import (
    ContentType,
    EslParser,
    command_bytes,
    parse_event_plain,
)
from control.media.freeswitch.eslclient import SUBSCRIPTION
from control.media.freeswitch.pool import NodePool
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
    rtp,
)
from tests.test_freeswitch_engine import until, watched

pytestmark = [pytest.mark.timeout(60), pytest.mark.peer("sipp")]

server = fsnode.server_fixture
participant = fsnode.participant_fixture
PATIENT = 600.0  # failover_after and the reconnect cap: far beyond the test's own timeout


def patient_engine(server: Server, *nodes: MediaNode, leg_grace: float = 1.0) -> FreeSwitchEngine:
    """An engine that would give a silent node up only after ten minutes."""
    return engine_for(
        server,
        *nodes,
        failover_after=PATIENT,
        reconnect_max=PATIENT,
        reconnect_min=PATIENT,
        leg_grace=leg_grace,
    )


async def shut_down(node: MediaNode) -> None:
    """An operator's ``fs_cli -x 'fsctl shutdown'`` on the node."""
    assert await operator("127.0.0.1", node.esl_port, PASSWORD, "fsctl shutdown") == "+OK\n"


def test_the_pool_fails_a_node_shutting_down_until_it_connects_anew() -> None:
    nodes = parse_config(
        {
            "audio": {"engine": "freeswitch"},
            "freeswitch": {
                "nodes": [
                    {"sip": f"127.0.0.1:{port}", "esl": f"127.0.0.1:{port + 1}", "password": "x"}
                    for port in (15080, 15090)
                ]
            },
        }
    ).freeswitch.nodes
    pool = NodePool(nodes, failover_after=PATIENT)
    a, b = (n.name for n in nodes)
    for name in (a, b):
        pool.set_connected(name, True, 0.0)
    assert pool.place(ROOM) is pool.nodes[a]
    assert pool.shutting_down(a, 1.0)  # failed now, not PATIENT seconds on
    assert pool.nodes[a].failed and not pool.nodes[a].fit
    assert not pool.shutting_down(a, 1.5)  # its rooms are being re-homed already
    pool.set_answering(a, True, 2.0)  # the old connection still answers a probe: no matter
    assert not pool.nodes[a].fit and pool.newly_failed(2.0) == []
    assert pool.place(ROOM) is pool.nodes[b]
    pool.set_connected(a, False, 3.0)
    pool.set_connected(a, True, 9.0)  # restarted: a new Event Socket connection
    assert pool.nodes[a].fit and not pool.nodes[a].going_away


async def test_the_fake_shuts_down_as_freeswitch_does() -> None:
    """The fake's wire format: SHUTDOWN first, every member hung up with SYSTEM_SHUTDOWN,
    the conference destroyed, then the disconnect notice and the socket closed."""
    fake = await FakeFreeSwitch(PASSWORD).start()
    try:
        name = conference_name(ROOM)
        fake.join(name, ALICE)
        reader, writer = await asyncio.open_connection("127.0.0.1", fake.port)
        writer.write(command_bytes(f"auth {PASSWORD}") + command_bytes(SUBSCRIPTION))
        await until(lambda: fake.subscribers == 1)
        assert await operator("127.0.0.1", fake.port, PASSWORD, "fsctl shutdown") == "+OK\n"
        data = await asyncio.wait_for(reader.read(), 10)  # to EOF: the fake closed it
        writer.close()
        parser = EslParser()
        parser.feed(data)
        kinds, events = [], []
        while (message := parser.next_message()) is not None:
            kinds.append(message.content_type)
            if message.content_type == ContentType.EVENT_PLAIN:
                events.append(parse_event_plain(message.body))
        assert kinds[-1] == ContentType.DISCONNECT_NOTICE
        seen = [(e.name, e.get("Action") or e.get("Hangup-Cause")) for e in events]
        assert seen == [
            ("SHUTDOWN", ""),
            ("CUSTOM", "del-member"),
            ("CHANNEL_HANGUP_COMPLETE", "SYSTEM_SHUTDOWN"),
            ("CUSTOM", "conference-destroy"),
        ]
        assert events[0].get("Event-Info") == "System Shutting Down"
        assert events[0].get("Event-Calling-Function") == "switch_core_destroy"
        with pytest.raises(OSError):  # no longer listening
            await operator("127.0.0.1", fake.port, PASSWORD, "status")
    finally:
        await fake.stop()


async def test_a_node_shutting_down_has_its_room_moved_at_once(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    first = await MediaNode(tmp_path / "a").start()
    second = await MediaNode(tmp_path / "b").start()
    engine = patient_engine(server, first, second)
    async with watched(engine, first, second) as events:
        answer = await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        assert answer.accept.port == first.media_port
        assert first.fake is not None
        first.fake.join(conference_name(ROOM), ALICE)  # the node's dialplan
        await until(lambda: engine.member_id(ROOM, ALICE) is not None)
        await until(lambda: engine.node_states()[second.name].connected)
        await shut_down(first)
        moved = await events.wait(lambda e: isinstance(e, StreamMoved))
        assert isinstance(moved, StreamMoved) and moved.participant == ALICE
        assert (moved.answer.address, moved.answer.accept.port) == ("127.0.0.1", second.media_port)
        (invite,) = await second.wait_received("INVITE")
        assert f"m=audio {participant.port} RTP/AVP 0 101" in invite  # the same offer again
        leg = engine.leg(ROOM, ALICE)
        assert leg is not None and leg.node == second.name
        await first.wait_received("BYE")  # the old leg was ended on our side
        state = engine.node_states()[first.name]
        assert state.failed and state.going_away and not state.fit
        assert await echoed(participant, "127.0.0.1", second.media_port) == rtp(1)
        assert not [e for e in events.seen if isinstance(e, AudioLost)]
        # A new room goes to the node that is still up.
        other = await engine.attach(RoomId("r2@example.com"), ALICE, offer(participant.port), 0)
        assert other.accept.port == second.media_port


async def test_with_no_other_node_a_shutdown_loses_the_audio_at_once(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    only = await MediaNode(tmp_path / "only").start()
    engine = patient_engine(server, only)
    async with watched(engine, only) as events:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        assert only.fake is not None
        only.fake.join(conference_name(ROOM), ALICE)
        await until(lambda: engine.member_id(ROOM, ALICE) is not None)
        await shut_down(only)
        lost = await events.wait(lambda e: isinstance(e, AudioLost))
        assert isinstance(lost, AudioLost) and lost.participant == ALICE
        assert "is shutting down and no other node is up" in lost.reason, lost.reason
        assert engine.leg(ROOM, ALICE) is None
        assert sum(isinstance(e, AudioLost) for e in events.seen) == 1


async def test_the_nodes_bye_ahead_of_its_shutdown_is_no_lost_audio(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    """The hang-up's BYE may reach Chorus before the SHUTDOWN event that preceded it on the
    node: the leg waits ``leg_grace`` for the Event Socket's word (long here, so the order
    is the test's), SHUTDOWN comes, and the room moves — the BYE was not a lost leg."""
    first = await MediaNode(tmp_path / "a", hangup_after_ms=500).start()
    second = await MediaNode(tmp_path / "b").start()
    engine = patient_engine(server, first, second, leg_grace=PATIENT)
    async with watched(engine, first, second) as events:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        old = engine.leg(ROOM, ALICE)
        assert old is not None and old.node == first.name and first.fake is not None
        first.fake.join(conference_name(ROOM), ALICE)
        await until(lambda: engine.member_id(ROOM, ALICE) is not None)
        await until(lambda: engine.node_states()[second.name].connected)
        assert await asyncio.wait_for(old.session.terminated, 15) == "remote BYE"
        first.fake.shutdown()  # SHUTDOWN, then del-member: the member the leg waits on goes
        moved = await events.wait(lambda e: isinstance(e, StreamMoved))
        assert isinstance(moved, StreamMoved) and moved.answer.accept.port == second.media_port
        leg = engine.leg(ROOM, ALICE)
        assert leg is not None and leg.node == second.name
        assert not [e for e in events.seen if isinstance(e, AudioLost)]
