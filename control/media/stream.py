"""One participant's audio stream in the embedded mixer (sans-IO).

Receive side: datagram → SRTP unprotect → RTP parse → source validation → jitter buffer;
once per mixer tick the buffer's next packet is decoded (or concealed) and resampled to
the mixer's internal rate.  Send side: a payload the mixer encoded (possibly shared with
other listeners) gets this participant's own RTP header and SRTP protection.

Nothing here touches a socket or a clock: datagrams arrive with `now`, ticks pass `now`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from control.media.answer import PTIME_MS, Address, AudioTerms
from control.media.codecs import Codec, CodecError, CodecTuning
from control.media.dtmf import DtmfReceiver
from control.media.jitter import Frame, JitterBuffer
from control.media.polyphase import resampler
from control.media.rtcp import RtcpError
from control.media.rtcpsession import RtcpSession
from control.media.rtp import RtpError, RtpPacket, RtpSender, SequenceTracker, is_rtcp
from control.media.srtp import SrtpContext, SrtpError

__all__ = [
    "PYTHON_KIT",
    "EncoderChain",
    "MediaKit",
    "ParticipantStream",
    "SourceFilter",
    "StreamStats",
    "TalkDetector",
]

Pcm = npt.NDArray[np.int16]


class SourceFilter:
    """Which SSRC we listen to (RFC 3550 §8.2 / Appendix A.1 source validation).

    The current source's packets pass straight through A.1's checks.  A packet with another
    SSRC goes to a candidate tracker and the stream switches only once that candidate has
    sent `min_sequential` packets in sequence: a real SSRC change (a phone restarting its
    stream) is followed within two packets, while garbage that happens to look like RTP
    never displaces the talker, nor does it move where we send (symmetric RTP latching).
    """

    def __init__(
        self, min_sequential: int = 2, tracker: type[SequenceTracker] = SequenceTracker
    ) -> None:
        self._min = min_sequential
        self._tracker = tracker
        self._current = tracker(min_sequential=min_sequential)
        self._candidate = tracker(min_sequential=min_sequential)
        self.changes = 0

    @property
    def ssrc(self) -> int | None:
        return self._current.ssrc

    def accept(self, packet: RtpPacket) -> bool:
        if packet.ssrc == self._current.ssrc:
            return self._current.update(packet.ssrc, packet.sequence).valid
        if not self._candidate.update(packet.ssrc, packet.sequence).valid:
            return False
        if self._current.ssrc is not None:
            self.changes += 1
        self._current = self._candidate
        self._candidate = self._tracker(min_sequential=self._min)
        return True


class TalkDetector:
    """Energy voice activity with hysteresis: who is talking, and who gets mixed.

    Onset is immediate (one frame above `start_db`) so no syllable is clipped; release
    needs `hangover` frames below `stop_db`, which bridges the pauses between words.
    Levels are RMS in dB relative to full scale.
    """

    def __init__(
        self, *, start_db: float = -42.0, stop_db: float = -48.0, hangover: int = 20
    ) -> None:
        self.start_db = start_db
        self.stop_db = stop_db
        self.hangover = hangover
        self.talking = False
        self._quiet = 0

    def update(self, level_db: float) -> bool | None:
        """Feed one frame's level; returns the new state on a transition, else None."""
        if level_db >= self.start_db:
            self._quiet = 0
            if not self.talking:
                self.talking = True
                return True
            return None
        if self.talking and level_db < self.stop_db:
            self._quiet += 1
            if self._quiet >= self.hangover:
                self.talking = False
                self._quiet = 0
                return False
        return None

    def reset(self) -> bool | None:
        """Stop at once (mute, stream stopped); returns False if that is a transition."""
        self._quiet = 0
        if self.talking:
            self.talking = False
            return False
        return None


def level_db(frame: Pcm) -> float:
    """RMS level of an int16 frame in dBFS (silence floors at -120)."""
    x = frame.astype(np.float32)
    mean_square = float(np.dot(x, x)) / max(1, x.size)
    return 10.0 * math.log10(max(mean_square, 1e-12) / (32768.0 * 32768.0))


class EncoderChain:
    """Resample the mixer's internal-rate PCM to a codec's rate and encode it.

    Both stages keep state across frames (filter history, ADPCM/CELP predictors), so a
    chain serves one continuous audio stream: one listener's own mix-minus, or the full
    mix shared by every silent listener with the same codec.
    """

    def __init__(self, factory: Callable[[], Codec], internal_rate: int) -> None:
        self.codec = factory()
        self._resampler = resampler(internal_rate, self.codec.sample_rate)
        self._samples = self.codec.frame_samples(PTIME_MS)
        self.encodes = 0
        # A stateless codec at the mixer's own rate (G.711 in a room mixed at 8 kHz): its
        # encode is one table lookup, which the mixer does for many listeners at once.
        self.table = self.codec.table if internal_rate == self.codec.sample_rate else None

    def encode(self, pcm: Pcm) -> bytes:
        out = self._resampler.process(pcm)
        if out.size != self._samples:
            out = np.resize(out, self._samples)
        self.encodes += 1
        return self.codec.encode(out)


WIDEBAND_RATE = 16000  # what a room with any wideband codec mixes at
# A mixer's codecs run their PCM at the wideband mixing rate where they can (Opus: libopus
# at 16 kHz, no 16 <-> 48 kHz resampler either way); [rtp] opus_complexity is the mixer's.
MIXER_TUNING = CodecTuning(pcm_rate=WIDEBAND_RATE)


def _construct(factory: Callable[[], Codec]) -> Codec:
    return factory()


@dataclass(frozen=True, slots=True)
class MediaKit:
    """The per-packet pieces a stream runs: Python's (the reference, the default) or the
    native media loop's (`control.media.native.kit()`), which give the same results."""

    parse: Callable[[bytes], RtpPacket] = RtpPacket.parse
    jitter_buffer: type[JitterBuffer] = JitterBuffer
    tracker: type[SequenceTracker] = SequenceTracker
    # The stream's decoder from the codec's factory (native: G.711 decoded in C).
    decoder: Callable[[Callable[[], Codec]], Codec] = _construct


PYTHON_KIT = MediaKit()


@dataclass(slots=True)
class StreamStats:
    received: int = 0  # RTP packets accepted into the jitter buffer
    garbage: int = 0  # datagrams that were not RTP
    auth_failures: int = 0  # SRTP authentication or replay failures
    rejected: int = 0  # RTP from a source not (yet) validated
    foreign: int = 0  # payload types we did not negotiate (CN, telephone-event, …)
    decode_errors: int = 0
    sent: int = 0
    rtcp_received: int = 0  # RTCP compounds read (sender/receiver reports)
    rtcp_errors: int = 0  # RTCP that failed SRTCP authentication or did not parse


class ParticipantStream:
    """Both directions of one participant's RTP stream; see the module docstring."""

    def __init__(
        self,
        terms: AudioTerms,
        *,
        rng: random.Random,
        now: float,
        internal_rate: int = WIDEBAND_RATE,
        talk: TalkDetector | None = None,
        rtcp_interval: float = 5.0,  # RFC 3550 §6.2 minimum report interval
        wall_offset: float = 0.0,  # wall clock minus `now`'s clock, for RTCP's NTP times
        cname: str = "chorus",  # RFC 3550 §6.5.1 CNAME in our SDES
        kit: MediaKit = PYTHON_KIT,  # Python's per-packet pieces or the native loop's
        tuning: CodecTuning = MIXER_TUNING,  # codec rate and settings (the mixer's)
    ) -> None:
        self.internal_rate = internal_rate
        self.tuning = tuning
        self._kit = kit
        self._parse = kit.parse
        self.stats = StreamStats()
        self.talk = talk or TalkDetector()
        self.muted = False
        self.deaf = False  # sent nothing of the room (awaiting its PIN)
        self.latched: Address | None = None
        self.rtcp_latched: Address | None = None  # where the peer's RTCP comes from
        self.last_rtp = now
        self.timed_out = False
        self.failing = 0  # consecutive ticks this stream's frame failed (see MixRoom)
        self._dtmf = DtmfReceiver()
        self.digits: list[str] = []  # keys pressed since the last tick (DtmfReceived events)
        self._rng = rng
        self._srtp: SrtpContext | None = None
        self.terms = terms
        self._configure(terms, now, first=True)
        self.rtcp = RtcpSession(
            ssrc=self._sender.ssrc,
            clock_rate=terms.rtpmap.clock_rate,
            cname=cname,
            rng=rng,
            now=now,
            wall_offset=wall_offset,
            min_interval=rtcp_interval,
            tracker=kit.tracker,
        )

    def _configure(self, terms: AudioTerms, now: float, *, first: bool) -> None:
        old = None if first else self.terms
        self.terms = terms
        kit = self._kit
        if old is None or old.crypto != terms.crypto:
            self._srtp = terms.crypto.context() if terms.crypto is not None else None
        if old is None or (old.codec_key, old.payload_type) != (
            terms.codec_key,
            terms.payload_type,
        ):
            factory = terms.codec_factory(self.tuning)
            self._factory = factory
            self._decoder = kit.decoder(factory)
            self._upsampler = resampler(self._decoder.sample_rate, self.internal_rate)
            self.frame_samples = self._decoder.frame_samples(PTIME_MS)
            self._jitter = kit.jitter_buffer(terms.rtpmap.clock_rate, ptime_ms=PTIME_MS)
            self._fifo: list[Pcm] = []
            self._fifo_len = 0
            self.private = EncoderChain(factory, self.internal_rate)
            if old is None:
                self._sender = RtpSender(terms.payload_type, self._rng)
            else:
                # RFC 3550 §5.1: a payload type change keeps the SSRC; a new clock rate
                # only moves the timestamp on from where it is.
                self._sender.payload_type = terms.payload_type
                self._sender.skip(0)
                self.rtcp.set_clock_rate(terms.rtpmap.clock_rate)
            self._ts_step = self.private.codec.timestamp_step(PTIME_MS)
            self._source = SourceFilter(tracker=kit.tracker)
        if old is not None and old.direction.sends != terms.direction.sends:
            self.last_rtp = now  # the RTP timeout counts from when sending is expected
            self.timed_out = False

    def update(self, terms: AudioTerms, now: float) -> None:
        """A re-offer: new direction, address, keys or codec; the SSRC we send stays."""
        self._configure(terms, now, first=False)

    @property
    def codec_rate(self) -> int:
        """The PCM rate of this participant's codec (what the room's mixing rate follows)."""
        return self._decoder.sample_rate

    def set_internal_rate(self, rate: int) -> None:
        """The room now mixes at `rate`: new resamplers, a new private encoder chain.

        Happens when a room's first wideband participant joins (or its last one leaves);
        the filter histories start afresh, a few milliseconds of transient at that moment.
        """
        if rate == self.internal_rate:
            return
        self.internal_rate = rate
        self._upsampler = resampler(self._decoder.sample_rate, rate)
        self.private = EncoderChain(self._factory, rate)

    # --- receive ---------------------------------------------------------------------

    def receive(self, data: bytes, addr: Address, now: float) -> None:
        """One datagram on our RTP port.  Bad input is counted and dropped, never raised."""
        if self.terms.rtcp_mux and is_rtcp(data):
            self.receive_rtcp(data, addr, now)  # RFC 5761 §4: RTCP on the RTP port
            return
        if self._srtp is not None:
            try:
                data = self._srtp.unprotect(data)
            except SrtpError:
                self.stats.auth_failures += 1
                return
        try:
            packet = self._parse(data)
        except RtpError:
            self.stats.garbage += 1
            return
        if packet.payload_type != self.terms.payload_type:
            # telephone-event, comfort noise or a stray format: not audio for the mix
            self.stats.foreign += 1
            if packet.payload_type == self.terms.telephone_event and self._source.ssrc in (
                None,
                packet.ssrc,
            ):
                self._alive(addr, now)
                # Key presses, once each (RFC 4733 §2.5.2), read by the mix tick.
                self.digits.extend(d.digit for d in self._dtmf.receive(packet))
            return
        if not self._source.accept(packet):
            self.stats.rejected += 1
            return
        self.stats.received += 1
        self._jitter.put(packet, now)
        self.rtcp.on_rtp(packet, now)
        self._alive(addr, now)

    def receive_rtcp(self, data: bytes, addr: Address, now: float) -> bool:
        """One RTCP datagram (muxed or on the RTCP port); bad ones are counted, never raised."""
        try:
            if self._srtp is not None:
                data = self._srtp.unprotect_rtcp(data)  # RFC 3711 §3.4 SRTCP
            self.rtcp.receive(data, now)
        except (SrtpError, RtcpError):
            self.stats.rtcp_errors += 1
            return False
        self.stats.rtcp_received += 1
        self.rtcp_latched = (str(addr[0]), int(addr[1]))
        return True

    def _alive(self, addr: Address, now: float) -> None:
        self.latched = (str(addr[0]), int(addr[1]))  # RFC 4961 symmetric RTP
        self.last_rtp = now
        self.timed_out = False

    def check_timeout(self, now: float, timeout: float) -> bool:
        """True exactly once when a sending participant has been silent for `timeout`."""
        if self.timed_out or not self.terms.direction.sends:
            return False
        if now - self.last_rtp >= timeout:
            self.timed_out = True
            return True
        return False

    # --- playout ---------------------------------------------------------------------

    def pull(self, now: float) -> Pcm | None:
        """This tick's frame at the codec's rate, or None when the stream is not playing.

        Packets of any ptime are decoded into a FIFO and taken out 20 ms at a time, so a
        30 ms or 10 ms sender plays at its own pace.  A lost packet is concealed by the
        codec (RFC 3550 leaves concealment to the receiver).
        """
        n = self.frame_samples
        while self._fifo_len < n:
            item = self._jitter.get(now)
            if item is None:
                self._fifo.clear()
                self._fifo_len = 0
                return None
            codec = self._decoder
            if isinstance(item, Frame):
                try:
                    pcm = codec.decode(item.payload)
                except CodecError:
                    self.stats.decode_errors += 1
                    pcm = codec.conceal(self._packet_samples())
            else:
                pcm = codec.conceal(self._packet_samples())
            if pcm.size:
                self._fifo.append(pcm)
                self._fifo_len += pcm.size
        if len(self._fifo) == 1 and self._fifo_len == n:
            frame = self._fifo.pop()
            self._fifo_len = 0
            return frame
        whole = np.concatenate(self._fifo)
        frame, rest = whole[:n], whole[n:]
        self._fifo = [rest] if rest.size else []
        self._fifo_len = rest.size
        return frame

    def to_internal(self, frame: Pcm) -> Pcm:
        """A pulled frame at the mixer's rate, for mixing."""
        return self._upsampler.process(frame)

    def skip_frame(self, frame: Pcm) -> None:
        """A pulled frame that is not mixed: only the resampler's history takes it."""
        prime = getattr(self._upsampler, "prime", None)
        if prime is not None:
            prime(frame)

    def _packet_samples(self) -> int:
        seconds = self._jitter.frame_duration
        return max(1, int(round(seconds * self._decoder.sample_rate)))

    # --- send ------------------------------------------------------------------------

    @property
    def destination(self) -> Address | None:
        """Where the mix goes: the latched source once RTP arrived, else the SDP address."""
        if not self.terms.direction.receives:
            return None  # RFC 3264 §5.1: they are not receiving (hold, recvonly from us)
        return self.latched or self.terms.remote

    def packet(self, payload: bytes, now: float | None = None) -> bytes:
        """Wrap a (possibly shared) payload in our RTP header and SRTP for this listener.

        `now` (the tick's time) lets our sender reports relate RTP and NTP time.
        """
        data, timestamp = self._sender.stamp_bytes(payload, self._ts_step)
        self.stats.sent += 1
        if now is not None:
            self.rtcp.on_sent(timestamp, len(payload), now)
        if self._srtp is not None:
            return self._srtp.protect(data)
        return data

    def skip(self, frames: int) -> None:
        """Frames we did not send (dropped ticks): keep the timestamp in real time."""
        self._sender.skip(self._ts_step * frames)

    # --- RTCP ------------------------------------------------------------------------

    @property
    def rtcp_destination(self) -> Address | None:
        """Where our reports go: the RTP address with rtcp-mux (RFC 5761 §5.1.3), else the
        address the peer's RTCP came from, else its RTP address with port + 1 (RFC 3550
        §11; an a=rtcp port from RFC 3605 is not read yet)."""
        rtp = self.latched or self.terms.remote
        if self.terms.rtcp_mux:
            return rtp
        if self.rtcp_latched is not None:
            return self.rtcp_latched
        return (rtp[0], rtp[1] + 1) if rtp is not None else None

    def rtcp_report(self, now: float) -> bytes:
        """Our next compound report (SRTCP-protected when the stream is SRTP)."""
        data = self.rtcp.report(now)
        if self._srtp is not None:
            return self._srtp.protect_rtcp(data)
        return data
