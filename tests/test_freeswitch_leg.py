"""The engine's SIP leg against SIPp as the media node (rtp_echo), the Event Socket a fake.

`FreeSwitchEngine.attach` INVITEs the node with the participant's audio m-line and returns
the node's answer: the test's own UDP socket plays the participant and sends RTP to the
address in that answer — SIPp's, not Chorus's — and gets it echoed back, so media flows
participant ↔ node with Chorus out of the path. SDES keys pass end to end, hold/resume go
over as re-INVITEs, detach sends BYE, and a BYE from the node loses the participant's
audio (AudioLost); a re-INVITE the node answers 481 becomes a new leg.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from control.config import parse_config
from control.media.engine import (
    AudioEngineError,
    AudioEvent,
    AudioLost,
)
from control.media.freeswitch import FreeSwitchEngine, conference_name
from control.server import Server
from control.sip import sdp
from tests.peers import fsnode
from tests.peers.fsnode import (
    ALICE,
    KEY,
    ROOM,
    MediaNode,
    Participant,
    echoed,
    engine_for,
    offer,
    rtp,
)
from tests.peers.ports import free_ports

pytestmark = [pytest.mark.timeout(60), pytest.mark.peer("sipp")]

server = fsnode.server_fixture
node = fsnode.node_fixture
participant = fsnode.participant_fixture


def collect(engine: FreeSwitchEngine) -> tuple[list[AudioEvent], asyncio.Future[None]]:
    """The engine's events as they come, and the task reading them (cancel it at the end)."""
    events: list[AudioEvent] = []

    async def read() -> None:
        async for event in engine.events():
            events.append(event)

    return events, asyncio.ensure_future(read())


async def test_the_leg_carries_the_offer_and_rtp_flows_to_the_node(
    server: Server, node: MediaNode, participant: Participant
) -> None:
    engine = engine_for(server, node)
    try:
        answer = await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        # The answer is the node's: SIPp's media address and echo port, PCMU.
        assert (answer.address, answer.accept.port) == ("127.0.0.1", node.media_port)
        assert list(answer.accept.formats) == ["0"]
        (invite,) = await node.wait_received("INVITE")
        # Request-URI names the conference, From the participant; only the audio m-line,
        # with the participant's own address and port.
        assert invite.startswith(f"INVITE sip:{conference_name(ROOM)}@127.0.0.1:{node.sip_port}")
        assert f"<sip:{ALICE}@127.0.0.1>" in invite
        # The node's dialplan joins the conference named by X-Chorus-Room.
        assert f"\nX-Chorus-Room: {conference_name(ROOM)}\n" in invite
        assert f"\nX-Chorus-Participant: {ALICE}\n" in invite
        assert f"m=audio {participant.port} RTP/AVP 0 101" in invite
        assert "c=IN IP4 127.0.0.1" in invite
        # RTP goes to the node and comes back from it: Chorus is not in the path.
        assert await echoed(participant, answer.address, answer.accept.port) == rtp(1)
        await engine.detach(ROOM, ALICE)
        await node.wait_received("BYE")
    finally:
        await engine.close()


async def test_sdes_keys_pass_end_to_end(
    server: Server, node: MediaNode, participant: Participant
) -> None:
    engine = engine_for(server, node)
    try:
        answer = await engine.attach(ROOM, ALICE, offer(participant.port, srtp=True), 0)
        (invite,) = await node.wait_received("INVITE")
        assert f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}" in invite  # the participant's key
        assert answer.accept.proto == "RTP/SAVP"
        cryptos = [a.value for a in answer.accept.attributes if a.name == "crypto"]
        assert cryptos == [f"1 AES_CM_128_HMAC_SHA1_80 {KEY}"]  # the node's, untouched
        assert await echoed(participant, answer.address, answer.accept.port) == rtp(1)
    finally:
        await engine.close()


async def test_hold_and_resume_are_reinvites_of_the_leg(
    server: Server, node: MediaNode, participant: Participant
) -> None:
    engine = engine_for(server, node)
    try:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        held = await engine.update(ROOM, ALICE, offer(participant.port, direction="sendonly"), 0)
        assert held.accept.direction is sdp.Direction.RECVONLY
        resumed = await engine.update(ROOM, ALICE, offer(participant.port), 0)
        assert resumed.accept.direction is sdp.Direction.SENDRECV
        invites = await node.wait_received("INVITE", 3)
        assert "a=sendonly" in invites[1] and "a=sendrecv" in invites[2]
        assert await echoed(participant, resumed.address, resumed.accept.port) == rtp(1)
    finally:
        await engine.close()


async def test_a_codec_change_is_a_reinvite_of_the_leg(
    server: Server, node: MediaNode, participant: Participant
) -> None:
    engine = engine_for(server, node)
    try:
        first = await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        assert list(first.accept.formats) == ["0"]
        changed = await engine.update(ROOM, ALICE, offer(participant.port, codec=(8, "PCMA")), 0)
        assert list(changed.accept.formats) == ["8"]
        invites = await node.wait_received("INVITE", 2)
        assert f"m=audio {participant.port} RTP/AVP 8 101" in invites[1]
        assert "a=rtpmap:8 PCMA/8000" in invites[1]
    finally:
        await engine.close()


async def test_a_bye_from_the_node_loses_the_participants_audio(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    node = await MediaNode(tmp_path / "hangup", hangup_after_ms=1000).start()
    engine = engine_for(server, node)
    events, reader = collect(engine)
    try:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.05)
        (failed,) = events
        assert isinstance(failed, AudioLost) and failed.participant == ALICE
        assert "ended the audio leg" in failed.reason
    finally:
        reader.cancel()
        await engine.close()
        await node.stop()


async def test_a_node_that_refuses_is_a_503_for_the_participant(
    server: Server, participant: Participant
) -> None:
    (dead,) = free_ports(1)
    config = parse_config(
        {
            "audio": {"engine": "freeswitch"},
            "freeswitch": {
                "nodes": [{"sip": f"127.0.0.1:{dead}", "esl": f"127.0.0.1:{dead}", "password": "x"}]
            },
        }
    )
    engine = FreeSwitchEngine(server.ua, config.freeswitch.nodes, answer_timeout=1)
    try:
        with pytest.raises(AudioEngineError) as failed:
            await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        assert failed.value.status == 503
    finally:
        await engine.close()


async def test_a_reinvite_the_node_answers_481_becomes_a_new_leg(
    server: Server, tmp_path: Path, participant: Participant
) -> None:
    """The node lost the dialog (its profile restarted) while its Event Socket stayed up:
    the re-offer is carried by a new leg on the same node, the participant gets its answer,
    and RTP flows to the node again; nothing is lost."""
    node = await MediaNode(tmp_path / "forgets", forget_dialogs=True).start()
    engine = engine_for(server, node)
    events, reader = collect(engine)
    try:
        await engine.attach(ROOM, ALICE, offer(participant.port), 0)
        first = engine.leg(ROOM, ALICE)
        assert first is not None
        held = await engine.update(ROOM, ALICE, offer(participant.port, direction="sendonly"), 0)
        invites = await node.wait_received("INVITE", 3)
        # INVITE, its re-INVITE (481), then a new INVITE with the re-offer, on a new dialog.
        call_ids = [line for i in invites for line in i.splitlines() if line.startswith("Call-ID")]
        assert call_ids[0] == call_ids[1] != call_ids[2], call_ids
        assert "a=sendonly" in invites[1] and "a=sendonly" in invites[2]
        second = engine.leg(ROOM, ALICE)
        assert second is not None and second is not first and second.node == first.node
        assert second.session.dialog.call_id != first.session.dialog.call_id
        assert (held.address, held.accept.port) == ("127.0.0.1", node.media_port)  # new leg's
        assert await echoed(participant, held.address, held.accept.port) == rtp(1)
        await node.wait_received("BYE")  # the forgotten dialog was ended on our side too
        assert not [e for e in events if isinstance(e, AudioLost)]
    finally:
        reader.cancel()
        await engine.close()
        await node.stop()
