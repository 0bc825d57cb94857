"""Rooms mixed by a REAL FreeSWITCH 1.10 (issue 11, the production shape), only when
``FREESWITCH_BIN`` names a ``freeswitch`` binary: without one every test here skips, with
that reason (tests/peers/fsreal.py; FreeSWITCH cannot be installed on this machine or in CI).

Each node runs exactly deploy/freeswitch's config rendered for free loopback ports,
unprivileged, everything in a temp dir (`RealFreeSwitch`). A Chorus server with ``[audio]
engine = "freeswitch"`` runs in this process so that its engine can be looked at.

- Three baresip phones in one room, one per codec (Opus, PCMU, G.722), each sending its own
  tone: FreeSWITCH mixes (mix-minus), so each hears the other two and not itself (FFT, as
  the embedded mixer's tests/test_room_peers.py), and each phone's answer is FreeSWITCH's
  (its RTP range, its codec): RTP never passes through Chorus.
- An outside ESL client (what ``fs_cli -x 'conference R kick N'`` is) kicks alice: her call
  gets BYE from Chorus, bob's chat says she was removed by the operator, a conference-info
  watcher (tests/peers/watcher.py) sees her deleted while bob stays, and FreeSWITCH's
  conference has bob alone.
- kill -9 of the only node: alice (audio and chat) is re-INVITEd with her audio at port 0 and
  told her audio was lost, carol (audio only) gets BYE, bob's chat goes on. With a second
  node the room is re-homed there instead — after kill -9 and after ``fsctl shutdown`` (whose
  BYEs on every leg are no lost audio): both are re-INVITEd toward the second node's RTP and
  hear each other through it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.media.engine import ParticipantId, RoomId
from control.media.freeswitch import FreeSwitchEngine, conference_name
from control.media.freeswitch.members import parse_conference_list
from control.media.tone import steady_tone_power, tone_power
from control.server import Server
from control.sip import sdp
from tests.peers import fsreal
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.conversation import (
    ABSENT,
    HEARD,
    assert_each_hears_the_others,
    converse,
)
from tests.peers.fsnode import running_server, take_reoffers
from tests.peers.fsreal import RealFreeSwitch
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.siptrace import call_messages, invite_answer
from tests.peers.wait import wait_until
from tests.peers.watcher import ConferenceWatcher
from tests.test_freeswitch_operator import (
    Ports,
    alice_gone_bob_stays,
    engine_of,
    notified,
    status_of,
)
from tests.test_room_peers import THREE_CODECS

pytestmark = [pytest.mark.timeout(300)]

freeswitch_bin = fsreal.freeswitch_bin_fixture  # skips without FREESWITCH_BIN

ROOM_USER = "real"
ROOM = RoomId(f"{ROOM_USER}@127.0.0.1")


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, *nodes: RealFreeSwitch) -> AsyncIterator[tuple[Server, Ports]]:
    """A running server whose rooms ``nodes`` mix; a node that fails is given up at once."""
    configs = [n.config for n in nodes]
    async with running_server(tmp_path, configs, health_interval=1, failover_after=0.0) as (
        server,
        port,
    ):
        yield server, Ports(port)


@pytest.fixture
async def node(freeswitch_bin: str, tmp_path: Path) -> AsyncIterator[RealFreeSwitch]:
    fs = await RealFreeSwitch(freeswitch_bin, tmp_path / "fs-a").start()
    yield fs
    await fs.stop()


def participant_of(server: Server, user: str) -> ParticipantId:
    """The participant id of ``user``'s session in the room."""
    app = server.applications["conference"]
    for participant in engine_of(server).participants(ROOM):
        found = app.participant(ROOM, participant)  # type: ignore[attr-defined]
        if found is not None and found.uri.startswith(f"sip:{user}@"):
            return participant
    raise AssertionError(f"{user} has no audio leg in {ROOM}")


async def members_of(node: RealFreeSwitch) -> dict[str, int]:
    """FreeSWITCH's own view of the room: participant (caller-id number) -> member id."""
    listing = await node.api(f"conference {conference_name(ROOM)} list")
    return {m.caller_id_number: m.member_id for m in parse_conference_list(listing)}


async def wait_members(node: RealFreeSwitch, participants: list[ParticipantId]) -> None:
    """Until FreeSWITCH's conference holds exactly ``participants`` (a kicked member leaves
    once its channel has hung up, a moment after the kick's reply)."""
    for _ in range(200):
        if sorted(await members_of(node)) == sorted(participants):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node.name} has {await members_of(node)}, not {participants}")


async def mapped(engine: FreeSwitchEngine, participant: ParticipantId) -> int:
    """The member id the engine learned from FreeSWITCH's add-member event."""
    assert await wait_until(lambda: engine.member_id(ROOM, participant) is not None, timeout=20)
    member = engine.member_id(ROOM, participant)
    assert member is not None
    return member


# --- three codecs, one room -----------------------------------------------------------------


@pytest.mark.peer("baresip")
async def test_opus_pcmu_and_g722_phones_each_hear_the_others_not_themselves(
    node: RealFreeSwitch, tmp_path: Path
) -> None:
    talkers = THREE_CODECS  # Opus, PCMU, G.722, each its own tone
    workdir = tmp_path / "talk"
    workdir.mkdir()
    async with serving(tmp_path, node) as (server, ports):
        engine = engine_of(server)
        members: set[ParticipantId] = set()

        async def watch_members() -> None:  # who FreeSWITCH said joined its conference
            while True:
                members.update(p for p in engine.participants(ROOM) if engine.member_id(ROOM, p))
                await asyncio.sleep(0.05)

        watcher = asyncio.ensure_future(watch_members())
        uri = f"sip:{ROOM_USER}@127.0.0.1:{ports.sip_port}"
        try:
            heard = await asyncio.to_thread(
                converse, talkers, lambda _: uri, workdir, diagnostics=node.log
            )
        finally:
            watcher.cancel()
        assert server.ports.in_use() == 0  # Chorus never took an RTP port of its own
    assert_each_hears_the_others(heard, "\n" + node.log())
    assert len(members) == 3, members  # three add-member events, mapped to three legs
    trace = (tmp_path / "sip").read_text(errors="replace")
    for h, codec in zip(heard, ("opus/48000/2", "PCMU/8000", "G722/8000"), strict=True):
        answer = sdp.parse(invite_answer(call_messages(trace, h.call_id)).body)
        (audio,) = [m for m in answer.media if m.media == "audio"]
        connection = answer.connection_of(audio)
        assert connection is not None and connection.address == "127.0.0.1"
        assert node.in_rtp_range(audio.port), (audio.port, node.rtp_start)  # FreeSWITCH's
        rtpmaps = [a.value or "" for a in audio.attributes if a.name == "rtpmap"]
        assert rtpmaps and rtpmaps[0].endswith(f" {codec}"), (h.talker.user, rtpmaps)


# --- an operator's kick from outside Chorus -------------------------------------------------


async def test_an_outside_esl_kick_ends_that_participant_and_the_room_shows_it(
    node: RealFreeSwitch, tmp_path: Path
) -> None:
    async with serving(tmp_path, node) as (server, ports):
        engine = engine_of(server)
        app = server.applications["conference"]
        async with ChatClient("alice", "Alice") as alice_c, ChatClient("bob", "Bob") as bob_c:
            alice = await alice_c.join(
                ports, ROOM_USER, secure=False, audio=RtpEndpoint("PCMU", 8000, 0, seed=1)
            )
            bob = await bob_c.join(
                ports, ROOM_USER, secure=False, audio=RtpEndpoint("PCMU", 8000, 0, seed=2)
            )
            assert await wait_until(lambda: len(engine.participants(ROOM)) == 2, timeout=20)
            alice_p, bob_p = participant_of(server, "alice"), participant_of(server, "bob")
            member = await mapped(engine, alice_p)
            await mapped(engine, bob_p)
            assert (await members_of(node))[alice_p] == member
            async with ConferenceWatcher(ports.sip_port, ROOM_USER) as watcher:
                assert await wait_until(
                    lambda: status_of(watcher.model, "alice") and status_of(watcher.model, "bob")
                ), "the watcher never saw alice and bob together"

                kick = f"conference {conference_name(ROOM)} kick {member}"
                assert await node.api(kick) == f"OK kicked {member}\n"  # mod_conference's
                assert alice.session is not None
                assert await asyncio.wait_for(alice.session.terminated, 20) == "remote BYE"
                kick_text = "Alice was removed from the room by operator"
                assert await wait_until(lambda: notified(bob, "kicked", kick_text), timeout=20)
                assert await wait_until(lambda: engine.participants(ROOM) == [bob_p], timeout=20)
                assert app.participant(ROOM, alice_p) is None  # type: ignore[attr-defined]
                await wait_members(node, [bob_p])  # FreeSWITCH's conference has bob alone
                assert await wait_until(lambda: alice_gone_bob_stays(watcher.model)), (
                    "the watcher never saw alice deleted while bob stayed"
                )
                assert not notified(bob, "audio-lost", "Alice's audio was lost")  # not a loss
            assert not watcher.errors, watcher.errors


# --- kill -9 of FreeSWITCH --------------------------------------------------------------------


async def join_three(ports: Ports, stack: contextlib.AsyncExitStack) -> list[ChatSession]:
    """alice with audio and chat, carol with audio only, bob with chat only."""
    sessions: list[ChatSession] = []
    for user, audio, chat in (("alice", True, True), ("carol", True, False), ("bob", False, True)):
        client = await stack.enter_async_context(ChatClient(user, user.title()))
        endpoint = RtpEndpoint("PCMU", 8000, 0, seed=len(sessions) + 1) if audio else None
        sessions.append(
            await client.join(ports, ROOM_USER, secure=False, audio=endpoint, chat=chat)
        )
    return sessions


async def test_kill_9_of_the_only_node_loses_the_audio_and_nothing_else(
    node: RealFreeSwitch, tmp_path: Path
) -> None:
    async with serving(tmp_path, node) as (server, ports), contextlib.AsyncExitStack() as stack:
        engine = engine_of(server)
        alice, carol, bob = await join_three(ports, stack)
        offers = take_reoffers(alice, audio_port=0)
        assert await wait_until(lambda: len(engine.participants(ROOM)) == 2, timeout=20)
        for user in ("alice", "carol"):
            await mapped(engine, participant_of(server, user))
        node.kill()  # no SHUTDOWN event, no BYE: the Event Socket just drops
        assert carol.session is not None
        assert await asyncio.wait_for(carol.session.terminated, 30) == "remote BYE"
        assert await wait_until(lambda: offers, timeout=30), "alice got no re-INVITE"
        (audio,) = [m for m in offers[0].media if m.media == "audio"]
        assert audio.port == 0, sdp.serialize(offers[0])
        assert [m.port != 0 for m in offers[0].media if m.media == "message"] == [True]
        lost = "Alice's audio was lost"
        assert await wait_until(lambda: notified(alice, "audio-lost", lost))
        assert await wait_until(lambda: notified(bob, "audio-lost", lost))
        assert engine.node_states()[node.name].failed
        assert engine.participants(ROOM) == []
        assert alice.session is not None and not alice.session.terminated.done()
        await alice.say("still here")  # chat is not the media node's: it goes on
        await bob.wait_text("still here")


@pytest.mark.parametrize("how", ["kill-9", "fsctl-shutdown"])
async def test_a_node_going_away_rehomes_the_room_on_the_other(
    node: RealFreeSwitch, freeswitch_bin: str, tmp_path: Path, how: str
) -> None:
    """kill -9 (the Event Socket drops) or ``fsctl shutdown`` (SHUTDOWN, then FreeSWITCH
    BYEs every leg: re-homed at once, none of those BYEs a lost leg)."""
    second = await RealFreeSwitch(freeswitch_bin, tmp_path / "fs-b").start()
    try:
        async with (
            serving(tmp_path, node, second) as (server, ports),
            contextlib.AsyncExitStack() as stack,
        ):
            engine = engine_of(server)
            alice, carol, bob = await join_three(ports, stack)
            moved = {s.client.user: take_reoffers(s) for s in (alice, carol)}
            assert await wait_until(lambda: len(engine.participants(ROOM)) == 2, timeout=20)
            legs = {user: participant_of(server, user) for user in ("alice", "carol")}
            for participant in legs.values():
                await mapped(engine, participant)
                leg = engine.leg(ROOM, participant)
                assert leg is not None and leg.node == node.name  # a room lives on one node
            if how == "kill-9":
                node.kill()
            else:
                assert await node.api("fsctl shutdown") == "+OK\n"  # mod_commands' reply
            for user, participant in legs.items():
                offers = moved[user]
                assert await wait_until(offers.__len__, timeout=30), f"{user} was not moved"
                (audio,) = [m for m in offers[0].media if m.media == "audio"]
                assert second.in_rtp_range(audio.port), (user, audio.port, second.rtp_start)
                leg = engine.leg(ROOM, participant)
                assert leg is not None and leg.node == second.name
                await mapped(engine, participant)  # FreeSWITCH b's add-member
            await wait_members(second, list(legs.values()))
            # The room's audio is mixed by the second node now: each hears the other.
            assert alice.audio is not None and carol.audio is not None
            start = (alice.audio.heard().size, carol.audio.heard().size)
            await asyncio.gather(alice.audio.play(700.0, 3.0), carol.audio.play(1300.0, 3.0))
            # From one second into the tones (jitter buffers settling), at 8 kHz.
            alice_heard = alice.audio.heard()[start[0] + 8000 :]
            carol_heard = carol.audio.heard()[start[1] + 8000 :]
            assert tone_power(carol_heard, 8000, 700.0) > HEARD, "carol does not hear alice"
            assert tone_power(alice_heard, 8000, 1300.0) > HEARD, "alice does not hear carol"
            assert steady_tone_power(alice_heard, 8000, 700.0) < ABSENT, "alice hears herself"
            assert not notified(bob, "audio-lost", "Alice's audio was lost")
            assert carol.session is not None and not carol.session.terminated.done()
    finally:
        await second.stop()
