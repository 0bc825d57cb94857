"""Audio codecs for RTP streams, one object per stream direction pair, and resampling.

Every `Codec` instance owns its encoder and decoder state (G.722 ADPCM predictors, Speex
and Opus states), so a conference needs one instance per participant stream, never a
shared one.  PCM is mono `numpy.int16` at the codec's `sample_rate`; `clock_rate` is the
RTP timestamp clock, which differs for G.722 (RFC 3551 §4.5.2: 8000 for 16 kHz audio)
and Opus (RFC 7587 §4.1: always 48000).

`decode` raises `CodecError` for a payload it cannot use; the caller then asks
`conceal` for a frame instead, exactly as for a lost packet.
"""

from __future__ import annotations

import ctypes
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from control.media.speex import (
    SPEEX_MODEID_NB,
    SPEEX_MODEID_WB,
    SpeexDecoder,
    SpeexEncoder,
    SpeexError,
    require_speex,
)

__all__ = [
    "SUPPORTED",
    "Codec",
    "CodecError",
    "CodecSpec",
    "G722Codec",
    "OpusCodec",
    "CodecTuning",
    "DEFAULT_TUNING",
    "OPUS_PCM_RATES",
    "PcmaCodec",
    "PcmuCodec",
    "Resampler",
    "SpeexCodec",
    "alaw_decode",
    "alaw_encode",
    "codec_for",
    "parse_fmtp",
    "ulaw_decode",
    "ulaw_encode",
]

Pcm = npt.NDArray[np.int16]


class CodecError(ValueError):
    """A payload or PCM block the codec cannot handle."""


# --- G.711 (ITU-T G.711, tables built once from the segment rules) -------------------


def _build_ulaw_tables() -> tuple[npt.NDArray[np.uint8], Pcm]:
    """μ-law: 14-bit magnitude, bias 33 (132 on the 16-bit scale), 8 segments.

    Encoding follows G.711 Table 2a: add the bias, the segment is the position of the
    highest set bit above bit 7, the 4 mantissa bits follow it, and the code is the
    one's complement.  Decoding inverts it (decision values at segment mid-points).
    """
    codes = np.arange(256, dtype=np.int32)
    u = ~codes & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    decode = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)

    x = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag >> 7)).astype(np.int32)
    exponent = np.clip(exponent, 0, 7)
    mantissa = (mag >> (exponent + 3)) & 0x0F
    encode = (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8)
    return encode, decode


def _build_alaw_tables() -> tuple[npt.NDArray[np.uint8], Pcm]:
    """A-law: 13-bit values, 8 segments, even bits inverted (XOR 0x55), G.711 Table 1a."""
    codes = np.arange(256, dtype=np.int32)
    a = codes ^ 0x55
    seg = (a & 0x70) >> 4
    t = (a & 0x0F) << 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    decode = np.where(a & 0x80, t, -t).astype(np.int16)

    x = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(x >= 0, 0xD5, 0x55)
    mag = np.where(x >= 0, x, -x - 1)
    # Segment ends 0x1F, 0x3F, ... 0xFFF: segment = bit length of (mag >> 4), capped.
    seg_e = np.zeros_like(mag)
    for s in range(1, 8):
        seg_e = np.where(mag >= (0x20 << (s - 1)), s, seg_e)
    mant = np.where(seg_e < 2, (mag >> 1) & 0x0F, (mag >> np.maximum(seg_e, 1)) & 0x0F)
    encode = (((seg_e << 4) | mant) ^ mask).astype(np.uint8)
    return encode, decode


_ULAW_ENC, _ULAW_DEC = _build_ulaw_tables()
_ALAW_ENC, _ALAW_DEC = _build_alaw_tables()


def _as_pcm(pcm: npt.ArrayLike) -> Pcm:
    return np.ascontiguousarray(pcm, dtype=np.int16)


def ulaw_encode(pcm: npt.ArrayLike) -> bytes:
    return _ULAW_ENC[_as_pcm(pcm).view(np.uint16) ^ 0x8000].tobytes()


def ulaw_decode(data: bytes) -> Pcm:
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_encode(pcm: npt.ArrayLike) -> bytes:
    return _ALAW_ENC[_as_pcm(pcm).view(np.uint16) ^ 0x8000].tobytes()


def alaw_decode(data: bytes) -> Pcm:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]


# --- the codec interface -----------------------------------------------------------


class Codec(ABC):
    """One stream's encoder + decoder.  Subclasses set the class attributes."""

    name: str  # the rtpmap encoding name, as we write it in SDP
    clock_rate: int  # RTP timestamp clock
    sample_rate: int  # PCM rate of encode() input and decode() output
    channels: int = 1  # rtpmap channel count (Opus says 2 and carries mono too)
    static_payload_type: int | None = None
    # Stateless table codecs (G.711): int16 sample (as uint16 ^ 0x8000) -> code octet.
    table: npt.NDArray[np.uint8] | None = None

    def __init__(self) -> None:
        self._last: Pcm | None = None
        self._lost_run = 0

    def frame_samples(self, ptime_ms: int = 20) -> int:
        """PCM samples (at `sample_rate`) in one frame of `ptime_ms`."""
        return self.sample_rate * ptime_ms // 1000

    def timestamp_step(self, ptime_ms: int = 20) -> int:
        """RTP timestamp increment for one frame of `ptime_ms`."""
        return self.clock_rate * ptime_ms // 1000

    @abstractmethod
    def encode(self, pcm: Pcm) -> bytes:
        """Encode one frame of PCM into an RTP payload."""

    def decode(self, payload: bytes) -> Pcm:
        """Decode an RTP payload; raises `CodecError` if it cannot."""
        pcm = self._decode(payload)
        self._last = pcm
        self._lost_run = 0
        return pcm

    @abstractmethod
    def _decode(self, payload: bytes) -> Pcm: ...

    def conceal(self, samples: int) -> Pcm:
        """PCM standing in for a lost frame (packet-loss concealment).

        The generic method repeats the last good frame, fading by 6 dB per lost frame
        and going silent after four; codecs with their own PLC override this.
        """
        self._lost_run += 1
        if self._last is None or self._last.size == 0 or self._lost_run > 4:
            return np.zeros(samples, dtype=np.int16)
        reps = -(-samples // self._last.size)
        base = np.tile(self._last, reps)[:samples].astype(np.float32)
        start = 0.5 ** (self._lost_run - 1)
        ramp = np.linspace(start, start / 2, samples, dtype=np.float32)
        return (base * ramp).astype(np.int16)


class PcmuCodec(Codec):
    """G.711 μ-law, RFC 3551 §4.5.14, static payload type 0."""

    name = "PCMU"
    clock_rate = 8000
    sample_rate = 8000
    static_payload_type = 0
    table = _ULAW_ENC

    def encode(self, pcm: Pcm) -> bytes:
        return ulaw_encode(pcm)

    def _decode(self, payload: bytes) -> Pcm:
        return ulaw_decode(payload)


class PcmaCodec(Codec):
    """G.711 A-law, RFC 3551 §4.5.14, static payload type 8."""

    name = "PCMA"
    clock_rate = 8000
    sample_rate = 8000
    static_payload_type = 8
    table = _ALAW_ENC

    def encode(self, pcm: Pcm) -> bytes:
        return alaw_encode(pcm)

    def _decode(self, payload: bytes) -> Pcm:
        return alaw_decode(payload)


class G722Codec(Codec):
    """G.722 at 64 kbit/s over the `G722` C extension, static payload type 9.

    RFC 3551 §4.5.2: the RTP clock is 8000 although the audio is sampled at 16 kHz (a
    historical error kept for compatibility), so a 20 ms frame is 320 samples but 160
    timestamp units.
    """

    name = "G722"
    clock_rate = 8000
    sample_rate = 16000
    static_payload_type = 9

    def __init__(self) -> None:
        super().__init__()
        import G722

        self._enc: Any = G722.G722(16000, 64000)
        self._dec: Any = G722.G722(16000, 64000)

    def encode(self, pcm: Pcm) -> bytes:
        samples = _as_pcm(pcm)
        if samples.size % 2:
            raise CodecError("G.722 encodes sample pairs: need an even sample count")
        return bytes(self._enc.encode(samples))

    def _decode(self, payload: bytes) -> Pcm:
        return np.frombuffer(self._dec.decode(payload), dtype=np.int16).copy()


class SpeexCodec(Codec):
    """Speex narrowband (speex/8000) or wideband (speex/16000), RFC 5574."""

    name = "speex"

    def __init__(self, clock_rate: int, *, quality: int = 8) -> None:
        super().__init__()
        if clock_rate not in (8000, 16000):
            raise CodecError(f"speex/{clock_rate} is not supported")
        self.clock_rate = clock_rate
        self.sample_rate = clock_rate
        require_speex()  # a missing libspeex fails here, as when both states were made here
        self._mode = SPEEX_MODEID_NB if clock_rate == 8000 else SPEEX_MODEID_WB
        self._quality = quality
        # Each half on its first use (a mixer uses an instance one way only; see OpusCodec).
        self._enc: SpeexEncoder | None = None
        self._dec: SpeexDecoder | None = None

    def _decoder(self) -> SpeexDecoder:
        if self._dec is None:
            self._dec = SpeexDecoder(self._mode)
        return self._dec

    def encode(self, pcm: Pcm) -> bytes:
        try:
            if self._enc is None:
                self._enc = SpeexEncoder(self._mode, quality=self._quality)
            return self._enc.encode(_as_pcm(pcm))
        except SpeexError as exc:
            raise CodecError(str(exc)) from exc

    def _decode(self, payload: bytes) -> Pcm:
        try:
            return self._decoder().decode(payload)
        except SpeexError as exc:
            raise CodecError(str(exc)) from exc

    def conceal(self, samples: int) -> Pcm:
        dec = self._decoder()
        frames = [dec.conceal() for _ in range(-(-samples // dec.frame_size))]
        return np.concatenate(frames)[:samples]


_OPUS_FRAME_MS = (2.5, 5, 10, 20, 40, 60)


# The PCM rates libopus runs its encoder and decoder at (RFC 6716 §2; opus_encoder_create).
OPUS_PCM_RATES = (8000, 12000, 16000, 24000, 48000)
OPUS_COMPLEXITY = 5  # libopus 0-10 ([rtp] opus_complexity): CPU per encode against quality


class OpusCodec(Codec):
    """Opus, RFC 7587: rtpmap always `opus/48000/2`, RTP clock 48 kHz whatever the audio.

    The PCM side runs at `sample_rate` (any of OPUS_PCM_RATES): a room mixing at 16 kHz
    creates its encoders and decoders at 16 kHz, so libopus decodes straight to the room's
    rate and encodes from it (wideband, 8 kHz audio bandwidth) instead of the mixer
    resampling 16 <-> 48 kHz around a fullband codec (bench/RESULTS.md: that resampling was
    a fifth of an Opus room's time).  RFC 7587 §4.1 keeps the RTP clock at 48 kHz, so the
    timestamp step (clock_rate) is unchanged and the far end sees ordinary Opus.

    RFC 7587 §7.1: a receiver must accept stereo, and libopus downmixes a stereo packet
    when the decoder is created mono, so a mono mix loses nothing we use.

    Memory (bench/RESULTS.md, issue 14): a libopus encoder is 43 KiB and a decoder 18 KiB
    whatever the rate, and a mixer uses each instance for one direction only (a stream's
    decoder, a listener's encoder chain), so each half is created on its first use: a fresh
    state then is the same fresh state as at construction, so the audio is unchanged.  A
    decode writes into this codec's own buffer through libopus directly: opuslib's `decode`
    makes a fresh ctypes buffer per call tied into a reference cycle (`ctypes.cast`), which
    only the cyclic collector frees, and with the server's young-generation threshold
    (`[server] gc_threshold`) some 5,000 of them (38 MiB at 16 kHz) were alive at once.
    """

    name = "opus"
    clock_rate = 48000
    sample_rate = 48000
    channels = 2

    def __init__(
        self,
        *,
        sample_rate: int = 48000,
        bitrate: int | None = None,
        complexity: int = OPUS_COMPLEXITY,
        inband_fec: bool = False,
    ) -> None:
        super().__init__()
        import opuslib

        if sample_rate not in OPUS_PCM_RATES:
            raise CodecError(f"opus cannot run at {sample_rate} Hz")
        if not 0 <= complexity <= 10:
            raise CodecError(f"opus complexity {complexity} is not 0-10")
        self.sample_rate = sample_rate
        self._bitrate = bitrate
        self._complexity = complexity
        self._inband_fec = inband_fec
        self._enc: Any = None  # opuslib.Encoder, on the first encode
        self._dec: Any = None  # opuslib.Decoder, on the first decode or conceal
        self._error = opuslib.OpusError
        self._max_samples = sample_rate * 120 // 1000  # RFC 6716 §3.2.5: 120 ms at most
        self._plc_step = sample_rate // 400  # PLC lengths are multiples of 2.5 ms
        self._pcm: Any = None  # the decoder's output buffer (ctypes int16 array)
        self._enc_in: Any = None  # the encoder's input and output buffers
        self._enc_out: Any = None

    def _encoder(self) -> Any:
        import opuslib

        enc = opuslib.Encoder(self.sample_rate, 1, "voip")
        enc.complexity = self._complexity
        if self._bitrate is not None:
            enc.bitrate = self._bitrate
        if self._inband_fec:
            # opuslib's `inband_fec` setter drops its value; call the ctl directly.
            import opuslib.api.ctl
            import opuslib.api.encoder

            state = enc.encoder_state
            opuslib.api.encoder.encoder_ctl(state, opuslib.api.ctl.set_inband_fec, 1)
            opuslib.api.encoder.encoder_ctl(state, opuslib.api.ctl.set_packet_loss_perc, 5)
        self._enc = enc
        return enc

    def _decoder(self) -> Any:
        import opuslib

        self._dec = opuslib.Decoder(self.sample_rate, 1)
        self._pcm = (ctypes.c_int16 * self._max_samples)()
        return self._dec

    def encode(self, pcm: Pcm) -> bytes:
        samples = _as_pcm(pcm)
        if samples.size * 1000 / self.sample_rate not in _OPUS_FRAME_MS:
            raise CodecError(f"{samples.size} samples is not an Opus frame size")
        import opuslib.api.encoder

        enc = self._enc if self._enc is not None else self._encoder()
        n = samples.size
        if self._enc_in is None or len(self._enc_in) < n:
            self._enc_in = (ctypes.c_int16 * n)()
            self._enc_out = ctypes.create_string_buffer(2 * n)
        np.frombuffer(self._enc_in, dtype=np.int16, count=n)[:] = samples
        # Our own buffers as opuslib's encode would make them (output room: the PCM's own
        # size in bytes, as it gives libopus), but no fresh ctypes objects per frame.
        got = opuslib.api.encoder.libopus_encode(
            enc.encoder_state, self._enc_in, n, self._enc_out, 2 * n
        )
        if got < 0:
            raise CodecError(f"opus encode: {self._error(got)}")
        return self._enc_out.raw[:got]

    def _opus_decode(self, payload: bytes, samples: int) -> Pcm:
        """libopus's opus_decode into our buffer (b"": its PLC); raises its OpusError."""
        import opuslib.api.decoder

        dec = self._dec if self._dec is not None else self._decoder()
        if samples > len(self._pcm):  # a concealment longer than 120 ms
            self._pcm = (ctypes.c_int16 * samples)()
        # A ctypes array passes as the int16 pointer itself: no cast, no reference cycle.
        n = opuslib.api.decoder.libopus_decode(
            dec.decoder_state, payload, len(payload), self._pcm, samples, 0
        )
        if n < 0:
            raise self._error(n)
        return np.frombuffer(self._pcm, dtype=np.int16, count=n).copy()

    def _decode(self, payload: bytes) -> Pcm:
        if not payload:
            raise CodecError("empty opus payload")
        try:
            # 120 ms is the longest an Opus packet can carry (RFC 6716 §3.2.5).
            return self._opus_decode(payload, self._max_samples)
        except self._error as exc:
            raise CodecError(f"opus decode: {exc}") from exc

    def conceal(self, samples: int) -> Pcm:
        """libopus PLC: decoding an empty packet extrapolates `samples` of audio."""
        step = self._plc_step
        n = max(step, -(-samples // step) * step)
        try:
            out = self._opus_decode(b"", n)
        except self._error:
            return super().conceal(samples)
        pcm = np.zeros(samples, dtype=np.int16)
        pcm[: min(samples, out.size)] = out[:samples]
        return pcm


# --- registry ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How a codec appears in SDP (rtpmap) and how to build an instance of it."""

    encoding_name: str
    clock_rate: int
    channels: int
    static_payload_type: int | None
    factory: Callable[[dict[str, str], CodecTuning], Codec]

    @property
    def rtpmap(self) -> str:
        base = f"{self.encoding_name}/{self.clock_rate}"
        return f"{base}/{self.channels}" if self.channels != 1 else base


def parse_fmtp(fmtp: str | None) -> dict[str, str]:
    """`a=fmtp` parameters `k=v; k2=v2` into a dict with lower-case keys."""
    params: dict[str, str] = {}
    for part in (fmtp or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip() if sep else ""
    return params


@dataclass(frozen=True, slots=True)
class CodecTuning:
    """How this process runs codecs, beyond what SDP negotiates.

    `pcm_rate` is the rate the caller works at (the mixer's wideband rate): a codec that
    can run its PCM there does (Opus), saving a resampler each way; None keeps each codec's
    own rate (Opus at 48 kHz, fullband: a 1:1 gateway).  `opus_complexity` is libopus's
    encoder complexity, an operator's CPU-against-quality knob.
    """

    pcm_rate: int | None = None
    opus_complexity: int = OPUS_COMPLEXITY


DEFAULT_TUNING = CodecTuning()


def _opus_factory(params: dict[str, str], tuning: CodecTuning) -> Codec:
    # RFC 7587 §6.1: maxaveragebitrate caps what the receiver wants; useinbandfec asks
    # the sender for in-band FEC.
    bitrate = None
    if params.get("maxaveragebitrate", "").isdigit():
        bitrate = max(6000, min(510000, int(params["maxaveragebitrate"])))
    rate = tuning.pcm_rate if tuning.pcm_rate in OPUS_PCM_RATES else 48000
    return OpusCodec(
        sample_rate=rate,
        bitrate=bitrate,
        complexity=tuning.opus_complexity,
        inband_fec=params.get("useinbandfec") == "1",
    )


# Preference order for answers and offers: best wideband quality first, then the
# cheaper wideband codecs, narrowband last.
SUPPORTED: tuple[CodecSpec, ...] = (
    CodecSpec("opus", 48000, 2, None, _opus_factory),
    CodecSpec("G722", 8000, 1, 9, lambda _p, _t: G722Codec()),
    CodecSpec("speex", 16000, 1, None, lambda _p, _t: SpeexCodec(16000)),
    CodecSpec("PCMU", 8000, 1, 0, lambda _p, _t: PcmuCodec()),
    CodecSpec("PCMA", 8000, 1, 8, lambda _p, _t: PcmaCodec()),
    CodecSpec("speex", 8000, 1, None, lambda _p, _t: SpeexCodec(8000)),
)


def codec_for(
    encoding_name: str,
    clock_rate: int,
    channels: int = 1,
    fmtp: str | None = None,
    tuning: CodecTuning = DEFAULT_TUNING,
) -> Callable[[], Codec] | None:
    """A factory for the rtpmap `encoding_name/clock_rate/channels`, or None.

    Names compare case-insensitively (RFC 4855 §3).  Opus is matched with 2 channels
    as RFC 7587 §7 requires, and with 1 from lenient peers.
    """
    params = parse_fmtp(fmtp)
    name = encoding_name.lower()
    for spec in SUPPORTED:
        if spec.encoding_name.lower() != name or spec.clock_rate != clock_rate:
            continue
        if channels != spec.channels and not (name == "opus" and channels == 1):
            continue
        factory = spec.factory
        return lambda: factory(params, tuning)
    return None


# --- resampling --------------------------------------------------------------------


class Resampler:
    """Streaming rational resampler (8k / 16k / 48k) with a Kaiser-windowed sinc FIR.

    Polyphase form: output sample n sits at position n*down on the up-sampled grid;
    its phase picks one row of the filter, which is applied to the last `taps` input
    samples.  The filter passes 0 .. 0.425 * the lower rate (3.4 kHz for 8 kHz,
    6.8 kHz for 16 kHz) and stops at the lower Nyquist with about 70 dB attenuation
    (Kaiser beta 7, 64 taps per phase at the larger of the two ratios), so a 1 kHz tone
    stays a 1 kHz tone and images/aliases sit about 70 dB down.  Group delay is half
    the filter length (2-4 ms).  State carries across calls, so frames join without
    clicks and any split of the input gives the same output.  Pure up- or down-sampling
    (every ratio among 8k/16k/48k) runs as one matrix product per call: 20-45 µs per
    20 ms frame on one core.
    """

    TAPS_PER_PHASE = 64

    def __init__(self, rate_in: int, rate_out: int) -> None:
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError("rates must be positive")
        g = math.gcd(rate_in, rate_out)
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.up = rate_out // g
        self.down = rate_in // g
        self._passthrough = self.up == self.down
        if self._passthrough:
            return
        ratio = max(self.up, self.down)
        k = self.TAPS_PER_PHASE if self.up > 1 else self.TAPS_PER_PHASE * self.down
        k = max(k, 8)
        ntaps = k * self.up
        # Cut-off midway between the pass-band edge and the lower Nyquist frequency,
        # as a fraction of the up-sampled rate.
        fc = (0.425 + 0.5) / 2 / ratio
        n = np.arange(ntaps) - (ntaps - 1) / 2
        h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(ntaps, 7.0)
        h *= self.up / np.sum(h)  # unity gain after zero-stuffing
        # phases[p, j] = h[p + j*up]; reversed so a window of inputs dots straight in.
        self._phases = h.reshape(k, self.up).T[:, ::-1].copy()
        self._k = k
        self._history = np.zeros(k - 1, dtype=np.float64)
        self._t = 0  # next output's position on the up-sampled grid, relative

    def process(self, pcm: npt.ArrayLike) -> Pcm:
        x = _as_pcm(pcm)
        if self._passthrough:
            return x.copy()
        buf = np.concatenate([self._history, x.astype(np.float64)])
        limit = x.size * self.up
        views = np.lib.stride_tricks.sliding_window_view(buf, self._k)
        if self.down == 1:
            # Pure up-sampling: every input yields `up` outputs, one per phase.
            y = (views @ self._phases.T).reshape(-1)
            self._t = 0
        elif self.up == 1:
            # Pure down-sampling: every `down`-th window, one filter.
            y = views[self._t :: self.down] @ self._phases[0]
            last = self._t + (y.size - 1) * self.down
            self._t = (last + self.down - limit) if y.size else self._t - limit
        else:
            t = np.arange(self._t, limit, self.down)
            y = np.einsum("nk,nk->n", views[t // self.up], self._phases[t % self.up])
            self._t = (int(t[-1]) + self.down - limit) if t.size else self._t - limit
        self._history = buf[buf.size - (self._k - 1) :]
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)
