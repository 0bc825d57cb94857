"""A fault in one room or for one listener never stops the mixer for anyone else.

The sans-IO tests tick a `MixRoom` with a fake clock and count exactly; the socket tests
inject a failing encoder (every A-law encode raises) or a failing SRTP context (one
listener's protect raises) into a running `EmbeddedMixer` and show by FFT that every
other room, and every other listener, keeps hearing what it should.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import random
import threading
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pytest

from control.media.codecs import PcmaCodec, ulaw_encode
from control.media.engine import (
    AudioEvent,
    ParticipantId,
    RoomFailed,
    RoomId,
    StreamFailed,
)
from control.media.faults import FaultLog
from control.media.mixer import EmbeddedMixer
from control.media.mixroom import MixCounters, MixRoom
from control.media.mixworker import WorkerSpec, worker_main
from control.media.rtp import RtpPacket
from control.media.srtp import SrtpContext, SrtpError
from control.media.stream import EncoderChain, ParticipantStream
from control.media.tone import sine, steady_tone_power, tone_power
from control.sip import sdp
from tests.peers.rtp_endpoint import RtpEndpoint
from tests.peers.wait import wait_until
from tests.test_media_mixer import (
    ABSENT,
    HEARD,
    _allocator,
    _core_stream,
    _drain,
    _join,
    _mixed_past,
    _peer,
    make_mixer,
)

FAIL_TICKS = 25  # the mixers here end a room or listener after 0.5 s of failure


def broken_alaw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every A-law encode the *mixer* makes raises; the test peers' own encoders still work."""
    original = EncoderChain.encode

    def encode(self: EncoderChain, pcm: np.ndarray) -> bytes:  # type: ignore[type-arg]
        if isinstance(self.codec, PcmaCodec):
            raise RuntimeError("injected A-law encoder fault")
        return original(self, pcm)

    monkeypatch.setattr(EncoderChain, "encode", encode)
    # The fast mixer encodes G.711 of many listeners as one table lookup, not through
    # encode(): without a table, A-law goes through the broken encode() like any codec.
    monkeypatch.setattr(PcmaCodec, "table", None)


class _FailingProtect:
    """An SRTP context whose protect always fails; unprotect (their audio in) still works."""

    def __init__(self, real: SrtpContext | None) -> None:
        self._real = real

    def protect(self, rtp: bytes) -> bytes:
        raise SrtpError("injected SRTP protect fault")

    def unprotect(self, srtp: bytes) -> bytes:
        return srtp if self._real is None else self._real.unprotect(srtp)


# --- sans-IO: exact counts with a fake clock ----------------------------------------------


def _feed(streams: list[ParticipantStream], k: int, tone: np.ndarray) -> None:  # type: ignore[type-arg]
    quiet = np.zeros(160, dtype=np.int16)
    for i, stream in enumerate(streams):
        pcm = tone[k * 160 : (k + 1) * 160] if i == 0 else quiet
        packet = RtpPacket(0, k, k * 160, 1000 + i, ulaw_encode(pcm))
        stream.receive(packet.serialize(), ("127.0.0.1", 5000 + 2 * i), k * 0.02)


def test_failing_listener_loses_only_its_frame_and_is_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rng = random.Random(5)
    room = MixRoom(RoomId("r"), max_failing=FAIL_TICKS)
    streams = [_core_stream("PCMU", 5000 + 2 * i, rng) for i in range(3)]
    for i, stream in enumerate(streams):
        room.add(ParticipantId(f"p{i}"), stream)
    broken = streams[2]
    broken._srtp = _FailingProtect(broken._srtp)  # type: ignore[assignment]
    tone = sine(440.0, 2.0, 8000, amplitude=0.3)
    counters = MixCounters()
    events: list[AudioEvent] = []
    faults = FaultLog(logging.getLogger("test.faults"), interval=1000.0)
    ticks = 2 * FAIL_TICKS
    with caplog.at_level(logging.ERROR, logger="test.faults"):
        for k in range(ticks):
            _feed(streams, k, tone)
            out: list[tuple[ParticipantId, bytes, tuple[str, int]]] = []
            room.tick(k * 0.02 + 0.001, counters, events, out, rtp_timeout=60.0, faults=faults)
            assert sorted(pid for pid, _, _ in out) == ["p0", "p1"], k
    assert counters.listener_errors == ticks
    assert counters.frames_mixed == 2 * ticks
    assert counters.streams_failed == 1
    failures = [e for e in events if isinstance(e, StreamFailed)]
    assert failures == [StreamFailed(RoomId("r"), ParticipantId("p2"), failures[0].reason)]
    assert "injected SRTP protect fault" in failures[0].reason
    assert room.failing == 0 and not room.failed  # the room as a whole is fine
    logged = [r for r in caplog.records if "sending to p2" in r.getMessage()]
    assert len(logged) == 1, "a fault repeating every tick is logged once"
    assert faults.reported == ticks


def test_room_whose_every_listener_fails_is_failed_after_the_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken_alaw(monkeypatch)
    rng = random.Random(6)
    room = MixRoom(RoomId("r"), max_failing=FAIL_TICKS)
    for i in range(3):
        room.add(ParticipantId(f"p{i}"), _core_stream("PCMA", 6000 + 2 * i, rng))
    counters = MixCounters()
    events: list[AudioEvent] = []
    for k in range(FAIL_TICKS):
        assert not room.failed, k
        out: list[tuple[ParticipantId, bytes, tuple[str, int]]] = []
        room.tick(k * 0.02, counters, events, out, rtp_timeout=60.0)
        assert out == []
    assert room.failed
    assert "injected A-law encoder fault" in room.last_error
    # one shared encode a tick failed, and each of its three listeners lost its frame
    assert counters.encodes == FAIL_TICKS and counters.listener_errors == 3 * FAIL_TICKS
    assert {e.participant for e in events if isinstance(e, StreamFailed)} == {"p0", "p1", "p2"}


def test_fault_log_rate_limits_per_key(caplog: pytest.LogCaptureFixture) -> None:
    faults = FaultLog(logging.getLogger("test.faultlog"), interval=10.0)
    error = RuntimeError("boom")
    with caplog.at_level(logging.ERROR, logger="test.faultlog"):
        logged = [faults.report("a", "ctx a", error, t) for t in (0.0, 1.0, 9.9, 10.0, 11.0)]
        assert faults.report("b", "ctx b", error, 11.0)
    assert logged == [True, False, False, True, False]
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "ctx a: RuntimeError('boom')"
    assert "2 more since" in messages[1]
    assert messages[2] == "ctx b: RuntimeError('boom')"
    assert caplog.records[0].exc_info is not None  # the first report carries the traceback


# --- a running mixer on loopback UDP ---------------------------------------------------------


@pytest.fixture
async def mixer() -> AsyncIterator[EmbeddedMixer]:
    engine = make_mixer(11, max_failing_ticks=FAIL_TICKS)
    yield engine
    await engine.close()


async def test_failing_encoder_ends_its_room_and_the_other_room_keeps_mixing(
    mixer: EmbeddedMixer, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_alaw(monkeypatch)
    bad = [_peer("PCMA", seed=1), _peer("PCMA", seed=2)]
    good = [_peer("PCMU", seed=3), _peer("G722", seed=4)]
    await _join(mixer, bad, RoomId("bad"))
    await _join(mixer, good, RoomId("good"))
    events: list[AudioEvent] = []

    def room_failed() -> bool:
        events.extend(_drain(mixer))
        return any(isinstance(e, RoomFailed) for e in events)

    await asyncio.gather(
        good[0].play(440.0, 2.0),
        good[1].play(700.0, 2.0),
        bad[0].play(1100.0, 2.0),
        bad[1].play(1300.0, 2.0),
    )
    assert await _mixed_past(*good), "the good room stopped mixing"
    assert await wait_until(room_failed)
    assert [e for e in events if isinstance(e, RoomFailed)][0].room == "bad"
    for peer, own, other in ((good[0], 440.0, 700.0), (good[1], 700.0, 440.0)):
        pcm = peer.heard(skip=0.4)
        assert tone_power(pcm, peer.sample_rate, other) > HEARD, f"{other} Hz missing"
        assert steady_tone_power(pcm, peer.sample_rate, own) < ABSENT
        assert steady_tone_power(pcm, peer.sample_rate, 1100.0) < ABSENT  # rooms stay apart
    assert all(not p.packets() for p in bad), "a failing encoder sent something"
    counters = await mixer.stats()
    assert counters.rooms_failed == 1 and counters.listener_errors >= 2 * FAIL_TICKS
    # An ended room takes no newcomers; its participants leave through detach as usual.
    late = _peer("PCMU", seed=5)
    await late.open()
    with pytest.raises(Exception) as info:
        await mixer.attach(RoomId("bad"), ParticipantId("late"), late.offer(), 0)
    assert getattr(info.value, "status", None) == 503
    for pid in ("p0", "p1"):
        await mixer.detach(RoomId("bad"), ParticipantId(pid))
    for peer in (*bad, *good, late):
        peer.close()


async def test_failing_srtp_for_one_listener_spares_the_rest_of_its_room(
    mixer: EmbeddedMixer,
) -> None:
    peers = [_peer("PCMA", srtp=True, seed=i) for i in range(3)]
    ids = await _join(mixer, peers)
    stream = mixer.stream(RoomId("room1"), ids[2])
    assert stream is not None and stream._srtp is not None
    stream._srtp = _FailingProtect(stream._srtp)  # type: ignore[assignment]
    events: list[AudioEvent] = []
    await asyncio.gather(
        *(p.play(f, 2.0) for p, f in zip(peers, (440.0, 700.0, 1100.0), strict=True))
    )
    assert await _mixed_past(peers[0], peers[1]), "the room stopped mixing"
    events.extend(_drain(mixer))
    for peer, own, others in (
        (peers[0], 440.0, (700.0, 1100.0)),
        (peers[1], 700.0, (440.0, 1100.0)),
    ):
        pcm = peer.heard(skip=0.4)
        for other in others:  # 1100 Hz: the failing listener still talks into the room
            assert tone_power(pcm, 8000, other) > HEARD, f"{other} Hz missing"
        assert steady_tone_power(pcm, 8000, own) < ABSENT
    assert not peers[2].packets(), "a listener whose SRTP fails got packets"
    assert [e for e in events if isinstance(e, StreamFailed)] == [
        StreamFailed(RoomId("room1"), ids[2], "SrtpError('injected SRTP protect fault')")
    ]
    assert not [e for e in events if isinstance(e, RoomFailed)]
    for peer in peers:
        peer.close()


def _broadcast_peer(seed: int) -> RtpEndpoint:
    """A peer whose SDP names 255.255.255.255: the kernel refuses every send (EACCES)."""
    return _peer("PCMU", seed=seed)


@pytest.mark.parametrize("workers", [0, 2])
async def test_send_errors_are_counted(workers: int) -> None:
    engine = make_mixer(12, workers=workers)
    try:
        peer = _broadcast_peer(1)
        await peer.open()
        text = bytes(peer.offer()).replace(b"IN IP4 127.0.0.1", b"IN IP4 255.255.255.255")
        await engine.attach(RoomId("bcast"), ParticipantId("p"), sdp.parse(text), 0)

        async def errors() -> int:
            return (await engine.stats()).send_errors

        deadline = asyncio.get_running_loop().time() + 30.0
        while await errors() < 5 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        counters = await engine.stats()
        assert counters.send_errors >= 5 and counters.ticks > 0
        peer.close()
    finally:
        await engine.close()


# --- the worker-process side (mixer_workers > 0), run in a thread so a fault can be injected


def _worker_spec(index: int = 0) -> WorkerSpec:
    low = _allocator().low
    return WorkerSpec(
        index=index,
        host="127.0.0.1",
        port_low=low,
        port_high=low + 99,
        codecs=("PCMU", "PCMA"),
        rtp_timeout=60.0,
        srtp="optional",
        seed=1,
        share_encoding=True,
        late_after=0.01,
        max_catchup=3,
        max_failing_ticks=FAIL_TICKS,
    )


def _until(conn: Connection, kind: str, timeout: float = 30.0) -> tuple[Any, ...]:
    """The next message of `kind` from the worker (others are skipped), within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.poll(0.1):
            message = conn.recv()
            if message[0] == kind:
                return tuple(message)
    raise AssertionError(f"no {kind!r} from the worker within {timeout} s")


def test_worker_reports_a_failing_room_and_answers_a_bad_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    broken_alaw(monkeypatch)
    parent, child = multiprocessing.Pipe()
    thread = threading.Thread(target=worker_main, args=(child, _worker_spec()), daemon=True)
    thread.start()
    try:
        assert _until(parent, "ready") == ("ready",)
        with caplog.at_level(logging.ERROR, logger="chorus.media.mixworker"):
            # not SDP: the worker's command loop catches what _dispatch raises, logs it, answers 500
            parent.send(("attach", 1, ("r", "x", b"not sdp", 0)))
            _, request, ok, value = _until(parent, "reply")
        assert (request, ok, value[0]) == (1, False, 500)
        assert any("attach ('r', 'x') failed" in r.getMessage() for r in caplog.records)
        for n, pid in enumerate(("a", "b"), start=2):
            peer = _peer("PCMA", seed=n)
            peer.port = 4000 + 2 * n
            parent.send(("attach", n, ("bad", pid, bytes(peer.offer()), 0)))
            assert _until(parent, "reply")[2] is True
        _, event = _until(parent, "event")
        while not isinstance(event, RoomFailed):
            _, event = _until(parent, "event")
        assert event.room == "bad" and "injected A-law encoder fault" in event.reason
        parent.send(("stats", 9, ()))
        counters = _until(parent, "reply")[3]
        assert counters.rooms_failed == 1 and counters.listener_errors >= 2 * FAIL_TICKS
        parent.send(("close", 10, ()))
        _until(parent, "reply")
    finally:
        thread.join(10)
        parent.close()
    assert not thread.is_alive()
