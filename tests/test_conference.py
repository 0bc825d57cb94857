"""Conference rooms through a real `chorus serve`: SIP INVITE, embedded mixer, mix-minus.

Each participant is a SIP client (Chorus' own UA) plus an RTP endpoint that sends its own tone;
by FFT each must hear the other two tones and not its own. Codecs differ per leg; a variant
runs SRTP on every leg.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from control.media.tone import steady_tone_power, tone_power
from control.sip import sdp
from control.sip.session import Session
from tests.peers.chorus import ChorusProcess
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(120)

ALL_CODECS = ["G722", "PCMU", "PCMA", "speex", "opus", "telephone-event"]
HEARD = -30.0  # dB (full-scale sine = 0 dB): a tone clearly present (sent at about -10)
ABSENT = -55.0  # dB: nothing but codec and limiter noise
# Mix-minus, as bench/mixer_load.py judges it: a participant's own tone at least this far below
# the weakest other tone it hears.  A room that sends a talker its own voice puts the tone at
# the others' level (0 dB below), one leaking a tenth of it 20 dB below.
MIX_MINUS_MARGIN = 20.0  # dB
# ... and under this level whatever the others' level.  Not ABSENT: a leg's own band also holds
# its codec's noise around the tones it does hear.  Measured on the Opus leg (16 kHz in the room,
# decoded at 48 kHz), the 1100 Hz band reads -54 to -56 dB, and -54 to -55 dB when that leg
# sends silence (its tone is nowhere in the room); under load the G.722 leg's own band read
# -46 dB once.  A leaked own tone reads about -10.
NOT_HEARD_BACK = -40.0  # dB


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    # A long RTP timeout: on a busy two-core machine joining three legs can take seconds,
    # and no test on this server is about the timeout.
    with ChorusProcess({"rtp": {"codecs": ALL_CODECS, "timeout": 60.0}}) as process:
        yield process
        assert process.alive, process.log()


@pytest.fixture(scope="module")
def short_timeout() -> Iterator[ChorusProcess]:
    with ChorusProcess({"rtp": {"codecs": ALL_CODECS, "timeout": 2.5}}) as process:
        yield process
        assert process.alive, process.log()


class Participant:
    def __init__(self, endpoint: RtpEndpoint, client: SipClient) -> None:
        self.endpoint = endpoint
        self.client = client
        self.session: Session | None = None


async def join(
    chorus: ChorusProcess,
    room: str,
    endpoint: RtpEndpoint,
    transport: str = "udp",
    *,
    direction: sdp.Direction = sdp.Direction.SENDRECV,
) -> Participant:
    client = SipClient(transport)
    await client.__aenter__()
    await endpoint.open()
    participant = Participant(endpoint, client)
    offer = endpoint.offer(direction)
    session, response = await client.call(
        f"sip:{room}@127.0.0.1:{chorus.sip_port}", bytes(offer), chorus.sip_port
    )
    assert session is not None, f"{response.status} {response.reason}\n{chorus.log()[-2000:]}"
    endpoint.answered_sdp(sdp.parse(response.body))
    participant.session = session
    return participant


async def leave(participant: Participant) -> None:
    if participant.session is not None:
        await participant.session.bye()
    participant.endpoint.close()
    await participant.client.__aexit__(None, None, None)


LEGS = {
    "g711-g722-speexwb": [("PCMU", 8000, 0, None), ("G722", 8000, 9, None),
                          ("speex", 16000, 97, None)],
    "g711-g722-opus": [("PCMU", 8000, 0, None), ("G722", 8000, 9, None),
                       ("opus", 48000, 111, 2)],
}  # fmt: skip
TONES = [440.0, 700.0, 1100.0]
SETTLE = 15  # mixer frames (20 ms each) past the end of a tone: its tail has been mixed


async def mixed_past(*endpoints: RtpEndpoint, frames: int = SETTLE) -> bool:
    """Wait until the room has sent each endpoint ``frames`` more packets than it had so far.

    The room sends every listener a frame each tick, silence included, so this is the mixer
    having moved on past the audio just played, whatever the machine's load; not a timer.
    """
    counts = [len(e.packets()) for e in endpoints]
    return await wait_until(
        lambda: all(len(e.packets()) >= c + frames for e, c in zip(endpoints, counts, strict=True))
    )


@pytest.mark.parametrize(("legs", "srtp"), [
    ("g711-g722-speexwb", False),
    ("g711-g722-opus", False),
    ("g711-g722-speexwb", True),
])  # fmt: skip
async def test_three_participants_hear_each_other_not_themselves(
    chorus: ChorusProcess, legs: str, srtp: bool
) -> None:
    room = f"mix-{legs}-{'srtp' if srtp else 'rtp'}"
    endpoints = [
        RtpEndpoint(name, rate, pt, channels=channels, srtp=srtp, seed=index)
        for index, (name, rate, pt, channels) in enumerate(LEGS[legs])
    ]
    participants = [await join(chorus, room, endpoint) for endpoint in endpoints]
    try:
        if srtp:
            for p in participants:
                assert p.endpoint.answer is not None
                assert p.endpoint.answer.media[0].proto == "RTP/SAVP"
        await asyncio.gather(
            *(p.endpoint.play(tone, 2.5) for p, tone in zip(participants, TONES, strict=True))
        )
        assert await mixed_past(*(p.endpoint for p in participants)), "the room stopped sending"
        for participant, own in zip(participants, TONES, strict=True):
            pcm = participant.endpoint.heard(skip=0.6)
            rate = participant.endpoint.sample_rate
            assert len(pcm) > rate, "too little audio heard"
            others = {f: tone_power(pcm, rate, f) for f in TONES if f != own}
            for other, level in others.items():
                assert level > HEARD, f"{other} Hz missing"
            back, weakest = steady_tone_power(pcm, rate, own), min(others.values())
            why = f"{own} Hz heard back at {back:.1f} dB, the others at {weakest:.1f} dB and up"
            assert back < weakest - MIX_MINUS_MARGIN, why
            assert back < NOT_HEARD_BACK, why
    finally:
        for participant in participants:
            await leave(participant)


async def test_room_ends_with_last_participant_and_hold_resume(chorus: ChorusProcess) -> None:
    room = "lifecycle"
    first = await join(chorus, room, RtpEndpoint("PCMU", 8000, 0, seed=10))
    second = await join(chorus, room, RtpEndpoint("G722", 8000, 9, seed=11), transport="tcp")
    assert first.session is not None and second.session is not None
    # Hold: the second participant offers sendonly, the room answers recvonly and sends nothing.
    held_offer = second.endpoint.offer(sdp.Direction.SENDONLY)
    response = await second.session.reinvite(bytes(held_offer))
    assert response.status == 200
    held = sdp.parse(response.body)
    assert held.direction_of(held.media[0]) is sdp.Direction.RECVONLY
    # While held, the second still talks into the room: the first hears the tone.
    await asyncio.gather(second.endpoint.play(700.0, 1.5), first.endpoint.play(440.0, 1.5))
    assert await mixed_past(first.endpoint), "the room stopped sending"
    assert tone_power(first.endpoint.heard(skip=0.5), 8000, 700.0) > HEARD
    # The room sends every listener a frame per tick: while the first gets SETTLE more, the
    # held second must get none.
    before = len(second.endpoint.packets())
    assert await mixed_past(first.endpoint), "the room stopped sending"
    assert len(second.endpoint.packets()) == before, "the room sent audio to a held participant"
    # Resume.
    response = await second.session.reinvite(bytes(second.endpoint.offer()))
    assert response.status == 200
    resumed = sdp.parse(response.body)
    assert resumed.direction_of(resumed.media[0]) is sdp.Direction.SENDRECV
    await first.endpoint.play(440.0, 1.0)
    await wait_until(lambda: len(second.endpoint.packets()) > before + SETTLE)
    assert len(second.endpoint.packets()) > before + SETTLE, "no audio after resume"
    await leave(first)
    await leave(second)
    ended = f"room {room}@127.0.0.1 ended"
    await wait_until(lambda: ended in chorus.log())
    assert ended in chorus.log()


async def test_silent_participant_is_ended_at_rtp_timeout(short_timeout: ChorusProcess) -> None:
    """Only the leg that stops sending is ended.  The listener offers recvonly: it sends no
    RTP and so has no RTP timeout, which keeps the test independent of how promptly a loaded
    machine runs its senders; only "the BYE comes, eventually" is waited for."""
    chorus = short_timeout
    room = "timeout"
    listener = await join(
        chorus, room, RtpEndpoint("PCMU", 8000, 0, seed=20), direction=sdp.Direction.RECVONLY
    )
    silent = await join(chorus, room, RtpEndpoint("PCMA", 8000, 8, seed=21))
    assert silent.session is not None and listener.session is not None
    # The silent one sends one second of audio, then nothing; the timeout is 2.5 s.
    await silent.endpoint.play(700.0, 1.0)
    reason = await asyncio.wait_for(silent.session.terminated, 60)
    assert reason == "remote BYE"
    # The listener heard the tone while it lasted and is still in the room.
    assert tone_power(listener.endpoint.heard(skip=0.3), 8000, 700.0) > HEARD
    assert not listener.session.terminated.done()
    # The room ended exactly one participant of this room, and for its RTP timeout.
    timeouts = [
        line
        for line in chorus.log().splitlines()
        if "RTP timeout: ending" in line and f" in {room}@" in line
    ]
    assert len(timeouts) == 1, timeouts
    await leave(listener)
    silent.endpoint.close()
    await silent.client.__aexit__(None, None, None)


async def test_offer_without_common_codec_is_rejected(chorus: ChorusProcess) -> None:
    async with SipClient("udp") as client:
        offer = (
            b"v=0\r\no=t 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n"
        )
        session, response = await client.call(
            f"sip:nocodec@127.0.0.1:{chorus.sip_port}", offer, chorus.sip_port
        )
        assert session is None and response.status == 488
