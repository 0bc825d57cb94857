"""Codecs: G.711 known values, every codec round-trips a 1 kHz tone, resampling, registry."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from control.media.codecs import (
    SUPPORTED,
    Codec,
    CodecError,
    CodecTuning,
    G722Codec,
    OpusCodec,
    PcmaCodec,
    PcmuCodec,
    Resampler,
    SpeexCodec,
    alaw_decode,
    alaw_encode,
    codec_for,
    parse_fmtp,
    ulaw_decode,
    ulaw_encode,
)
from control.media.speex import SpeexDecoder, SpeexError
from control.media.tone import dominant_frequencies, sine, tone_power


def test_ulaw_known_values() -> None:
    # ITU-T G.711 Table 2a: code 0xFF (and 0x7F) is zero, 0x80/0x00 the extremes.
    pcm = np.array([0, 32767, -32768, 8, -8], dtype=np.int16)
    assert ulaw_encode(pcm) == bytes([0xFF, 0x80, 0x00, 0xFE, 0x7E])
    decoded = ulaw_decode(bytes([0xFF, 0x7F, 0x80, 0x00, 0xEF, 0x6F, 0xFE]))
    assert decoded.tolist() == [0, 0, 32124, -32124, 132, -132, 8]


def test_alaw_known_values() -> None:
    # ITU-T G.711 Table 1a: even bits inverted, so "zero" is 0xD5 / 0x55.
    pcm = np.array([0, -1, 32767, -32768, 100], dtype=np.int16)
    assert alaw_encode(pcm) == bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD3])
    decoded = alaw_decode(bytes([0xD5, 0x55, 0xAA, 0x2A, 0xD4]))
    assert decoded.tolist() == [8, -8, 32256, -32256, 24]


@pytest.mark.parametrize("enc,dec", [(ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)])
def test_g711_round_trip(enc: object, dec: object) -> None:
    assert callable(enc) and callable(dec)
    codes = bytes(range(256))
    levels = dec(codes)
    # Every decoded level encodes back to a code with the same level.
    assert np.array_equal(dec(enc(levels)), levels)
    # Quantisation error is bounded by half the largest step (plus μ-law's clip).
    x = np.arange(-32768, 32768, 7).astype(np.int16)
    err = np.abs(dec(enc(x)).astype(np.int32) - x)
    assert err.max() <= 644
    small = np.abs(x.astype(np.int32)) < 256
    assert err[small].max() <= 8


def _round_trip(codec: Codec, freq: float = 1000.0, seconds: float = 0.6) -> np.ndarray:
    n = codec.frame_samples(20)
    tone = sine(freq, seconds, codec.sample_rate, 0.5)
    out = [codec.decode(codec.encode(tone[i : i + n])) for i in range(0, tone.size, n)]
    pcm = np.concatenate(out)
    return pcm[codec.sample_rate // 10 :]  # skip the codec's start-up


@pytest.mark.parametrize(
    "factory,rate",
    [
        (PcmuCodec, 8000),
        (PcmaCodec, 8000),
        (lambda: SpeexCodec(8000), 8000),
        (G722Codec, 16000),
        (lambda: SpeexCodec(16000), 16000),
        (OpusCodec, 48000),
        (lambda: OpusCodec(sample_rate=16000), 16000),
        (lambda: OpusCodec(sample_rate=16000, complexity=0), 16000),
    ],
)
def test_codec_round_trip_keeps_a_1khz_tone(factory: type[Codec], rate: int) -> None:
    codec = factory()
    assert codec.sample_rate == rate
    pcm = _round_trip(codec)
    assert pcm.dtype == np.int16
    (peak,) = dominant_frequencies(pcm, rate, 1)
    assert abs(peak - 1000) < 10
    level = tone_power(pcm, rate, 1000)
    assert -9 < level < -3  # went in at -6 dB
    for other in (300, 2000, 3000):
        assert tone_power(pcm, rate, other) < level - 30


def test_wideband_codecs_carry_more_than_narrowband() -> None:
    # A 6 kHz tone survives G.722 and wideband Speex; it cannot exist at 8 kHz.
    for codec in (G722Codec(), SpeexCodec(16000)):
        pcm = _round_trip(codec, 6000.0)
        assert abs(dominant_frequencies(pcm, 16000, 1)[0] - 6000) < 20


def test_frame_sizes_and_clocks() -> None:
    g722 = G722Codec()
    assert (g722.frame_samples(20), g722.timestamp_step(20)) == (320, 160)
    assert len(g722.encode(np.zeros(320, dtype=np.int16))) == 160
    opus = OpusCodec()
    assert (opus.frame_samples(20), opus.timestamp_step(20)) == (960, 960)
    speex = SpeexCodec(8000)
    assert (speex.frame_samples(20), speex.timestamp_step(20)) == (160, 160)
    # Two Speex frames in one packet (RFC 5574 §3.3) decode to 40 ms.
    assert speex.decode(speex.encode(np.zeros(320, dtype=np.int16))).size == 320
    with pytest.raises(CodecError):
        speex.encode(np.zeros(100, dtype=np.int16))
    with pytest.raises(CodecError):
        opus.encode(np.zeros(100, dtype=np.int16))
    with pytest.raises(CodecError):
        g722.encode(np.zeros(3, dtype=np.int16))


def test_opus_at_16khz_keeps_the_48khz_rtp_clock() -> None:
    # RFC 7587 §4.1: the RTP clock is 48 kHz whatever rate libopus runs its PCM at.
    opus = OpusCodec(sample_rate=16000)
    assert (opus.frame_samples(20), opus.timestamp_step(20)) == (320, 960)
    payload = opus.encode(np.zeros(320, dtype=np.int16))
    assert opus.decode(payload).size == 320
    assert opus.conceal(320).size == 320  # libopus PLC at the codec's own rate
    # A packet from a 48 kHz encoder decodes at 16 kHz: the rate is the receiver's choice.
    assert opus.decode(OpusCodec().encode(np.zeros(960, dtype=np.int16))).size == 320
    with pytest.raises(CodecError):
        OpusCodec(sample_rate=44100)
    with pytest.raises(CodecError):
        OpusCodec(complexity=11)


def test_each_instance_keeps_its_own_state() -> None:
    a, b = G722Codec(), G722Codec()
    tone = sine(1000, 0.02, 16000)
    first = a.encode(tone)
    assert a.encode(tone) != first  # ADPCM: a's predictor moved on, so there is state
    assert b.encode(tone) == first  # b's predictor was not advanced by a's frames


@pytest.mark.parametrize(
    "codec", [PcmuCodec(), G722Codec(), SpeexCodec(8000), SpeexCodec(16000), OpusCodec()]
)
def test_concealment(codec: Codec) -> None:
    n = codec.frame_samples(20)
    tone = sine(1000, 0.2, codec.sample_rate)
    for i in range(0, tone.size, n):
        codec.decode(codec.encode(tone[i : i + n]))
    first = codec.conceal(n)
    assert first.dtype == np.int16 and first.size == n
    assert abs(dominant_frequencies(first, codec.sample_rate, 1)[0] - 1000) < 60
    for _ in range(10):
        later = codec.conceal(n)
    # Long losses fade out rather than buzz forever.
    assert np.abs(later.astype(np.int32)).max() < np.abs(first.astype(np.int32)).max() / 4


def test_decode_garbage_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        OpusCodec().decode(b"")
    with pytest.raises(CodecError):
        SpeexCodec(16000).decode(b"\xff\xff\xff")
    with pytest.raises(CodecError):
        OpusCodec().decode(bytes([0x03, 0xFF]))  # code 3 packet with an impossible count


def test_speex_garbage_never_crashes() -> None:
    # In a child process, so a crash in libspeex fails this test instead of killing pytest.
    script = textwrap.dedent(
        """
        import random
        from control.media.speex import SpeexDecoder, SpeexError, SPEEX_MODEID_NB, SPEEX_MODEID_WB
        r = random.Random(7)
        for mode in (SPEEX_MODEID_NB, SPEEX_MODEID_WB):
            d = SpeexDecoder(mode)
            for _ in range(3000):
                data = r.randbytes(r.randint(1, 200))
                try:
                    out = d.decode(data)
                    assert out.size % d.frame_size == 0
                except SpeexError:
                    pass
            d.conceal()
        print("survived")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "survived"


def test_speex_decoder_in_process_garbage() -> None:
    d = SpeexDecoder(0)
    r = random.Random(3)
    outcomes = set()
    for _ in range(200):
        try:
            d.decode(r.randbytes(r.randint(1, 60)))
            outcomes.add("pcm")
        except SpeexError:
            outcomes.add("error")
    assert "error" in outcomes


@pytest.mark.parametrize(
    "rate_in,rate_out",
    [(8000, 16000), (16000, 8000), (8000, 48000), (48000, 8000), (16000, 48000), (48000, 16000)],
)
def test_resampler_keeps_a_tone(rate_in: int, rate_out: int) -> None:
    r = Resampler(rate_in, rate_out)
    tone = sine(1000, 0.5, rate_in, 0.5)
    step = rate_in // 50
    out = np.concatenate([r.process(tone[i : i + step]) for i in range(0, tone.size, step)])
    assert out.size == tone.size * rate_out // rate_in
    pcm = out[rate_out // 20 :]
    assert abs(dominant_frequencies(pcm, rate_out, 1)[0] - 1000) < 2
    level = tone_power(pcm, rate_out, 1000)
    assert abs(level + 6.02) < 0.2
    for other in (500, 2000, 3000):
        assert tone_power(pcm, rate_out, other) < level - 60


@pytest.mark.parametrize("rate_in,rate_out", [(8000, 48000), (48000, 16000), (16000, 48000)])
def test_resampler_chunking_does_not_matter(rate_in: int, rate_out: int) -> None:
    signal = np.random.default_rng(1).integers(-20000, 20000, rate_in // 5).astype(np.int16)
    whole = Resampler(rate_in, rate_out).process(signal)
    r = Resampler(rate_in, rate_out)
    cuts = [0, 1, 7, 160, 333, 1000, signal.size]
    pieces = [r.process(signal[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert np.array_equal(np.concatenate(pieces), whole)


def test_resampler_rejects_what_cannot_pass() -> None:
    # A 6 kHz tone cannot exist at 8 kHz: it must not alias down to 2 kHz.
    r = Resampler(16000, 8000)
    out = r.process(sine(6000, 0.5, 16000, 0.5))[400:]
    assert tone_power(out, 8000, 2000) < -60


def test_registry() -> None:
    assert [s.rtpmap for s in SUPPORTED] == [
        "opus/48000/2",
        "G722/8000",
        "speex/16000",
        "PCMU/8000",
        "PCMA/8000",
        "speex/8000",
    ]
    factory = codec_for("OPUS", 48000, 2, "useinbandfec=1; maxaveragebitrate=24000")
    assert factory is not None and isinstance(factory(), OpusCodec)
    assert factory().sample_rate == 48000  # no tuning: fullband, as a 1:1 gateway needs
    mixing = codec_for("opus", 48000, 2, None, CodecTuning(pcm_rate=16000))
    assert mixing is not None and mixing().sample_rate == 16000  # the mixer's wideband rate
    tuned = codec_for("G722", 8000, 1, None, CodecTuning(pcm_rate=8000))
    assert tuned is not None and tuned().sample_rate == 16000  # only codecs that can, follow
    g722 = codec_for("g722", 8000)
    assert g722 is not None and isinstance(g722(), G722Codec)
    assert g722() is not g722()  # one instance per stream
    speex = codec_for("speex", 16000)
    assert speex is not None and speex().sample_rate == 16000
    assert codec_for("G722", 16000) is None
    assert codec_for("G729", 8000) is None
    assert codec_for("PCMU", 8000, 2) is None
    assert parse_fmtp("mode=30; vbr=on;x") == {"mode": "30", "vbr": "on", "x": ""}
