"""The embedded mixer: offers answered, rooms mixed (mix-minus), on real loopback UDP.

Each audio test has participants send tones of their own frequencies; by spectrum
(`tone_power`) each must hear the others' tones and not its own.  Faults on one leg
(loss, reordering, SSRC change, garbage, silence) must not disturb the others.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest

from control.media.answer import answer_audio, supported_rtpmaps
from control.media.codecs import ulaw_encode
from control.media.engine import (
    AudioEngineError,
    AudioEvent,
    ParticipantId,
    RoomId,
    StreamTimedOut,
    TalkingStarted,
    TalkingStopped,
)
from control.media.mixer import EmbeddedMixer
from control.media.mixroom import MixCounters, MixRoom, limit
from control.media.mixworker import shard_of, split_range
from control.media.ports import PortAllocator
from control.media.rtp import RtpPacket
from control.media.srtp import SrtpPolicy
from control.media.stream import ParticipantStream
from control.media.tone import sine, steady_tone_power, tone_power
from control.sip import sdp
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until

ROOM = RoomId("room1")
CODECS = ("opus", "G722", "speex", "PCMU", "PCMA", "telephone-event")
HEARD = -30.0  # dB re full scale: a tone that is clearly there (they are sent at about -10)
ABSENT = -55.0  # dB: nothing but codec and limiter noise
LOSSY_ABSENT = -35.0  # dB: a leaked own tone would read about -10


def _allocator() -> PortAllocator:
    low = random.randrange(20000, 60000, 2)
    return PortAllocator(low, low + 400)


def make_mixer(seed: int, **options: Any) -> EmbeddedMixer:
    """A mixer on a random port range.  The RTP timeout is long unless a test sets one: a
    stall of a loaded machine must never end a leg in a test that is not about timeouts."""
    settings: dict[str, Any] = {"rtp_timeout": 60.0, "srtp": "optional", **options}
    return EmbeddedMixer(
        _allocator(), host="127.0.0.1", codecs=CODECS, rng=random.Random(seed), **settings
    )


@pytest.fixture
async def mixer() -> AsyncIterator[EmbeddedMixer]:
    engine = make_mixer(7)
    yield engine
    await engine.close()


def _peer(kind: str, *, srtp: bool = False, seed: int = 0) -> RtpEndpoint:
    table = {
        "PCMU": ("PCMU", 8000, 0, None),
        "PCMA": ("PCMA", 8000, 8, None),
        "G722": ("G722", 8000, 9, None),
        "speex": ("speex", 16000, 97, None),
        "opus": ("opus", 48000, 111, 2),
    }
    name, rate, pt, channels = table[kind]
    return RtpEndpoint(name, rate, pt, channels=channels, srtp=srtp, seed=seed)


async def _join(
    engine: EmbeddedMixer, peers: Sequence[RtpEndpoint], room: RoomId = ROOM
) -> list[ParticipantId]:
    ids = []
    for index, peer in enumerate(peers):
        await peer.open()
        offer = peer.offer()
        pid = ParticipantId(f"p{index}")
        answer = await engine.attach(room, pid, offer, 0)
        media = peer.answered(offer, answer)
        assert media.rtpmaps()[0].encoding == peer.rtpmap.encoding
        assert media.get("ptime") == "20"
        ids.append(pid)
    return ids


def _drain(engine: EmbeddedMixer) -> list[AudioEvent]:
    queue = engine._queue  # the events() iterator reads this queue; peek without blocking
    events = []
    while not queue.empty():
        events.append(queue.get_nowait())
    return events


SETTLE = 15  # mixer frames (20 ms each) past the end of a tone: its tail has been mixed


async def _mixed_past(*peers: RtpEndpoint, frames: int = SETTLE) -> bool:
    """Wait until the mixer has sent each peer ``frames`` more packets than so far.

    Every listener gets a frame each tick, silence included: this waits for the mixer to have
    moved on past the audio just played, however loaded the machine, instead of sleeping.
    """
    counts = [len(p.packets()) for p in peers]
    return await wait_until(
        lambda: all(len(p.packets()) >= c + frames for p, c in zip(peers, counts, strict=True))
    )


def _assert_hears(
    peer: RtpEndpoint, own: float, others: Sequence[float], *, absent: float = ABSENT
) -> None:
    pcm = peer.heard(skip=0.4)
    assert pcm.size > peer.sample_rate // 2, "too little audio came back"
    for freq in others:
        assert tone_power(pcm, peer.sample_rate, freq) > HEARD, f"{freq} Hz missing"
    assert steady_tone_power(pcm, peer.sample_rate, own) < absent, f"own {own} Hz heard back"


# Tones clear of each other's G.711 quantisation products: a pure tone through a companding
# 8 kHz codec has harmonics that fold back (the 13th of 700 Hz lands on 1100 Hz at about
# -55 dBFS, ABSENT itself, on either media path).  None of these lies within 140 Hz of
# another's harmonics (up to the 39th, folded at 8 kHz) or of their order-3 intermodulation.
FREQS = (890.0, 1340.0, 2000.0)


@pytest.mark.parametrize(
    ("kinds", "srtp"),
    [
        (("PCMU", "G722", "speex"), False),
        (("PCMU", "G722", "opus"), False),
        (("PCMA", "G722", "speex"), True),
    ],
    ids=["g711-g722-speex", "g711-g722-opus", "srtp"],
)
async def test_three_party_mix_minus(
    mixer: EmbeddedMixer, kinds: tuple[str, str, str], srtp: bool
) -> None:
    peers = [_peer(kind, srtp=srtp, seed=i) for i, kind in enumerate(kinds)]
    ids = await _join(mixer, peers)
    sent = await asyncio.gather(*(p.play(f, 2.0) for p, f in zip(peers, FREQS, strict=True)))
    assert await _mixed_past(*peers), "the mixer stopped sending"
    for index, peer in enumerate(peers):
        assert sent[index] > 0
        _assert_hears(peer, FREQS[index], [f for f in FREQS if f != FREQS[index]])
        sent_packets = peer.packets()
        assert len({p.ssrc for p in sent_packets}) == 1  # one SSRC per listener
    events = _drain(mixer)
    started = {e.participant for e in events if isinstance(e, TalkingStarted)}
    assert started == set(ids)
    assert not [e for e in events if isinstance(e, StreamTimedOut)]
    counters = await mixer.stats()
    # Every packet a listener got is a frame the mixer mixed, at most one per listener a tick.
    received = sum(len(p.packets()) for p in peers)
    assert 0 < received <= counters.frames_mixed <= len(peers) * counters.ticks
    for peer in peers:
        peer.close()


async def test_faults_on_one_leg_do_not_disturb_the_others(mixer: EmbeddedMixer) -> None:
    """Loss + reordering on one leg, an SSRC change on another, garbage at a third."""
    peers = [_peer("PCMU", seed=1), _peer("G722", seed=2), _peer("speex", seed=3)]
    ids = await _join(mixer, peers)
    target = peers[2].remote
    assert target is not None
    loop = asyncio.get_running_loop()
    junk, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    rng = random.Random(99)

    async def garbage() -> None:
        for i in range(60):
            junk.sendto(rng.randbytes(rng.randrange(0, 200)), target)
            # RTP-looking junk with the talker's payload type and a random SSRC
            fake = RtpPacket(97, rng.getrandbits(16), rng.getrandbits(32), rng.getrandbits(32))
            junk.sendto(fake.serialize() + rng.randbytes(40), target)
            if i % 10 == 0:
                junk.sendto(b"\x80\xc8" + bytes(30), target)  # RTCP-looking
            await asyncio.sleep(0.03)

    await asyncio.gather(
        peers[0].play(FREQS[0], 2.0, loss=0.10, reorder=0.10),
        peers[1].play(FREQS[1], 2.0, ssrc_change_at=1.0),
        peers[2].play(FREQS[2], 2.0),
        garbage(),
    )
    junk.close()
    assert await _mixed_past(*peers), "the mixer stopped sending"
    for index, peer in enumerate(peers):
        # Concealing 10% loss clicks: broadband splatter sits some 30 dB under the tones
        # everywhere, so "absent" here means far below them rather than near silence.
        others = [f for f in FREQS if f != FREQS[index]]
        _assert_hears(peer, FREQS[index], others, absent=LOSSY_ABSENT)
    # the mix went back to the real phone all along, never to the junk sender
    stream = mixer.stream(ROOM, ids[2])
    assert stream is not None and stream.latched == ("127.0.0.1", peers[2].port)
    assert stream.stats.garbage > 0 and stream.stats.rejected > 0
    changed = mixer.stream(ROOM, ids[1])
    assert changed is not None and changed._source.changes == 1
    for peer in peers:
        peer.close()


def test_silent_participant_times_out_once() -> None:
    """The RTP timeout on the mixer's own clock: fed packets and ticks at fake times, the
    participant who stops sending times out exactly once, exactly at the timeout, and the
    ones still talking never do (STYLE §6: a fake `now`, no wall clock)."""
    rng = random.Random(4)
    room = MixRoom(ROOM)
    streams = [_core_stream("PCMU", 7000 + 2 * i, rng) for i in range(3)]
    ids = [ParticipantId(f"p{i}") for i in range(3)]
    for pid, stream in zip(ids, streams, strict=True):
        room.add(pid, stream)
    tone = sine(440.0, 5.0, 8000, amplitude=0.3)
    counters = MixCounters()
    events: list[AudioEvent] = []
    timed_out_at: list[float] = []
    for k in range(200):  # 4 s of ticks; p2 stops after 0.3 s, the timeout is 1 s
        now = k * 0.02
        for i, stream in enumerate(streams):
            if i == 2 and now >= 0.3:
                continue
            packet = RtpPacket(0, k, k * 160, 2000 + i, ulaw_encode(tone[k * 160 : (k + 1) * 160]))
            stream.receive(packet.serialize(), ("127.0.0.1", 7000 + 2 * i), now)
        before = len(events)
        room.tick(now + 0.001, counters, events, [], rtp_timeout=1.0)
        if any(isinstance(e, StreamTimedOut) for e in events[before:]):
            timed_out_at.append(now)
    timeouts = [e for e in events if isinstance(e, StreamTimedOut)]
    assert timeouts == [StreamTimedOut(ROOM, ids[2])]
    # its last packet arrived at 0.28 s: the first tick at or past 1.28 s reports it
    assert timed_out_at == [pytest.approx(1.28)]
    assert TalkingStopped(ROOM, ids[2]) in events


async def test_mute_and_hold(mixer: EmbeddedMixer) -> None:
    """Muted: heard by nobody, still hears.  Their sendonly (hold): talks, hears nothing."""
    peers = [_peer("PCMU", seed=1), _peer("G722", seed=2), _peer("PCMA", seed=3)]
    ids = await _join(mixer, peers)
    await mixer.set_muted(ROOM, ids[0], True)
    hold_offer = peers[2].offer(sdp.Direction.SENDONLY)
    answer = await mixer.update(ROOM, ids[2], hold_offer, 0)
    assert peers[2].answered(hold_offer, answer).direction is sdp.Direction.RECVONLY
    # A tick may have reached the holder before the hold: let those frames land first.
    assert await _mixed_past(peers[0], frames=2), "the mixer stopped sending"
    held_before = len(peers[2].packets())
    await asyncio.gather(*(p.play(f, 2.0) for p, f in zip(peers, FREQS, strict=True)))
    # While the mixer sends the two listening peers SETTLE more frames, the holder gets none.
    assert await _mixed_past(peers[0], peers[1]), "the mixer stopped sending"
    _assert_hears(peers[0], FREQS[0], FREQS[1:])  # muted still hears everyone
    pcm = peers[1].heard(skip=0.4)
    assert tone_power(pcm, 16000, FREQS[2]) > HEARD  # the holder still talks
    assert steady_tone_power(pcm, 16000, FREQS[0]) < ABSENT  # the muted one is not mixed
    assert len(peers[2].packets()) == held_before  # on hold: we send them nothing
    started = {e.participant for e in _drain(mixer) if isinstance(e, TalkingStarted)}
    assert started == {ids[1], ids[2]}
    for peer in peers:
        peer.close()


async def test_sharded_workers() -> None:
    engine = make_mixer(3, workers=2)
    try:
        peers = [_peer("PCMU", seed=1), _peer("G722", seed=2), _peer("PCMA", seed=3)]
        ids = await _join(engine, peers)
        await asyncio.gather(*(p.play(f, 1.5) for p, f in zip(peers, FREQS, strict=True)))
        assert await _mixed_past(*peers), "the mixer stopped sending"
        for index, peer in enumerate(peers):
            _assert_hears(peer, FREQS[index], [f for f in FREQS if f != FREQS[index]])
        events: list[AudioEvent] = []
        iterator = engine.events()
        while len({e.participant for e in events if isinstance(e, TalkingStarted)}) < 3:
            events.append(await asyncio.wait_for(anext(iterator), 5.0))
        await engine.set_muted(ROOM, ids[0], True)
        counters = await engine.stats()
        assert counters.ticks > 0 and counters.frames_mixed > 0
        with pytest.raises(AudioEngineError) as info:
            await engine.attach(ROOM, ParticipantId("x"), _offer("RTP/AVP", ["18"]), 0)
        assert info.value.status == 488
        await engine.detach(ROOM, ids[2])
        for peer in peers:
            peer.close()
    finally:
        await engine.close()


async def test_rooms_go_to_the_least_loaded_worker_whatever_their_hash() -> None:
    # Two rooms whose ids hash to the same worker: by hash alone both would be mixed by
    # one process (the benchmark's rooms of 50 were).  The second room goes to the other
    # worker, which the answers' ports show (each worker owns a slice of the port range).
    allocator = _allocator()
    engine = EmbeddedMixer(
        allocator,
        host="127.0.0.1",
        codecs=CODECS,
        rng=random.Random(5),
        rtp_timeout=60.0,
        srtp="optional",
        workers=2,
    )
    names = [RoomId(f"big{i}") for i in range(40)]
    first = names[0]
    twin = next(n for n in names[1:] if shard_of(n, 2) == shard_of(first, 2))
    slices = split_range(allocator.low, allocator.high, 2)
    peers: list[RtpEndpoint] = []
    try:
        worker_of: dict[RoomId, set[int]] = {}
        for room in (first, twin, first, twin):
            peer = _peer("PCMU", seed=len(peers))
            peers.append(peer)
            await peer.open()
            answer = await engine.attach(room, ParticipantId(f"p{len(peers)}"), peer.offer(), 0)
            port = answer.accept.port
            worker_of.setdefault(room, set()).update(
                i for i, (low, high) in enumerate(slices) if low <= port <= high
            )
        assert worker_of[first] != worker_of[twin]
        assert all(len(found) == 1 for found in worker_of.values())  # a room stays put
        for index in (1, 3):  # the whole first room leaves: it is forgotten
            await engine.detach(first, ParticipantId(f"p{index}"))
        pool = engine._pool
        assert pool is not None and first not in pool._placed and twin in pool._placed
    finally:
        for peer in peers:
            peer.close()
        await engine.close()


# --- offers that must be refused, without binding a port ------------------------------


def _offer(proto: str, formats: list[str], *, crypto: bool = False) -> sdp.SessionDescription:
    attrs = [sdp.Attribute("rtpmap", "0 PCMU/8000")] if "0" in formats else []
    if crypto:
        attrs.append(sdp.Attribute("crypto", "1 AES_CM_128_HMAC_SHA1_80 inline:" + "QUFB" * 10))
    media = sdp.MediaDescription("audio", 4000, None, proto, formats, attributes=attrs)
    return sdp.SessionDescription(
        origin=sdp.Origin("-", "1", 1, "IN", "IP4", "127.0.0.1"),
        connection=sdp.Connection.for_address("127.0.0.1"),
        media=[media],
    )


@pytest.mark.parametrize(
    ("policy", "offer"),
    [
        ("mandatory", _offer("RTP/AVP", ["0"])),
        ("disabled", _offer("RTP/SAVP", ["0"], crypto=True)),
        ("optional", _offer("RTP/SAVP", ["0"])),  # SAVP with no usable key
        ("optional", _offer("RTP/AVP", ["18"])),  # no common codec
    ],
)
async def test_refused_offers(policy: str, offer: sdp.SessionDescription) -> None:
    ports = _allocator()
    engine = EmbeddedMixer(
        ports, host="127.0.0.1", codecs=CODECS, rtp_timeout=1.0, srtp=policy, rng=random.Random()
    )
    with pytest.raises(AudioEngineError) as info:
        await engine.attach(ROOM, ParticipantId("a"), offer, 0)
    assert info.value.status == 488
    assert ports.in_use() == 0
    await engine.close()


async def test_answers_srtp_with_our_own_key(mixer: EmbeddedMixer) -> None:
    offer = _offer("RTP/SAVP", ["0"], crypto=True)
    answer = await mixer.attach(ROOM, ParticipantId("a"), offer, 0)
    attrs = {a.name: a.value for a in answer.accept.attributes}
    tag, suite, key = (attrs["crypto"] or "").split()
    assert (tag, suite) == ("1", "AES_CM_128_HMAC_SHA1_80")
    assert key != "inline:" + "QUFB" * 10
    assert attrs["rtcp"] == str(answer.accept.port + 1)
    # a re-offer with the same key keeps ours: no re-key mid-call (RFC 4568 §7.1.4)
    again = await mixer.update(ROOM, ParticipantId("a"), offer, 0)
    assert {a.name: a.value for a in again.accept.attributes}["crypto"] == attrs["crypto"]
    await mixer.detach(ROOM, ParticipantId("a"))


# --- the sans-IO core: encode sharing and the limiter -----------------------------------


def _core_stream(kind: str, port: int, rng: random.Random) -> ParticipantStream:
    peer = _peer(kind)
    peer.port = port
    terms = answer_audio(
        peer.offer(),
        0,
        supported=supported_rtpmaps(CODECS),
        srtp=SrtpPolicy.OPTIONAL,
        randbytes=rng.randbytes,
    )
    return ParticipantStream(terms, rng=rng, now=0.0)


@pytest.mark.parametrize("share", [True, False])
def test_silent_listeners_share_one_encode(share: bool) -> None:
    """One talker, nine silent PCMU listeners: 2 encodes a tick shared, 10 without."""
    rng = random.Random(1)
    room = MixRoom(ROOM, share_encoding=share)
    streams = [_core_stream("PCMU", 5000 + 2 * i, rng) for i in range(10)]
    for i, stream in enumerate(streams):
        room.add(ParticipantId(f"p{i}"), stream)
    tone = sine(440.0, 1.0, 8000, amplitude=0.3)
    quiet = np.zeros(160, dtype=np.int16)
    counters = MixCounters()
    events: list[AudioEvent] = []
    for k in range(50):
        now = k * 0.02
        for i, stream in enumerate(streams):
            pcm = tone[k * 160 : (k + 1) * 160] if i == 0 else quiet
            packet = RtpPacket(0, k, k * 160, 1000 + i, ulaw_encode(pcm))
            stream.receive(packet.serialize(), ("127.0.0.1", 5000 + 2 * i), now)
        before = counters.encodes
        out: list[tuple[ParticipantId, bytes, tuple[str, int]]] = []
        room.tick(now + 0.001, counters, events, out, rtp_timeout=10.0)
        if k == 49:
            assert len(out) == 10
            assert counters.encodes - before == (2 if share else 10)
            # every listener gets its own SSRC, whoever encoded the payload
            assert len({RtpPacket.parse(d).ssrc for _, d, _ in out}) == 10
            silent = {RtpPacket.parse(d).payload for pid, d, _ in out if pid != "p0"}
            assert len(silent) == 1
    assert events == [TalkingStarted(ROOM, ParticipantId("p0"))]


def test_limiter_never_wraps() -> None:
    loud = np.array([0, 1000, 24000, 40000, 90000, -40000, -200000], dtype=np.int32)
    out = limit(loud)
    assert out.dtype == np.int16
    assert list(np.sign(out)) == list(np.sign(loud))
    assert list(out[:3]) == [0, 1000, 24000]  # transparent below the knee
    assert 24576 < out[3] < out[4] <= 32767 and out[6] <= out[5] < -24576
