"""A baresip participant joins a room of a running server with ``[audio] engine =
"freeswitch"``: the nodes are SIPp (answers and echoes RTP) with the ESL fake as their Event
Socket. Chorus INVITEs the node with baresip's offer and splices the node's answer into
baresip's, so baresip's RTP goes to SIPp and comes back from it — baresip hears its own tone
— while Chorus's RTP ports see nothing. The same with SDES-SRTP (baresip's key reaches the
node, the node's key reaches baresip). BYE on either side ends the other; an operator's kick
on the node's Event Socket ends baresip's call through the conference.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from control.media.engine import RoomId
from control.media.freeswitch import FreeSwitchEngine, conference_name
from control.media.tone import dominant_frequencies, sine
from control.server import Server
from tests.peers.baresip import BaresipError, BaresipProcess, write_wav
from tests.peers.eslfake import operator
from tests.peers.fsnode import PASSWORD, MediaNode, running_server
from tests.peers.siptrace import call_messages, invite_answer

pytestmark = [pytest.mark.timeout(90), pytest.mark.peer("sipp", "baresip")]

ROOM = RoomId("room1@127.0.0.1")
TONE = 880.0


@contextlib.asynccontextmanager
async def chorus(
    tmp_path: Path, *nodes: MediaNode, failover_after: float = 5.0
) -> AsyncIterator[tuple[Server, int]]:
    configs = [n.config for n in nodes]
    async with running_server(
        tmp_path, configs, health_interval=1, failover_after=failover_after
    ) as running:
        yield running


def engine_of(server: Server) -> FreeSwitchEngine:
    engine = server.applications["conference"].engine  # type: ignore[attr-defined]
    assert isinstance(engine, FreeSwitchEngine)
    return engine


def phone(tmp_path: Path, mediaenc: str | None = None, seconds: float = 4.0) -> BaresipProcess:
    wav = write_wav(tmp_path / "tone.wav", sine(TONE, seconds, 8000, 0.4), 8000)
    return BaresipProcess(wav, codec="PCMU/8000/1", mediaenc=mediaenc)


async def wait(ua: BaresipProcess, event: str, timeout: float = 15) -> dict[str, object]:
    try:
        found: dict[str, object] = await asyncio.to_thread(ua.wait_event, event, timeout)
    except BaresipError as exc:
        raise AssertionError(f"baresip: no {event}: {exc}\n{ua.log()}") from None
    return found


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[MediaNode]:
    media = await MediaNode(tmp_path / "node").start()
    yield media
    await media.stop()


@pytest.mark.parametrize("mediaenc", [None, "srtp-mand"], ids=["rtp", "srtp"])
async def test_baresip_hears_its_tone_echoed_by_the_media_node(
    tmp_path: Path, node: MediaNode, mediaenc: str | None
) -> None:
    ua = phone(tmp_path, mediaenc)
    async with chorus(tmp_path, node) as (server, port):
        await asyncio.to_thread(ua.start)
        try:
            await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
            established = await wait(ua, "CALL_ESTABLISHED")
            closed = await wait(ua, "CALL_CLOSED", 20)  # aufile ends the call at the WAV's end
            assert "end of file" in str(closed.get("param")), closed
            await node.wait_received("BYE")  # baresip's BYE ended the leg too
        finally:
            await asyncio.to_thread(ua.stop)
        assert server.ports.in_use() == 0  # no RTP port of Chorus's was ever taken
    (invite,) = node.received("INVITE")
    trace = (tmp_path / "sip").read_text(errors="replace")
    answer = invite_answer(call_messages(trace, str(established["id"])))
    # baresip's answer carries the node's media address and port, its profile and its key.
    assert f"m=audio {node.media_port} " in answer.body, answer.body
    assert "c=IN IP4 127.0.0.1" in answer.body
    offered = next(m for m in call_messages(trace, str(established["id"])) if m.method == "INVITE")
    baresip_m = next(line for line in offered.body.splitlines() if line.startswith("m=audio"))
    assert baresip_m.split()[1] in invite.split("m=audio ", 1)[1].split()[0]
    if mediaenc:
        key = next(line for line in offered.body.splitlines() if line.startswith("a=crypto:"))
        assert key in invite  # baresip's own key went to the node
        assert "RTP/SAVP" in answer.body and key.strip() in answer.body  # the node's came back
    heard = ua.recordings("dec")
    assert heard, ua.log()
    samples = heard[0].samples[1600:]
    assert len(samples) > 8000 and np.abs(samples).max() > 2000, "baresip heard silence"
    (peak,) = dominant_frequencies(samples, 8000, 1)
    assert round(peak) == round(TONE), peak


async def test_a_bye_from_the_node_ends_baresips_call(tmp_path: Path) -> None:
    node = await MediaNode(tmp_path / "node", hangup_after_ms=1500).start()
    ua = phone(tmp_path, seconds=20)
    try:
        async with chorus(tmp_path, node) as (_, port):
            await asyncio.to_thread(ua.start)
            try:
                await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
                await wait(ua, "CALL_ESTABLISHED")
                closed = await wait(ua, "CALL_CLOSED", 15)
                assert "end of file" not in str(closed.get("param")), closed
            finally:
                await asyncio.to_thread(ua.stop)
    finally:
        await node.stop()


async def test_an_operators_kick_ends_baresips_call(tmp_path: Path, node: MediaNode) -> None:
    ua = phone(tmp_path, seconds=20)
    assert node.fake is not None
    async with chorus(tmp_path, node) as (server, port):
        await asyncio.to_thread(ua.start)
        try:
            await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
            await wait(ua, "CALL_ESTABLISHED")
            engine = engine_of(server)
            (participant,) = engine.participants(ROOM)
            # FreeSWITCH's dialplan puts the leg into the room's conference.
            member = node.fake.join(conference_name(ROOM), participant)
            for _ in range(200):
                if engine.member_id(ROOM, participant) == member:
                    break
                await asyncio.sleep(0.05)
            name = conference_name(ROOM)
            reply = await operator(
                "127.0.0.1", node.esl_port, PASSWORD, f"conference {name} kick {member}"
            )
            assert reply == f"OK kicked {member}\n"
            closed = await wait(ua, "CALL_CLOSED", 15)
            assert "end of file" not in str(closed.get("param")), closed
            await node.wait_received("BYE")
        finally:
            await asyncio.to_thread(ua.stop)


async def test_hold_and_resume_reach_the_node_and_audio_comes_back(
    tmp_path: Path, node: MediaNode
) -> None:
    ua = phone(tmp_path, seconds=8)
    async with chorus(tmp_path, node) as (_, port):
        await asyncio.to_thread(ua.start)
        try:
            await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
            await wait(ua, "CALL_ESTABLISHED")
            await asyncio.sleep(1.0)
            held = await asyncio.to_thread(ua.command, "hold")
            assert held.get("ok", True), held
            invites = await node.wait_received("INVITE", 2)
            assert "a=sendonly" in invites[1] or "a=inactive" in invites[1], invites[1]
            await asyncio.sleep(1.0)
            resumed = await asyncio.to_thread(ua.command, "resume")
            assert resumed.get("ok", True), resumed
            invites = await node.wait_received("INVITE", 3)
            assert "a=sendrecv" in invites[2], invites[2]
            await wait(ua, "CALL_CLOSED", 20)
        finally:
            await asyncio.to_thread(ua.stop)
    heard = ua.recordings("dec")
    assert heard, ua.log()
    tail = heard[0].samples[-8000:]  # the last second, well after the resume
    assert np.abs(tail).max() > 2000, "no audio after resume"
    (peak,) = dominant_frequencies(tail, 8000, 1)
    assert round(peak) == round(TONE), peak


async def test_kill_9_of_the_only_node_ends_the_call_cleanly_and_chorus_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node = await MediaNode(tmp_path / "node", esl_in_process=False).start()
    ua = phone(tmp_path, seconds=30)
    try:
        # A grace of one health interval (not the default 5 s): the node is still unfit first
        # and failed after, the same path, 4 s sooner.
        async with chorus(tmp_path, node, failover_after=1.0) as (server, port):
            await asyncio.to_thread(ua.start)
            try:
                await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
                await wait(ua, "CALL_ESTABLISHED")
                node.kill()  # SIPp and its Event Socket, kill -9
                # The call ends: Chorus's BYE once the node counts as failed, or baresip's
                # own when its RTP to the dead node is refused (ICMP), whichever is first.
                closed = await wait(ua, "CALL_CLOSED", 20)
                assert "end of file" not in str(closed.get("param")), closed
                engine = engine_of(server)
                for _ in range(200):
                    if engine.node_states()[node.name].failed:
                        break
                    await asyncio.sleep(0.05)
                assert engine.node_states()[node.name].failed
                assert engine.participants(ROOM) == []
                # Chorus is still up: the next join is answered, 503 as no node is left.
                seen = len(ua.events)
                await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
                refused = await asyncio.to_thread(ua.wait_event, "CALL_CLOSED", 30, start=seen)
                assert "503" in str(refused.get("param")), refused
            finally:
                await asyncio.to_thread(ua.stop)
    finally:
        await node.stop()
    assert "failed: re-homing 1 room(s)" in caplog.text


async def test_kill_9_of_a_node_rehomes_the_room_and_baresip_hears_the_other_node(
    tmp_path: Path,
) -> None:
    first = await MediaNode(tmp_path / "a", esl_in_process=False).start()
    second = await MediaNode(tmp_path / "b").start()
    ua = phone(tmp_path, seconds=12)
    try:
        async with chorus(tmp_path, first, second, failover_after=0.0) as (server, port):
            await asyncio.to_thread(ua.start)
            try:
                await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
                await wait(ua, "CALL_ESTABLISHED")
                engine = engine_of(server)
                (participant,) = engine.participants(ROOM)
                leg = engine.leg(ROOM, participant)
                assert leg is not None and leg.node == first.name
                await asyncio.sleep(1.0)
                first.kill()  # SIPp and its Event Socket, kill -9
                (invite,) = await second.wait_received("INVITE", 1, timeout=15)
                for _ in range(200):
                    leg = engine.leg(ROOM, participant)
                    if leg is not None and leg.node == second.name:
                        break
                    await asyncio.sleep(0.05)
                assert leg is not None and leg.node == second.name
                closed = await wait(ua, "CALL_CLOSED", 30)
                assert "end of file" in str(closed.get("param")), (closed, ua.log())
            finally:
                await asyncio.to_thread(ua.stop)
    finally:
        await first.stop()
        await second.stop()
    heard = ua.recordings("dec")
    assert heard, ua.log()
    tail = heard[0].samples[-16000:]  # the last two seconds: from the second node
    assert np.abs(tail).max() > 2000, "no audio after the move"
    (peak,) = dominant_frequencies(tail, 8000, 1)
    assert round(peak) == round(TONE), peak


async def test_an_operators_mute_shows_the_participant_muted(
    tmp_path: Path, node: MediaNode
) -> None:
    ua = phone(tmp_path, seconds=20)
    assert node.fake is not None
    async with chorus(tmp_path, node) as (server, port):
        await asyncio.to_thread(ua.start)
        try:
            await asyncio.to_thread(ua.dial, f"sip:room1@127.0.0.1:{port}")
            await wait(ua, "CALL_ESTABLISHED")
            engine = engine_of(server)
            (participant,) = engine.participants(ROOM)
            member = node.fake.join(conference_name(ROOM), participant)
            for _ in range(200):
                if engine.member_id(ROOM, participant) == member:
                    break
                await asyncio.sleep(0.05)
            conference = server.applications["conference"]
            shown = conference.participant(ROOM, participant)  # type: ignore[attr-defined]
            assert shown is not None and not shown.muted
            mute = f"conference {conference_name(ROOM)} mute {member}"
            assert (
                await operator("127.0.0.1", node.esl_port, PASSWORD, mute) == f"OK mute {member}\n"
            )
            for _ in range(200):
                if shown.muted:
                    break
                await asyncio.sleep(0.05)
            assert shown.muted
            unmute = f"conference {conference_name(ROOM)} unmute {member}"
            await operator("127.0.0.1", node.esl_port, PASSWORD, unmute)
            for _ in range(200):
                if not shown.muted:
                    break
                await asyncio.sleep(0.05)
            assert not shown.muted
        finally:
            await asyncio.to_thread(ua.stop)
