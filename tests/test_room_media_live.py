"""Re-INVITE in a room with chat (issue 8, "Must show"): audio+chat → chat only → audio+chat,
through a real `chorus serve`.

alice and bob both call with an RTP audio m-line and a chat m-line. After each of alice's
re-INVITEs the chat works both ways (the same MSRP session while its m-line is kept,
RFC 3264 §8.3.1 / RFC 4975 §8.4), and the mixing is checked by FFT as in
tests/test_conference.py: while alice has audio each hears the other's tone and not their
own; while she has none the room keeps sending bob his frames.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from control.media.tone import steady_tone_power, tone_power
from control.msrp.sdp import parse_msrp_media
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.chorus import ChorusProcess
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.test_conference import ABSENT, HEARD, mixed_past

pytestmark = pytest.mark.timeout(120)

ALICE_TONE, BOB_TONE = 440.0, 1100.0


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    with ChorusProcess({"rtp": {"timeout": 120.0}}) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def chat_both_ways(alice: ChatSession, bob: ChatSession, tag: str) -> None:
    assert await alice.status_of(await alice.say(f"{tag}: alice to bob")) == 200
    assert await bob.status_of(await bob.say(f"{tag}: bob to alice")) == 200
    got = await bob.wait_text(f"{tag}: alice to bob")
    assert got.sender_key == ("alice", "127.0.0.1")
    got = await alice.wait_text(f"{tag}: bob to alice")
    assert got.sender_key == ("bob", "127.0.0.1")


async def hear_each_other(alice: RtpEndpoint, bob: RtpEndpoint, tag: str) -> None:
    """Both talk at once; each must hear the other's tone and not its own (mix-minus).

    Only what each heard from now on is analysed (PCMU decodes without state, so decoding
    everything again and cutting is exact)."""
    marks = {id(e): e.heard().size for e in (alice, bob)}
    await asyncio.gather(alice.play(ALICE_TONE, 2.0), bob.play(BOB_TONE, 2.0))
    assert await mixed_past(alice, bob), f"{tag}: the room stopped sending"
    for endpoint, own, other in ((alice, ALICE_TONE, BOB_TONE), (bob, BOB_TONE, ALICE_TONE)):
        pcm = endpoint.heard()[marks[id(endpoint)] + int(0.6 * endpoint.sample_rate) :]
        assert len(pcm) > endpoint.sample_rate, f"{tag}: too little audio heard"
        level = tone_power(pcm, endpoint.sample_rate, other)
        assert level > HEARD, f"{tag}: {other} Hz missing ({level:.1f} dB)"
        assert steady_tone_power(pcm, endpoint.sample_rate, own) < ABSENT, (
            f"{tag}: {own} Hz heard back"
        )


async def test_audio_chat_then_chat_only_then_audio_chat(chorus: ChorusProcess) -> None:
    async with (
        ChatClient("alice", "Alice", sip_transport="tcp") as alice_client,
        ChatClient("bob", "Bob", sip_transport="udp") as bob_client,
    ):
        first_audio = RtpEndpoint("PCMU", 8000, 0, seed=1)
        alice = await alice_client.join(chorus, "remix", secure=True, audio=first_audio)
        bob_audio = RtpEndpoint("PCMU", 8000, 0, seed=2)
        bob = await bob_client.join(chorus, "remix", secure=False, audio=bob_audio)
        path = parse_msrp_media(alice.chat_line).path
        await hear_each_other(first_audio, bob_audio, "audio+chat")
        await chat_both_ways(alice, bob, "audio+chat")

        # Chat only: the audio m-line at port 0, the chat m-line unchanged.
        response = await alice.reinvite(audio=None, chat=True)
        assert response.status == 200
        assert alice.answer is not None
        assert alice.answer.media[0].port == 0, "audio still answered after port 0"
        assert alice.chat_line.port
        assert parse_msrp_media(alice.chat_line).path == path, "the chat session was replaced"
        await chat_both_ways(alice, bob, "chat only")
        assert await mixed_past(bob_audio), "bob's audio stopped when alice dropped hers"

        # Audio back, in the same m-line slot, with a fresh endpoint: the chat untouched.
        second_audio = RtpEndpoint("PCMU", 8000, 0, seed=3)
        response = await alice.reinvite(audio=second_audio, chat=True)
        assert response.status == 200
        assert alice.answer.media[0].port, "audio refused when added back"
        assert parse_msrp_media(alice.chat_line).path == path, "the chat session was replaced"
        await hear_each_other(second_audio, bob_audio, "audio+chat again")
        await chat_both_ways(alice, bob, "audio+chat again")
        assert not alice.failures and not bob.failures, (alice.failures, bob.failures)


async def test_one_offer_adds_chat_and_removes_audio_then_the_reverse(
    chorus: ChorusProcess,
) -> None:
    """bob calls with audio only; one re-INVITE drops his audio and adds chat, the next
    brings audio back and drops chat (issue 8: both changes in one offer, RFC 3264 §8)."""
    async with (
        ChatClient("alice", "Alice") as alice_client,
        ChatClient("bob", "Bob", sip_transport="tcp") as bob_client,
    ):
        alice_audio = RtpEndpoint("PCMU", 8000, 0, seed=4)
        alice = await alice_client.join(chorus, "swap", secure=True, audio=alice_audio)
        bob = await bob_client.join(
            chorus, "swap", audio=RtpEndpoint("PCMU", 8000, 0, seed=5), chat=False
        )
        assert bob.audio is not None
        await hear_each_other(alice_audio, bob.audio, "bob audio only")

        response = await bob.reinvite(audio=None, chat=True)
        assert response.status == 200
        assert bob.answer is not None
        assert [m.port != 0 for m in bob.answer.media] == [False, True], bob.answer.media
        await chat_both_ways(alice, bob, "bob chat only")
        removed = await alice.wait_for(lambda: alice.notices("media-removed"))
        assert removed, [d.text for d in alice.notices()]

        bob_audio = RtpEndpoint("PCMU", 8000, 0, seed=6)
        response = await bob.reinvite(audio=bob_audio, chat=False)
        assert response.status == 200, f"{response.status}\n{chorus.log()[-3000:]}"
        assert [m.port != 0 for m in bob.answer.media] == [True, False], bob.answer.media
        await hear_each_other(alice_audio, bob_audio, "bob audio again")
        assert await alice.status_of(await alice.say("nobody but bob's audio")) == 200
        assert not alice.failures, alice.failures
