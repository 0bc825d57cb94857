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

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from control.media.answer import Address, AudioTerms
from control.media.codecs import CodecTuning
from control.media.engine import (
    AudioEvent,
    DtmfReceived,
    ParticipantId,
    RoomId,
    StreamFailed,
    StreamTimedOut,
    TalkingStarted,
    TalkingStopped,
)
from control.media.faults import FaultLog
from control.media.stream import (
    MIXER_TUNING,
    WIDEBAND_RATE,
    EncoderChain,
    ParticipantStream,
    level_db,
)

__all__ = ["MixCounters", "MixRoom", "Outgoing", "limit"]

Pcm = npt.NDArray[np.int16]
Outgoing = tuple[ParticipantId, bytes, Address]
# control/media/native's mix_minus(frames, size, tables) -> (total, rows, payloads)
NativeMixMinus = Callable[
    [list[Pcm], int, list[npt.NDArray[np.uint8] | None]],
    tuple[bytearray, bytearray | None, list[bytes | None] | None],
]

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


def limit_rows(mixes: npt.NDArray[np.int32]) -> npt.NDArray[np.int16]:
    """`limit` of every row at once, the same samples as row by row.

    `limit`'s formula is the identity below the knee, so a row whose own peak is below it
    comes out the same whether or not the formula ran on it: one peak over the whole
    matrix decides, as `limit` decides for one row.
    """
    if not mixes.size or int(np.max(np.abs(mixes))) <= _KNEE:
        return mixes.astype(np.int16)
    return limit(mixes)


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
    listener_errors: int = 0  # a listener's frame not made: decode, encode or SRTP raised
    room_errors: int = 0  # a room's tick raised outside any one listener
    send_errors: int = 0  # datagrams the socket refused (sendto, ICMP via error_received)
    streams_failed: int = 0  # listeners reported failed after `max_failing` ticks in a row
    rooms_failed: int = 0  # rooms ended after `max_failing` failed ticks in a row
    rtcp_sent: int = 0  # RTCP compound packets sent (sender/receiver reports)
    rtcp_received: int = 0  # RTCP compound packets read from participants
    rtcp_errors: int = 0  # RTCP datagrams that did not parse or authenticate

    def add(self, other: MixCounters) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


_CodecKey = tuple[str, int, str]


class _SharedEncodeFailed(Exception):
    """The shared encoder for a codec failed earlier in this tick: its listeners get no frame."""


class MixRoom:
    """The streams of one room and its shared encoders; `tick` makes one frame for all.

    Faults are contained where they happen: a stream whose decode, encode or SRTP protect
    raises loses its own frame this tick and nobody else's.  A listener that fails
    `max_failing` ticks in a row is reported (`StreamFailed`) once; a room in which no
    listener got a frame for `max_failing` ticks in a row (or whose tick keeps raising, see
    `note_failure`) reports `failed`, and the mixer ends it.
    """

    def __init__(
        self,
        room: RoomId,
        *,
        internal_rate: int = WIDEBAND_RATE,
        share_encoding: bool = True,
        max_failing: int = 100,  # 2 s of 20 ms ticks: longer than any transient glitch
        fast: bool = True,
        narrowband: bool = True,
        level: Callable[[Pcm], float] = level_db,  # a frame's dBFS, or the native level_db
        mix_minus: NativeMixMinus | None = None,  # the native mix_minus (control/media/native)
        tuning: CodecTuning = MIXER_TUNING,  # the shared encoders' codec settings
    ) -> None:
        self.room = room
        self.tuning = tuning
        self._level = level
        self._native_mix = mix_minus
        self.internal_rate = internal_rate
        # The rate wideband rooms mix at; with `narrowband`, a room whose every codec is
        # 8 kHz (G.711, Speex-NB) mixes at 8 kHz: no resampling at all.
        self.wideband_rate = internal_rate
        self.narrowband = narrowband
        # fast: mix-minus for every talker as one matrix, G.711 encodes as one lookup;
        # False is the reference (one listener at a time), kept for differential tests.
        self.fast = fast
        self.share_encoding = share_encoding
        self.max_failing = max_failing
        self.streams: dict[ParticipantId, ParticipantStream] = {}
        self.failing = 0  # consecutive failed ticks of the room as a whole
        self.last_error = ""
        self.ended = False  # failed and no longer mixed; waits for its participants to leave
        self._shared: dict[_CodecKey, EncoderChain] = {}
        self._silence = np.zeros(internal_rate // 50, dtype=np.int32)
        # Per-tick state, set at the start of each tick (the helpers below read it).
        self._shared_pcm: Pcm | None = None
        self._own_pcm: dict[ParticipantId, Pcm] = {}
        self._own_payloads: dict[ParticipantId, bytes] = {}
        self._faults: FaultLog | None = None
        self._now = 0.0

    def add(self, participant: ParticipantId, stream: ParticipantStream) -> None:
        self.streams[participant] = stream
        self.retune()

    def retune(self) -> None:
        """Choose the mixing rate for the codecs now in the room (after a join, a leave or
        a codec change) and move every stream to it."""
        rate = self.wideband_rate
        streams = self.streams.values()
        if self.narrowband and streams and all(s.codec_rate == 8000 for s in streams):
            rate = 8000
        if rate != self.internal_rate:
            self.internal_rate = rate
            self._shared.clear()
            self._silence = np.zeros(rate // 50, dtype=np.int32)
        for stream in self.streams.values():
            stream.set_internal_rate(rate)

    def remove(self, participant: ParticipantId) -> list[AudioEvent]:
        stream = self.streams.pop(participant, None)
        if self.streams:
            self.retune()
        if stream is not None and stream.talk.reset() is False:
            return [TalkingStopped(self.room, participant)]
        return []

    def set_muted(self, participant: ParticipantId, muted: bool) -> list[AudioEvent]:
        stream = self.streams[participant]
        stream.muted = muted
        if muted and stream.talk.reset() is False:
            return [TalkingStopped(self.room, participant)]
        return []

    @property
    def failed(self) -> bool:
        return self.failing >= self.max_failing

    def note_failure(self, exc: BaseException) -> None:
        """The tick raised outside any one listener (the mixer caught it): one failed tick."""
        self.failing += 1
        self.last_error = repr(exc)

    def _shared_chain(self, terms: AudioTerms) -> EncoderChain:
        chain = self._shared.get(terms.codec_key)
        if chain is None:
            chain = EncoderChain(terms.codec_factory(self.tuning), self.internal_rate)
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
        faults: FaultLog | None = None,
    ) -> None:
        """Mix one frame: append datagrams to `out` and talking/timeout events to `events`."""
        room = self.room
        self._faults, self._now = faults, now
        failed: dict[ParticipantId, BaseException] = {}
        contributions: dict[ParticipantId, Pcm] = {}
        for pid, stream in self.streams.items():
            try:
                frame = self._contribution(pid, stream, now, events, rtp_timeout)
            except Exception as exc:  # a decoder or resampler bug: this talker is not mixed
                failed[pid] = exc
                self._fault(faults, ("receive", room, pid), f"room {room}: reading {pid}", exc, now)
                continue
            if frame is not None:
                contributions[pid] = frame
        total = self._silence
        self._own_pcm = {}
        self._own_payloads = {}
        if contributions and self.fast:
            total = self._mix_minus(contributions)
        elif contributions:
            total = np.zeros(total.size, dtype=np.int32)
            for frame in contributions.values():
                total += frame[: total.size]
        self._shared_pcm = None
        shared_payloads: dict[_CodecKey, bytes | None] = {}
        sent = 0
        for pid, stream in self.streams.items():
            dest = stream.destination
            if dest is None or stream.deaf:
                continue
            try:
                payload = self._payload(
                    pid, stream, contributions, total, shared_payloads, counters
                )
                data = stream.packet(payload, now)
            except _SharedEncodeFailed as exc:
                failed[pid] = exc.__cause__ or exc
                continue  # logged once for the codec, below in _payload
            except Exception as exc:  # codec or SRTP error for this listener only
                failed[pid] = exc
                self._fault(faults, ("send", room, pid), f"room {room}: sending to {pid}", exc, now)
                continue
            out.append((pid, data, dest))
            counters.frames_mixed += 1
            sent += 1
        for pid, error in failed.items():
            counters.listener_errors += 1
            stream = self.streams[pid]
            stream.failing += 1
            if stream.failing == self.max_failing:
                counters.streams_failed += 1
                events.append(StreamFailed(room, pid, repr(error)))
        for pid, stream in self.streams.items():
            if pid not in failed:
                stream.failing = 0
        if failed and not sent:
            self.failing += 1
            self.last_error = repr(next(iter(failed.values())))
        else:
            self.failing = 0
        self._forget_unused(shared_payloads)

    def _contribution(
        self,
        pid: ParticipantId,
        stream: ParticipantStream,
        now: float,
        events: list[AudioEvent],
        rtp_timeout: float,
    ) -> Pcm | None:
        """Read this stream's frame for the tick; its PCM if it is mixed, else None."""
        room = self.room
        frame = stream.pull(now)
        if stream.digits:
            events.extend(DtmfReceived(room, pid, digit) for digit in stream.digits)
            stream.digits.clear()
        if stream.check_timeout(now, rtp_timeout):
            events.append(StreamTimedOut(room, pid))
        if stream.muted or not stream.terms.direction.sends:
            if stream.talk.reset() is False:
                events.append(TalkingStopped(room, pid))
            return None
        # A gap (re-buffering after an SSRC change, DTX) is silence: the hangover
        # bridges it instead of ending the talkspurt at once.
        change = stream.talk.update(_SILENT_DB if frame is None else self._level(frame))
        if change is not None:
            events.append(TalkingStarted(room, pid) if change else TalkingStopped(room, pid))
        if frame is None:
            return None
        if stream.talk.talking:
            return stream.to_internal(frame)
        stream.skip_frame(frame)
        return None

    def _payload(
        self,
        pid: ParticipantId,
        stream: ParticipantStream,
        contributions: dict[ParticipantId, Pcm],
        total: npt.NDArray[np.int32],
        shared_payloads: dict[_CodecKey, bytes | None],
        counters: MixCounters,
    ) -> bytes:
        """This listener's encoded frame: their own mix-minus, or the shared full mix."""
        own = contributions.get(pid)
        if own is not None:
            counters.encodes += 1
            if self.fast:
                payload = self._own_payloads.get(pid)
                if payload is not None:
                    return payload
                return stream.private.encode(self._own_pcm[pid])
            return stream.private.encode(limit(total - own))
        if self._shared_pcm is None:
            self._shared_pcm = limit(total)
        if not self.share_encoding:
            counters.encodes += 1
            return stream.private.encode(self._shared_pcm)
        key = stream.terms.codec_key
        if key in shared_payloads:
            cached = shared_payloads[key]
            if cached is None:
                raise _SharedEncodeFailed(key)
            return cached
        counters.encodes += 1
        try:
            cached = self._shared_chain(stream.terms).encode(self._shared_pcm)
        except Exception as exc:
            shared_payloads[key] = None
            # A fresh chain next tick: a stateful encoder may not recover by itself.
            self._shared.pop(key, None)
            context = f"room {self.room}: encoding {key[0]}/{key[1]}"
            self._fault(self._faults, ("encode", self.room, key), context, exc, self._now)
            raise _SharedEncodeFailed(key) from exc
        shared_payloads[key] = cached
        return cached

    def _mix_minus(self, contributions: dict[ParticipantId, Pcm]) -> npt.NDArray[np.int32]:
        """The fast path: every talker's limited mix-minus at once; returns the total.

        One int32 matrix of the talkers' frames: total = column sums, each talker's mix is
        total minus their own row, limited as a matrix (`limit_rows`).  Talkers whose
        encoder is a table at this rate (G.711 in a room mixed at 8 kHz) get their
        payloads from one lookup over all their rows; the others encode their row later.
        """
        if self._native_mix is not None:
            native = self._mix_minus_native(contributions)
            if native is not None:
                return native
        size = self._silence.size
        pids = list(contributions)
        frames = np.stack([frame[:size] for frame in contributions.values()]).astype(np.int32)
        total = frames.sum(axis=0, dtype=np.int32)
        limited = limit_rows(total - frames)
        own = self._own_pcm
        tables: dict[int, tuple[npt.NDArray[np.uint8], list[int]]] = {}
        for row, pid in enumerate(pids):
            own[pid] = limited[row]
            table = self.streams[pid].private.table
            if table is not None:
                tables.setdefault(id(table), (table, []))[1].append(row)
        for table, rows in tables.values():
            codes = table[limited[rows].view(np.uint16) ^ 0x8000]
            for row, code in zip(rows, codes, strict=True):
                pid = pids[row]
                self.streams[pid].private.encodes += 1
                self._own_payloads[pid] = code.tobytes()
        return total

    def _mix_minus_native(
        self, contributions: dict[ParticipantId, Pcm]
    ) -> npt.NDArray[np.int32] | None:
        """`_mix_minus` in one C call; None when the limiter engages (numpy's tanh then, the
        reference's floating point)."""
        assert self._native_mix is not None
        size = self._silence.size
        pids = list(contributions)
        streams = self.streams
        tables = [streams[pid].private.table for pid in pids]
        total, rows, payloads = self._native_mix(list(contributions.values()), size, tables)
        if rows is None or payloads is None:
            return None
        limited = np.frombuffer(rows, dtype=np.int16).reshape(len(pids), size)
        own = self._own_pcm
        for row, pid in enumerate(pids):
            own[pid] = limited[row]
            payload = payloads[row]
            if payload is not None:
                streams[pid].private.encodes += 1
                self._own_payloads[pid] = payload
        return np.frombuffer(total, dtype=np.int32)

    def _fault(
        self, faults: FaultLog | None, key: Hashable, context: str, exc: BaseException, now: float
    ) -> None:
        if faults is not None:
            faults.report(key, context, exc, now)

    def _forget_unused(self, used: dict[_CodecKey, bytes | None]) -> None:
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
