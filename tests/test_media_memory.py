"""What an embedded-mixer participant keeps alive (issue 14: memory per participant).

Two things made an Opus participant cost 0.7-2.5 MiB of a live server's RSS where its
codec states are some 60 KiB (bench/RESULTS.md): every Opus decode (and every Speex encode
and decode) left a buffer in a reference cycle, so the garbage piled up until the cyclic
collector's next young collection (every `[server] gc_threshold` allocations), and every
codec instance created both an encoder and a decoder although the mixer uses each one way.
These tests state both without timing: a tick makes no cyclic garbage, and a room holds one
encoder per talker (plus the shared one) and one decoder per sender.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import opuslib
import opuslib.api.ctl
import opuslib.api.encoder
import pytest

from control.media import native
from control.media.answer import answer_audio
from control.media.codecs import OPUS_COMPLEXITY, OpusCodec
from control.media.engine import ParticipantId, RoomId
from control.media.mixroom import MixCounters, MixRoom, Outgoing
from control.media.srtp import SrtpPolicy
from control.media.stream import MIXER_TUNING, PYTHON_KIT, ParticipantStream, level_db
from control.media.tone import sine
from tests.test_mixer_differential import SUPPORTED, TICKS, TONES, _offer, _packets


def _phones(codec: str, talkers: int, silent: int) -> list[list[bytes]]:
    """Each participant's TICKS datagrams: `talkers` tones, then `silent` silences."""
    return [
        _packets(codec, TONES[i], 0.1 if i < talkers else 0.0, 5000 + i)
        for i in range(talkers + silent)
    ]


class _Room:
    """A MixRoom of one participant per phone (`_phones`), as the mixer builds them (the
    mixer's codec tuning; the native media loop's pieces with `use_native`)."""

    def __init__(self, codec: str, phones: list[list[bytes]], *, use_native: bool) -> None:
        rng = random.Random(7)
        mod = native.load() if use_native else None
        kit = native.kit() if use_native else PYTHON_KIT
        self.room = MixRoom(
            RoomId("r"),
            level=level_db if mod is None else mod.level_db,
            mix_minus=None if mod is None else mod.mix_minus,
            tuning=MIXER_TUNING,
        )
        self.feeds: list[tuple[ParticipantStream, list[bytes], tuple[str, int]]] = []
        for i, datagrams in enumerate(phones):
            addr = ("127.0.0.1", 20000 + 2 * i)
            terms = answer_audio(
                _offer(codec, addr[1]),
                0,
                supported=SUPPORTED,
                srtp=SrtpPolicy.DISABLED,
                randbytes=rng.randbytes,
            )
            stream = ParticipantStream(terms, rng=rng, now=0.0, kit=kit, tuning=MIXER_TUNING)
            self.room.add(ParticipantId(f"p{i}"), stream)
            self.feeds.append((stream, datagrams, addr))
        self.k = 0

    def run(self, ticks: int) -> MixCounters:
        """`ticks` more ticks, each participant's next datagram first (at most TICKS)."""
        counters = MixCounters()
        out: list[Outgoing] = []
        events: list[Any] = []
        for k in range(self.k, self.k + ticks):
            for stream, datagrams, addr in self.feeds:
                stream.receive(datagrams[k], addr, k * 0.02)
            out.clear()
            self.room.tick(k * 0.02 + 0.001, counters, events, out, rtp_timeout=60.0)
        self.k += ticks
        return counters


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize("use_native", [False, True], ids=["python", "native"])
@pytest.mark.parametrize("codec", ["opus", "speex-nb", "G722", "PCMA"])
def test_a_mixing_tick_leaves_no_cyclic_garbage(
    codec: str, use_native: bool, no_collector: None
) -> None:
    """Every participant talking (decode, mix-minus, own encodes) and silent listeners (the
    shared encode), with concealment at the start: nothing for the cyclic collector."""
    room = _Room(codec, _phones(codec, talkers=4, silent=2), use_native=use_native)
    room.run(10)  # first-use states and caches
    gc.collect()
    counters = room.run(TICKS - 10)
    assert counters.frames_mixed == (TICKS - 10) * 6
    assert counters.listener_errors == 0
    assert gc.collect() == 0


class _Counting:
    """opuslib's Encoder and Decoder, each creation counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.encoders = 0
        self.decoders = 0
        counts = self
        encoder, decoder = opuslib.Encoder, opuslib.Decoder

        class Encoder(encoder):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                counts.encoders += 1
                super().__init__(*args)

        class Decoder(decoder):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                counts.decoders += 1
                super().__init__(*args)

        monkeypatch.setattr(opuslib, "Encoder", Encoder)
        monkeypatch.setattr(opuslib, "Decoder", Decoder)


@pytest.mark.parametrize("use_native", [False, True], ids=["python", "native"])
def test_an_opus_room_holds_an_encoder_per_talker_and_a_decoder_per_sender(
    use_native: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 talkers hear their own mix-minus (4 encoders), 2 silent listeners share one mix
    (1 encoder); all 6 send, so 6 decoders: 5 + 6 libopus states, not 2 × 6 + 2."""
    phones = _phones("opus", talkers=4, silent=2)
    counting = _Counting(monkeypatch)  # from here: the room's own states
    room = _Room("opus", phones, use_native=use_native)
    counters = room.run(TICKS)
    assert counters.frames_mixed == TICKS * 6
    assert (counting.encoders, counting.decoders) == (5, 6)


def test_opus_gives_libopus_bytes_and_samples_as_opuslib_does() -> None:
    """The codec calls libopus with buffers of its own; the payloads, the decoded samples
    and the concealment are opuslib's, frame for frame (16 kHz as in a room, FEC on)."""
    codec = OpusCodec(sample_rate=16000, bitrate=24000, inband_fec=True)
    enc = opuslib.Encoder(16000, 1, "voip")
    enc.complexity = OPUS_COMPLEXITY
    enc.bitrate = 24000
    opuslib.api.encoder.encoder_ctl(enc.encoder_state, opuslib.api.ctl.set_inband_fec, 1)
    opuslib.api.encoder.encoder_ctl(enc.encoder_state, opuslib.api.ctl.set_packet_loss_perc, 5)
    dec = opuslib.Decoder(16000, 1)
    pcm = sine(700.0, 1.0, 16000, amplitude=0.3)
    for i in range(50):
        frame = pcm[i * 320 : (i + 1) * 320]
        payload = codec.encode(frame)
        assert payload == bytes(enc.encode(frame.tobytes(), 320))
        if i % 7 == 3:
            got, want = codec.conceal(320), dec.decode(b"", 320)
        else:
            got, want = codec.decode(payload), dec.decode(payload, 1920)
        assert np.array_equal(got, np.frombuffer(want, dtype=np.int16))
