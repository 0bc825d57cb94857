"""A FreeSWITCH leg's SIP dialog dies while the node's Event Socket stays up (issue 11, faults).

A running server with ``[audio] engine = "freeswitch"``; the node is SIPp with the ESL FAKE
(tests/peers/eslfake.py) as its Event Socket, connected throughout. bob is in the room with
chat, alice joins with audio and chat; a while after answering, the node sends BYE on
alice's leg (as FreeSWITCH does on its RTP timeout or an operator's ``uuid_kill``) and no
kick-member event explains it. Chorus ends alice's audio cleanly: a notice to the room, a
re-INVITE to alice with the audio m-line at port 0 (RFC 3264 §8.2) — and her chat goes on:
what she says still reaches bob. (A dialog the node *lost* — a re-INVITE answered 481 — is
re-homed instead: tests/test_freeswitch_leg.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.server import Server
from control.sip import sdp
from tests import test_freeswitch_operator as operator_tests
from tests.peers.chatclient import ChatClient
from tests.peers.fsnode import MediaNode, take_reoffers
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until
from tests.test_freeswitch_operator import (
    ROOM,
    Ports,
    engine_of,
    in_conference,
    notified,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.peer("sipp")]

server = operator_tests.server  # a running server whose rooms this module's node mixes


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[MediaNode]:
    media = await MediaNode(tmp_path / "node", hangup_after_ms=3000).start()
    yield media
    await media.stop()


async def test_a_bye_from_the_node_ends_the_audio_alone_and_chat_goes_on(
    server: tuple[Server, Ports], node: MediaNode
) -> None:
    chorus, ports = server
    engine = engine_of(chorus)
    app = chorus.applications["conference"]
    async with ChatClient("alice", "Alice") as alice_c, ChatClient("bob", "Bob") as bob_c:
        bob = await bob_c.join(ports, "watched", secure=False)
        alice = await alice_c.join(
            ports, "watched", secure=False, audio=RtpEndpoint("PCMU", 8000, 0, seed=2)
        )
        session = alice.session
        assert session is not None
        offers = take_reoffers(alice, audio_port=0)  # alice's phone takes the room's re-offer
        participant, _ = await in_conference(engine, node)
        await node.wait_received("INVITE")
        assert await wait_until(lambda: offers, timeout=20), "no re-INVITE after the node's BYE"
        (reoffer,) = offers
        audio = [m for m in reoffer.media if m.media == "audio"]
        assert len(audio) == 1 and audio[0].port == 0, sdp.serialize(reoffer)
        assert [m.port != 0 for m in reoffer.media if m.media == "message"] == [True]
        assert await wait_until(lambda: notified(bob, "audio-lost", "Alice's audio was lost"))
        assert await wait_until(lambda: notified(alice, "audio-lost", "Alice's audio was lost"))
        assert engine.participants(ROOM) == []  # no leg left on the node
        shown = app.participant(ROOM, participant)  # type: ignore[attr-defined]
        assert shown is not None and not session.terminated.done()
        await alice.say("still here")
        await bob.wait_text("still here")
