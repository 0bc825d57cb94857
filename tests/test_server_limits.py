"""Limits and mixing set in the configuration, through a real ``chorus serve``.

- ``conference.max_rooms``: an INVITE that would open one room too many gets 503; once a room
  ends, a new one opens.
- ``conference.max_participants``: joining a full room gets 486; a place freed is taken again.
- ``sip.max_sessions`` (echo calls): one call too many gets 486.
- ``rtp.mixer_workers = 2``: rooms mixed in worker processes, two at once; in each, every
  participant hears the other by FFT, not itself and nothing from the other room.
- re-INVITE removing audio (the m-line at port 0) and adding it back: answered at port 0 and
  taken out of the mix (it neither hears nor is heard), then answered on a port and mixed again.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Iterator

import pytest

from control.conference.room import room_id_for
from control.media.mixworker import shard_of, split_range
from control.media.tone import steady_tone_power, tone_power
from control.sip import sdp
from control.sip.uri import SipUri
from tests.peers.chorus import ChorusProcess
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.sipclient import SipClient
from tests.peers.wait import wait_until
from tests.test_conference import (
    ABSENT,
    ALL_CODECS,
    HEARD,
    SETTLE,
    Participant,
    join,
    leave,
    mixed_past,
)

pytestmark = pytest.mark.timeout(180)

MAX_ROOMS = 2
MAX_PARTICIPANTS = 2


@pytest.fixture(scope="module")
def limited() -> Iterator[ChorusProcess]:
    overrides = {
        "conference": {"max_rooms": MAX_ROOMS, "max_participants": MAX_PARTICIPANTS},
        "sip": {"max_sessions": 1},
    }
    with ChorusProcess(overrides) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


async def try_join(chorus: ChorusProcess, room: str) -> tuple[Participant | None, int]:
    """Join ``room``; the participant (None when refused) and the final status."""
    client = SipClient("udp")
    await client.__aenter__()
    endpoint = RtpEndpoint("PCMU", 8000, 0)
    await endpoint.open()
    session, response = await client.call(
        f"sip:{room}@127.0.0.1:{chorus.sip_port}", bytes(endpoint.offer()), chorus.sip_port
    )
    if session is None:
        endpoint.close()
        await client.__aexit__(None, None, None)
        return None, response.status
    endpoint.answered_sdp(sdp.parse(response.body))
    participant = Participant(endpoint, client)
    participant.session = session
    return participant, response.status


async def room_ended(chorus: ChorusProcess, room: str) -> bool:
    ended = f"room {room}@127.0.0.1 ended"
    return await wait_until(lambda: ended in chorus.log())


async def test_max_rooms_gets_503_until_a_room_ends(limited: ChorusProcess) -> None:
    first, status = await try_join(limited, "limit-room-1")
    assert first is not None, status
    second, status = await try_join(limited, "limit-room-2")
    assert second is not None, status
    refused, status = await try_join(limited, "limit-room-3")
    assert refused is None and status == 503
    # Joining a room that exists is not opening one.
    again, status = await try_join(limited, "limit-room-1")
    assert again is not None, status
    for participant in (first, again):
        await leave(participant)
    assert await room_ended(limited, "limit-room-1")
    third, status = await try_join(limited, "limit-room-3")
    assert third is not None, status
    await leave(third)
    await leave(second)


async def test_max_participants_gets_486_until_one_leaves(limited: ChorusProcess) -> None:
    room = "limit-full"
    members = []
    for _ in range(MAX_PARTICIPANTS):
        participant, status = await try_join(limited, room)
        assert participant is not None, status
        members.append(participant)
    refused, status = await try_join(limited, room)
    assert refused is None and status == 486
    await leave(members.pop())
    log_line = "left limit-full@127.0.0.1 (1 in room)"
    assert await wait_until(lambda: log_line in limited.log())
    late, status = await try_join(limited, room)
    assert late is not None, status
    for participant in (*members, late):
        await leave(participant)


async def test_max_sessions_gets_486_for_one_echo_call_too_many(limited: ChorusProcess) -> None:
    first, status = await try_join(limited, "echo")
    assert first is not None, status
    refused, status = await try_join(limited, "echo")
    assert refused is None and status == 486
    await leave(first)
    # The place is free once echo has seen the BYE through.
    assert await wait_until(lambda: "ended: remote BYE" in limited.log())
    second, status = await try_join(limited, "echo")
    assert second is not None, status
    await leave(second)


# --- mixer_workers = 2 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sharded() -> Iterator[ChorusProcess]:
    with ChorusProcess({"rtp": {"codecs": ALL_CODECS, "mixer_workers": WORKERS}}) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log(), process.log()


ROOMS = {"shard-a": (440.0, 700.0), "shard-b": (1100.0, 1500.0)}
WORKERS = 2


def worker_ports(chorus: ChorusProcess, room: str) -> tuple[int, int]:
    """The RTP port slice of the worker that mixes ``room``."""
    config = tomllib.loads(chorus.config_path.read_text())
    low, high = (int(n) for n in config["rtp"]["port_range"].split("-"))
    shard = shard_of(room_id_for(SipUri("127.0.0.1", room)), WORKERS)
    return split_range(low, high, WORKERS)[shard]


async def test_two_rooms_mix_at_once_with_two_workers(sharded: ChorusProcess) -> None:
    legs = {
        room: [
            await join(sharded, room, RtpEndpoint(codec, 8000, pt, seed=index))
            for index, (codec, pt) in enumerate([("PCMU", 0), ("G722", 9)])
        ]
        for room in ROOMS
    }
    everyone = [p for members in legs.values() for p in members]
    try:
        # Each room is mixed by a worker of its own: their answers come from its port slice.
        slices = {room: worker_ports(sharded, room) for room in ROOMS}
        assert len(set(slices.values())) == WORKERS, slices
        for room, members in legs.items():
            low, high = slices[room]
            for participant in members:
                assert participant.endpoint.remote is not None
                assert low <= participant.endpoint.remote[1] <= high, (room, slices)
        await asyncio.gather(
            *(
                participant.endpoint.play(tone, 2.5)
                for room, members in legs.items()
                for participant, tone in zip(members, ROOMS[room], strict=True)
            )
        )
        assert await mixed_past(*(p.endpoint for p in everyone)), "a room stopped sending"
        all_tones = [tone for tones in ROOMS.values() for tone in tones]
        for room, members in legs.items():
            for participant, own in zip(members, ROOMS[room], strict=True):
                pcm = participant.endpoint.heard(skip=0.6)
                rate = participant.endpoint.sample_rate
                assert len(pcm) > rate, f"{room}: too little audio heard"
                (other,) = [tone for tone in ROOMS[room] if tone != own]
                assert tone_power(pcm, rate, other) > HEARD, f"{room}: {other} Hz missing"
                for tone in all_tones:
                    if tone != other:
                        assert steady_tone_power(pcm, rate, tone) < ABSENT, (
                            f"{room}: {tone} Hz heard"
                        )
    finally:
        for participant in everyone:
            await leave(participant)


# --- re-INVITE removing and adding audio -------------------------------------------------------


def without_audio(endpoint: RtpEndpoint) -> bytes:
    """The endpoint's offer with its audio m-line at port 0 (RFC 3264 §8.2: stream removed)."""
    offer = bytes(endpoint.offer())
    mline = f"m=audio {endpoint.port} ".encode()
    assert mline in offer
    return offer.replace(mline, b"m=audio 0 ")


async def test_reinvite_removes_and_adds_audio(limited: ChorusProcess) -> None:
    room = "reinvite-audio"
    talker, status = await try_join(limited, room)
    assert talker is not None, status
    listener, status = await try_join(limited, room)
    assert listener is not None, status
    assert talker.session is not None and listener.session is not None
    try:
        # Audio out: answered at port 0.
        response = await listener.session.reinvite(without_audio(listener.endpoint))
        assert response.status == 200
        removed = sdp.parse(response.body)
        assert removed.media[0].media == "audio" and removed.media[0].port == 0
        # Out of the mix both ways: while the talker gets SETTLE more frames, the listener
        # gets none; and what the listener still sends to its old port reaches no one.
        before = len(listener.endpoint.packets())
        await asyncio.gather(talker.endpoint.play(440.0, 1.5), listener.endpoint.play(700.0, 1.5))
        assert await mixed_past(talker.endpoint), "the room stopped sending"
        assert len(listener.endpoint.packets()) == before, "audio sent to a removed stream"
        heard = talker.endpoint.heard(skip=0.5)
        assert steady_tone_power(heard, 8000, 700.0) < ABSENT, "a removed stream was mixed"
        # Audio back: answered on a port, mixed again both ways.
        response = await listener.session.reinvite(bytes(listener.endpoint.offer()))
        assert response.status == 200
        restored = sdp.parse(response.body)
        assert restored.media[0].port != 0
        assert restored.direction_of(restored.media[0]) is sdp.Direction.SENDRECV
        listener.endpoint.answered_sdp(restored)
        heard_before = len(talker.endpoint.heard())
        await asyncio.gather(talker.endpoint.play(440.0, 2.0), listener.endpoint.play(700.0, 2.0))
        assert await mixed_past(talker.endpoint, listener.endpoint), "the room stopped sending"
        assert len(listener.endpoint.packets()) > before + SETTLE, "no audio after re-adding"
        back = talker.endpoint.heard()[heard_before:]
        assert tone_power(back[4000:], 8000, 700.0) > HEARD, "the re-added stream is not mixed"
        assert tone_power(listener.endpoint.heard(skip=0.5), 8000, 440.0) > HEARD
    finally:
        await leave(talker)
        await leave(listener)
