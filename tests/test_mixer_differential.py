"""The fast mixing path against the reference, fed the same packets (issue 14).

`MixRoom(fast=False, narrowband=False)` is the reference: one listener at a time, the
mix-minus `limit(total - own)` per talker, every room mixed at 16 kHz.  The fast path
(the default) mixes all talkers' mix-minus as one matrix, encodes G.711 for all its
listeners with one table lookup, and mixes rooms whose every codec is 8 kHz at 8 kHz.

The native media loop (control/media/native: RTP parsed and frames levelled in C) is
checked the same way against the Python stream and room: the same octets, tick for tick.

At the same mixing rate the two must put the same octets on the wire, tick for tick
(same SSRCs, keys and sequence numbers from the same seeded random source), whatever the
codecs, levels (the limiter engaged), mutes and silent listeners.  Against the 16 kHz
reference an 8 kHz G.711 room cannot be sample-identical (two resampling filters fewer:
their group delay and ripple are gone), so there every listener's decoded mix must hold
the same tones at the same level within the codec's tolerance, and not its own.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from control.media import native
from control.media.answer import answer_audio, supported_rtpmaps
from control.media.codecs import codec_for
from control.media.engine import ParticipantId, RoomId
from control.media.mixroom import MixCounters, MixRoom, Outgoing, limit, limit_rows
from control.media.rtp import RtpPacket, RtpSender
from control.media.srtp import SrtpPolicy
from control.media.stream import PYTHON_KIT, MediaKit, ParticipantStream
from control.media.tone import sine, tone_power
from control.sip import sdp

CODECS = {
    "PCMA": ("PCMA", 8000, 8, None, 160),
    "PCMU": ("PCMU", 8000, 0, None, 160),
    "G722": ("G722", 8000, 9, None, 160),
    "opus": ("opus", 48000, 111, 2, 960),
    "speex-nb": ("speex", 8000, 97, None, 160),
}
TONES = (410.0, 630.0, 970.0, 1330.0, 1790.0, 2210.0)
SUPPORTED = supported_rtpmaps(("opus", "G722", "speex", "PCMU", "PCMA", "telephone-event"))
TICKS = 60


def _offer(codec: str, port: int) -> sdp.SessionDescription:
    name, rate, pt, channels, _step = CODECS[codec]
    media = sdp.audio_media(port, [sdp.RtpMap(pt, name, rate, channels)], ptime=20)
    return sdp.build_offer(
        origin=sdp.Origin("-", "1", 1, "IN", "IP4", "127.0.0.1"),
        connection=sdp.Connection.for_address("127.0.0.1"),
        media=[media],
    )


def _packets(codec: str, freq: float, amplitude: float, ssrc: int) -> list[bytes]:
    """TICKS datagrams of a tone, encoded with the codec (0 amplitude: a silent phone)."""
    name, rate, pt, channels, step = CODECS[codec]
    factory = codec_for(name, rate, channels or 1)
    assert factory is not None
    enc = factory()
    n = enc.frame_samples(20)
    pcm = sine(freq, TICKS * 0.02, enc.sample_rate, amplitude=amplitude)
    return [
        RtpPacket(pt, k, 1000 + k * step, ssrc, enc.encode(pcm[k * n : (k + 1) * n])).serialize()
        for k in range(TICKS)
    ]


Member = tuple[str, float]  # codec, amplitude (0: silent)


def _run(
    members: list[Member],
    room: MixRoom,
    muted: tuple[int, ...] = (),
    *,
    kit: MediaKit = PYTHON_KIT,
) -> list[list[bytes]]:
    """Feed every member's tone; per member, the datagrams it was sent, tick by tick."""
    rng = random.Random(7)
    streams = []
    feeds = []
    for i, (codec, amplitude) in enumerate(members):
        terms = answer_audio(
            _offer(codec, 20000 + 2 * i),
            0,
            supported=SUPPORTED,
            srtp=SrtpPolicy.OPTIONAL,
            randbytes=rng.randbytes,
        )
        stream = ParticipantStream(terms, rng=rng, now=0.0, kit=kit)
        room.add(ParticipantId(f"p{i}"), stream)
        streams.append(stream)
        feeds.append(_packets(codec, TONES[i % len(TONES)], amplitude, 0x1000 + i))
    for i in muted:
        room.set_muted(ParticipantId(f"p{i}"), True)
    sent: list[list[bytes]] = [[] for _ in members]
    counters = MixCounters()
    out: list[Outgoing] = []
    for k in range(TICKS):
        now = k * 0.02
        for i, stream in enumerate(streams):
            stream.receive(feeds[i][k], ("127.0.0.1", 20000 + 2 * i), now)
        out.clear()
        room.tick(now + 0.001, counters, [], out, rtp_timeout=60.0)
        for pid, data, _dest in out:
            sent[int(pid[1:])].append(data)
    assert counters.listener_errors == 0
    return sent


def _rooms(rate: int = 16000) -> tuple[MixRoom, MixRoom]:
    reference = MixRoom(RoomId("ref"), internal_rate=rate, fast=False, narrowband=False)
    fast = MixRoom(RoomId("fast"), internal_rate=rate, narrowband=False)
    return reference, fast


LOUD = 0.45  # five of these sum above the limiter's knee
ROOMS: dict[str, list[Member]] = {
    "G.711 A-law, all talking": [("PCMA", 0.2)] * 5,
    "G.711 A-law, all talking, limiter engaged": [("PCMA", LOUD)] * 5,
    "G.711 mixed laws, two silent listeners": [("PCMA", 0.2), ("PCMU", 0.3), ("PCMA", 0.0)]
    + [("PCMU", 0.25), ("PCMU", 0.0)],
    "G.722, all talking, limiter engaged": [("G722", LOUD)] * 5,
    "G.722 with G.711 and Speex-NB": [("G722", 0.2), ("PCMA", 0.2), ("speex-nb", 0.2)]
    + [("G722", 0.0), ("PCMU", 0.3)],
    "Opus, all talking": [("opus", 0.2)] * 4,
}


@pytest.mark.parametrize("members", list(ROOMS.values()), ids=list(ROOMS))
def test_fast_path_sends_the_reference_octets_at_16khz(members: list[Member]) -> None:
    reference, fast = _rooms()
    expected = _run(members, reference, muted=(1,))
    got = _run(members, fast, muted=(1,))
    assert fast.internal_rate == reference.internal_rate == 16000
    assert [len(s) for s in got] == [TICKS] * len(members)
    assert got == expected


@pytest.mark.parametrize(
    "members",
    [
        ROOMS["G.711 A-law, all talking, limiter engaged"],
        ROOMS["G.711 mixed laws, two silent listeners"],
    ]
    + [[("speex-nb", 0.2), ("PCMA", 0.3), ("PCMU", 0.2)]],
    ids=["alaw-loud", "mixed-laws", "speex-nb"],
)
def test_narrowband_room_sends_the_reference_octets_at_8khz(members: list[Member]) -> None:
    reference, _ = _rooms(8000)
    fast = MixRoom(RoomId("fast"))  # the default: picks 8 kHz by itself
    expected = _run(members, reference)
    got = _run(members, fast)
    assert fast.internal_rate == 8000
    assert got == expected


def _decoded(codec: str, datagrams: list[bytes]) -> np.ndarray:
    name, rate, _pt, channels, _step = CODECS[codec]
    factory = codec_for(name, rate, channels or 1)
    assert factory is not None
    dec = factory()
    return np.concatenate([dec.decode(RtpPacket.parse(d).payload) for d in datagrams[-40:]])


def test_narrowband_room_holds_the_same_tones_as_the_16khz_reference() -> None:
    members: list[Member] = [("PCMA", 0.2), ("PCMU", 0.2), ("PCMA", 0.2), ("PCMA", 0.2)]
    reference = MixRoom(RoomId("ref"), fast=False, narrowband=False)
    expected = _run(members, reference)
    fast = MixRoom(RoomId("fast"))
    got = _run(members, fast)
    assert (reference.internal_rate, fast.internal_rate) == (16000, 8000)
    for i, (codec, _amplitude) in enumerate(members):
        ours = _decoded(codec, got[i])
        theirs = _decoded(codec, expected[i])
        for j, freq in enumerate(TONES[: len(members)]):
            p_ours, p_ref = tone_power(ours, 8000, freq), tone_power(theirs, 8000, freq)
            if j == i:  # mix-minus: their own tone is absent from both
                assert p_ours < -50 and p_ref < -50
            else:  # G.711 quantisation and the 16 kHz path's filter ripple: within 0.5 dB
                assert abs(p_ours - p_ref) < 0.5, (i, freq, p_ours, p_ref)


def test_room_rate_follows_its_codecs() -> None:
    rng = random.Random(3)
    room = MixRoom(RoomId("r"))

    def stream(codec: str) -> ParticipantStream:
        terms = answer_audio(
            _offer(codec, 30000),
            0,
            supported=SUPPORTED,
            srtp=SrtpPolicy.OPTIONAL,
            randbytes=rng.randbytes,
        )
        return ParticipantStream(terms, rng=rng, now=0.0)

    room.add(ParticipantId("a"), stream("PCMA"))
    room.add(ParticipantId("b"), stream("PCMU"))
    assert room.internal_rate == 8000
    assert all(s.internal_rate == 8000 for s in room.streams.values())
    room.add(ParticipantId("c"), stream("G722"))
    assert room.internal_rate == 16000
    assert all(s.internal_rate == 16000 for s in room.streams.values())
    room.remove(ParticipantId("c"))
    assert room.internal_rate == 8000
    assert all(s.internal_rate == 8000 for s in room.streams.values())


def test_limit_rows_is_limit_of_each_row() -> None:
    rng = np.random.default_rng(5)
    quiet = rng.integers(-20000, 20000, size=(4, 160), dtype=np.int32)
    loud = rng.integers(-90000, 90000, size=(4, 160), dtype=np.int32)
    for mixes in (quiet, loud, np.vstack([quiet, loud])):
        rows = limit_rows(mixes)
        assert rows.dtype == np.int16
        assert all(np.array_equal(rows[i], limit(mixes[i])) for i in range(len(mixes)))


def test_stamp_bytes_is_stamp_serialized() -> None:
    a, b = RtpSender(8, random.Random(1)), RtpSender(8, random.Random(1))
    for k in range(5):
        if k == 3:
            a.skip(160)
            b.skip(160)
        payload = bytes([k]) * 160
        packet = a.stamp(payload, 160)
        data, timestamp = b.stamp_bytes(payload, 160)
        assert data == packet.serialize()
        assert timestamp == packet.timestamp


@pytest.mark.parametrize("members", list(ROOMS.values()), ids=list(ROOMS))
def test_native_media_sends_the_python_octets(members: list[Member]) -> None:
    """The native loop's C (parse_rtp, JitterBuffer, SequenceTracker, level_db, mix_minus)
    against the Python reference, fed the same packets: the same datagrams to every
    listener, tick for tick."""
    media = native.load()
    expected = _run(members, MixRoom(RoomId("py")), muted=(1,))
    room = MixRoom(RoomId("c"), level=media.level_db, mix_minus=media.mix_minus)
    got = _run(members, room, muted=(1,), kit=native.kit())
    assert [len(s) for s in got] == [TICKS] * len(members)
    assert got == expected


def test_native_mix_minus_is_the_numpy_mix_minus() -> None:
    """Random talkers' frames: the same total, limited rows and G.711 codes as numpy's
    `total - frames`, `limit_rows` and the table lookup; None (numpy's turn) above the knee."""
    media = native.load()
    rng = np.random.default_rng(9)
    alaw, ulaw = codec_for("PCMA", 8000, 1), codec_for("PCMU", 8000, 1)  # factories
    assert alaw is not None and ulaw is not None
    tables = [alaw().table, None, ulaw().table, alaw().table]
    for scale in (100, 3000, 6000, 16000):  # the last one engages the limiter
        frames = [rng.integers(-scale, scale, size=170, dtype=np.int16) for _ in tables]
        total, rows, payloads = media.mix_minus(frames, 160, tables)
        stacked = np.stack([f[:160] for f in frames]).astype(np.int32)
        expected_total = stacked.sum(axis=0, dtype=np.int32)
        assert np.array_equal(np.frombuffer(total, np.int32), expected_total)
        mixes = expected_total - stacked
        if int(np.max(np.abs(mixes))) > 24576:
            assert rows is None and payloads is None
            continue
        assert rows is not None and payloads is not None
        limited = limit_rows(mixes)
        assert np.array_equal(np.frombuffer(rows, np.int16).reshape(4, 160), limited)
        for row, table in enumerate(tables):
            expected = None if table is None else table[limited[row].view(np.uint16) ^ 0x8000]
            assert payloads[row] == (None if expected is None else expected.tobytes())
    with pytest.raises(ValueError):
        media.mix_minus([np.zeros(100, np.int16)], 160, [None])


def test_opus_runs_at_the_rooms_rate_with_a_48khz_rtp_clock() -> None:
    # libopus decodes to and encodes from the room's 16 kHz: no resampler either way
    # (RFC 7587 §4.1 keeps the RTP clock at 48 kHz, so the timestamps still step 960).
    room = MixRoom(RoomId("opus"))
    sent = _run(ROOMS["Opus, all talking"], room)
    assert room.internal_rate == 16000
    for stream in room.streams.values():
        assert stream.codec_rate == 16000
        assert stream.private.codec.sample_rate == 16000
    stamps = [RtpPacket.parse(data).timestamp for data in sent[0]]
    assert {(b - a) % 2**32 for a, b in zip(stamps, stamps[1:], strict=False)} == {960}
