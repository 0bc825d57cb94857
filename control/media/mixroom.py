"""One room's mix, one 20 ms tick at a time (sans-IO).

Each tick every stream's jitter buffer is read once; the frames of participants who are
talking (voice activity with hysteresis), not muted, and sending (their SDP direction
sends) are summed once into `total`.  A listener hears `total` minus their own frame
(mix-minus), through a limiter.

Encoding is shared: every listener who is not in the mix hears exactly `total`, so for
each codec configuration the room keeps one shared encoder chain and encodes that mix
once per tick; only talkers (whose mix-minus differs) use their own chain.  With N silent
G.711 listeners that is one encode instead of N.  The RTP header and SRTP are still per
listener (own SSRC, sequence, timestamp and keys, RFC 3550 §5.1, RFC 3711).

A stateful encoder (G.722, Speex, Opus) whose listener moves between the shared and their
own chain continues from a different predictor state; the far decoder re-converges within
a few milliseconds, the price Asterisk's and FreeSWITCH's shared encoders pay as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from control.media.answer import Address, AudioTerms
from control.media.engine import (
    AudioEvent,
    ParticipantId,
    RoomId,
    StreamTimedOut,
    TalkingStarted,
    TalkingStopped,
)
from control.media.stream import EncoderChain, ParticipantStream, level_db

__all__ = ["MixCounters", "MixRoom", "Outgoing", "limit"]

Pcm = npt.NDArray[np.int16]
Outgoing = tuple[ParticipantId, bytes, Address]

_FULL = 32767
_SILENT_DB = -120.0
_KNEE = 24576  # 0.75 of full scale: below this the limiter is transparent


def limit(mix: npt.NDArray[np.int32]) -> Pcm:
    """int32 sum → int16 without wrap-around: linear below the knee, soft above it.

    Above the knee the excess is compressed with tanh so the output approaches but never
    reaches full scale; being stateless, the same mix always limits the same way, which
    keeps a shared mix shareable.
    """
    peak = int(np.max(np.abs(mix))) if mix.size else 0
    if peak <= _KNEE:
        return mix.astype(np.int16)
    x = mix.astype(np.float32)
    mag = np.abs(x)
    head = float(_FULL - _KNEE)
    soft = _KNEE + head * np.tanh((mag - _KNEE) / head)
    y = np.where(mag > _KNEE, np.sign(x) * soft, x)
    return np.clip(np.round(y), -_FULL, _FULL).astype(np.int16)


@dataclass(slots=True)
class MixCounters:
    """Work done, for metrics and the capacity benchmark."""

    ticks: int = 0  # mixer ticks run (all rooms at once)
    late_ticks: int = 0  # ticks that ran later than the lateness bound
    dropped_ticks: int = 0  # ticks skipped to catch up after a stall
    frames_mixed: int = 0  # listener frames sent
    frames_dropped: int = 0  # listener frames not sent because their tick was skipped
    encodes: int = 0  # encoder invocations (shared ones count once)
    packets_in: int = 0  # RTP accepted from participants

    def add(self, other: MixCounters) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class MixRoom:
    """The streams of one room and its shared encoders; `tick` makes one frame for all."""

    def __init__(
        self,
        room: RoomId,
        *,
        internal_rate: int = 16000,
        share_encoding: bool = True,
    ) -> None:
        self.room = room
        self.internal_rate = internal_rate
        self.share_encoding = share_encoding
        self.streams: dict[ParticipantId, ParticipantStream] = {}
        self._shared: dict[tuple[str, int, str], EncoderChain] = {}
        self._silence = np.zeros(internal_rate // 50, dtype=np.int32)

    def add(self, participant: ParticipantId, stream: ParticipantStream) -> None:
        self.streams[participant] = stream

    def remove(self, participant: ParticipantId) -> list[AudioEvent]:
        stream = self.streams.pop(participant, None)
        if stream is not None and stream.talk.reset() is False:
            return [TalkingStopped(self.room, participant)]
        return []

    def set_muted(self, participant: ParticipantId, muted: bool) -> list[AudioEvent]:
        stream = self.streams[participant]
        stream.muted = muted
        if muted and stream.talk.reset() is False:
            return [TalkingStopped(self.room, participant)]
        return []

    def _shared_chain(self, terms: AudioTerms) -> EncoderChain:
        chain = self._shared.get(terms.codec_key)
        if chain is None:
            chain = EncoderChain(terms.codec_factory(), self.internal_rate)
            self._shared[terms.codec_key] = chain
        return chain

    def tick(
        self,
        now: float,
        counters: MixCounters,
        events: list[AudioEvent],
        out: list[Outgoing],
        *,
        rtp_timeout: float,
    ) -> None:
        """Mix one frame: append datagrams to `out` and talking/timeout events to `events`."""
        room = self.room
        contributions: dict[ParticipantId, Pcm] = {}
        for pid, stream in self.streams.items():
            frame = stream.pull(now)
            if stream.check_timeout(now, rtp_timeout):
                events.append(StreamTimedOut(room, pid))
            if stream.muted or not stream.terms.direction.sends:
                if stream.talk.reset() is False:
                    events.append(TalkingStopped(room, pid))
                continue
            # A gap (re-buffering after an SSRC change, DTX) is silence: the hangover
            # bridges it instead of ending the talkspurt at once.
            change = stream.talk.update(_SILENT_DB if frame is None else level_db(frame))
            if change is not None:
                events.append(TalkingStarted(room, pid) if change else TalkingStopped(room, pid))
            if frame is None:
                continue
            if stream.talk.talking:
                contributions[pid] = stream.to_internal(frame)
            else:
                stream.skip_frame(frame)
        total = self._silence
        if contributions:
            total = np.zeros(total.size, dtype=np.int32)
            for frame in contributions.values():
                total += frame[: total.size]
        shared_pcm: Pcm | None = None
        shared_payloads: dict[tuple[str, int, str], bytes] = {}
        for pid, stream in self.streams.items():
            dest = stream.destination
            if dest is None:
                continue
            own = contributions.get(pid)
            if own is not None:
                payload = stream.private.encode(limit(total - own))
                counters.encodes += 1
            elif not self.share_encoding:
                if shared_pcm is None:
                    shared_pcm = limit(total)
                payload = stream.private.encode(shared_pcm)
                counters.encodes += 1
            else:
                key = stream.terms.codec_key
                cached = shared_payloads.get(key)
                if cached is None:
                    if shared_pcm is None:
                        shared_pcm = limit(total)
                    chain = self._shared_chain(stream.terms)
                    cached = shared_payloads[key] = chain.encode(shared_pcm)
                    counters.encodes += 1
                payload = cached
            out.append((pid, stream.packet(payload), dest))
            counters.frames_mixed += 1
        self._forget_unused(shared_payloads)

    def _forget_unused(self, used: dict[tuple[str, int, str], bytes]) -> None:
        """Drop shared chains no listener uses any more (a codec left with its last user)."""
        if len(self._shared) > len(used):
            keys = {s.terms.codec_key for s in self.streams.values()}
            for key in [k for k in self._shared if k not in keys]:
                del self._shared[key]

    def skip(self, frames: int, counters: MixCounters) -> None:
        """Ticks dropped after a stall: listeners' timestamps move on, frames count lost."""
        for stream in self.streams.values():
            if stream.destination is not None:
                stream.skip(frames)
                counters.frames_dropped += frames
