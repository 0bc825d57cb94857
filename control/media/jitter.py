"""Adaptive jitter buffer for one received RTP audio stream (sans-IO).

The mixer calls `get(now)` once per 20 ms playout tick and receives the next packet in
sequence (`Frame`), a `Lost` marker to conceal, or None while nothing is playing.  The
network side calls `put(packet, arrival)` whenever a packet arrives.  Nothing reads a
clock: both sides pass their own `now`.

How the delay adapts:

* The target delay is one frame plus `jitter_factor` times the interarrival jitter,
  estimated as in RFC 3550 Appendix A.8, bounded to [min_delay, max_delay].
* Growing is automatic: when a tick finds the buffer empty the buffer returns
  `Lost(underrun=True)` *without* advancing, so the late packet still plays, one frame
  later than planned (the playout stretches by one concealed frame).
* Shrinking is measured: over each `adapt_window` ticks the buffer records the lowest
  depth it saw.  If even that minimum exceeds the target by a frame or more, the
  delay is surplus, so frames are dropped (half the surplus at a time).  The same rule
  absorbs clock drift: a sender whose clock runs fast slowly fills the buffer and loses
  a frame every now and then; a slow one underruns and gets a concealed frame.
* Packets are ordered by extended sequence number (wrap-around safe); duplicates and
  packets whose turn has passed are dropped; a missing packet whose successors are
  already here is reported `Lost(underrun=False)` for concealment.
* A new SSRC, or a sequence jump too large to be loss (RFC 3550 A.1's reasoning), flushes
  the buffer and starts again.  After `max_concealed` consecutive underruns the
  stream is taken as stopped (DTX, hold) and `get` returns None until packets return.

Feed it every packet of the SSRC (telephone-event and comfort noise included) and
dispatch on `frame.packet.payload_type` on the way out: they share the sequence space,
so filtering some out beforehand would make them look lost.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from control.media.rtp import RtpPacket, seq_delta, ts_delta

__all__ = ["Arrival", "Frame", "JitterBuffer", "JitterStats", "Lost"]


@dataclass(frozen=True, slots=True)
class Frame:
    """The next packet to decode and play."""

    packet: RtpPacket

    @property
    def payload(self) -> bytes:
        return self.packet.payload

    @property
    def sequence(self) -> int:
        return self.packet.sequence

    @property
    def timestamp(self) -> int:
        return self.packet.timestamp


@dataclass(frozen=True, slots=True)
class Lost:
    """Conceal one frame.  `underrun` is True when the packet may still arrive late."""

    sequence: int
    underrun: bool = False


class Arrival(enum.Enum):
    """What `put` did with a packet."""

    QUEUED = "queued"
    DUPLICATE = "duplicate"
    LATE = "late"  # its playout turn has passed
    RESET = "reset"  # queued after flushing: new SSRC or a jump
    IGNORED = "ignored"  # far outside the window; kept in mind in case the sender restarted


class _State(enum.Enum):
    IDLE = "idle"
    BUFFERING = "buffering"
    PLAYING = "playing"


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0  # gaps declared lost (a successor was already buffered)
    concealed: int = 0  # underrun ticks (playout stretched)
    dropped: int = 0  # frames dropped to shrink the delay (drift, surplus)
    duplicates: int = 0
    late: int = 0
    resets: int = 0


class JitterBuffer:
    """One stream's adaptive playout buffer; see the module docstring for the policy."""

    def __init__(
        self,
        clock_rate: int,
        *,
        ptime_ms: int = 20,
        min_delay: float = 0.04,  # seconds; below two frames any jitter underruns
        max_delay: float = 0.3,  # seconds; beyond this a conversation turns awkward
        jitter_factor: float = 4.0,  # A.8 jitter is a mean deviation: 4x covers spikes
        adapt_window: int = 50,  # ticks (1 s at 20 ms) between shrink decisions
        max_concealed: int = 10,  # underrun ticks before the stream counts as stopped
        max_misorder: int = 100,  # packets back that still count as reordering (A.1)
    ) -> None:
        if min_delay > max_delay:
            raise ValueError("min_delay above max_delay")
        self.clock_rate = clock_rate
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.jitter_factor = jitter_factor
        self.adapt_window = adapt_window
        self.max_concealed = max_concealed
        self.max_misorder = max_misorder
        self.stats = JitterStats()
        self._nominal_ticks = clock_rate * ptime_ms // 1000
        self._frame_ticks = self._nominal_ticks
        self._ssrc: int | None = None
        self._jitter = 0.0  # seconds
        self._prev: tuple[float, int] | None = None  # (arrival, timestamp) for A.8
        self._flush()

    def _flush(self) -> None:
        self._packets: dict[int, RtpPacket] = {}
        self._state = _State.IDLE
        self._max_ext: int | None = None
        self._next: int | None = None
        self._first_arrival = 0.0
        self._bad_seq: int | None = None
        self._underruns = 0
        self._window_ticks = 0
        self._window_min: int | None = None

    def reset(self) -> None:
        """Forget everything, as for a new stream."""
        self._flush()
        self._ssrc = None
        self._jitter = 0.0
        self._prev = None
        self._frame_ticks = self._nominal_ticks

    # --- observations ------------------------------------------------------------

    @property
    def frame_duration(self) -> float:
        return self._frame_ticks / self.clock_rate

    @property
    def jitter(self) -> float:
        """Interarrival jitter estimate in seconds (RFC 3550 A.8)."""
        return self._jitter

    @property
    def target_delay(self) -> float:
        want = self.frame_duration + self.jitter_factor * self._jitter
        return min(self.max_delay, max(self.min_delay, want))

    @property
    def depth(self) -> int:
        """Frames from the next one to play up to the newest buffered (gaps included)."""
        if not self._packets:
            return 0
        start = self._next if self._next is not None else min(self._packets)
        return max(self._packets) - start + 1

    @property
    def playing(self) -> bool:
        return self._state is _State.PLAYING

    # --- network side ------------------------------------------------------------

    def put(self, packet: RtpPacket, arrival: float) -> Arrival:
        self.stats.received += 1
        result = Arrival.QUEUED
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.stats.resets += 1
                result = Arrival.RESET
            self.reset()
            self._ssrc = packet.ssrc
        if self._max_ext is None:
            ext = packet.sequence
        else:
            ext = self._max_ext + seq_delta(packet.sequence, self._max_ext & 0xFFFF)
            floor = self._next if self._next is not None else min(self._packets, default=ext)
            max_gap = int(self.max_delay / self.frame_duration) * 2 + self.max_misorder
            if ext - floor > max_gap or ext < floor - self.max_misorder:
                # Too far to be loss or reordering: a restart, or garbage.  A big jump
                # ahead restarts at once (emitting that many Lost frames helps nobody);
                # one far behind must be confirmed by its successor (RFC 3550 A.1).
                if ext > floor or packet.sequence == self._bad_seq:
                    self.stats.resets += 1
                    self._flush()
                    self._prev = None
                    ext = packet.sequence
                    result = Arrival.RESET
                else:
                    self._bad_seq = (packet.sequence + 1) & 0xFFFF
                    return Arrival.IGNORED
        self._bad_seq = None
        if self._next is not None and ext < self._next:
            self.stats.late += 1
            return Arrival.LATE
        if ext in self._packets:
            self.stats.duplicates += 1
            return Arrival.DUPLICATE
        self._observe(packet, ext, arrival)
        self._packets[ext] = packet
        if self._max_ext is None or ext > self._max_ext:
            self._max_ext = ext
        if self._state is _State.IDLE:
            self._state = _State.BUFFERING
            self._first_arrival = arrival
        return result

    def _observe(self, packet: RtpPacket, ext: int, arrival: float) -> None:
        """Update the A.8 jitter estimate and the frame duration seen on the wire."""
        if self._prev is not None:
            prev_arrival, prev_ts = self._prev
            dts = ts_delta(packet.timestamp, prev_ts)
            if abs(dts) < 10 * self.clock_rate:  # a bigger jump is a restart, not jitter
                d = (arrival - prev_arrival) - dts / self.clock_rate
                self._jitter += (abs(d) - self._jitter) / 16.0
        self._prev = (arrival, packet.timestamp)
        before = self._packets.get(ext - 1)
        if before is not None and not packet.marker:
            step = ts_delta(packet.timestamp, before.timestamp)
            if 0 < step <= self.clock_rate // 5:  # 200 ms: longer is DTX, not ptime
                self._frame_ticks = step

    # --- playout side ------------------------------------------------------------

    def get(self, now: float) -> Frame | Lost | None:
        """The item for this playout tick: a `Frame`, a `Lost`, or None (not playing)."""
        if self._state is _State.IDLE:
            return None
        if self._state is _State.BUFFERING:
            if now < self._first_arrival + self.target_delay - self.frame_duration:
                return None
            self._state = _State.PLAYING
            self._next = min(self._packets)
            self._window_ticks = 0
            self._window_min = None
        assert self._next is not None
        self._adapt()
        packet = self._packets.pop(self._next, None)
        if packet is not None:
            self._next += 1
            self._underruns = 0
            self.stats.played += 1
            return Frame(packet)
        if self._packets:
            seq = self._next & 0xFFFF
            self._next += 1
            self._underruns = 0
            self.stats.lost += 1
            return Lost(seq)
        self._underruns += 1
        if self._underruns > self.max_concealed:
            self._state = _State.IDLE
            self._underruns = 0
            return None
        self.stats.concealed += 1
        return Lost(self._next & 0xFFFF, underrun=True)

    def _adapt(self) -> None:
        """Drop surplus frames: over max_delay at once, or a persistent excess (drift)."""
        assert self._next is not None
        depth = self.depth
        frame = self.frame_duration
        if depth * frame > self.max_delay:
            self._drop(depth - max(1, int(self.target_delay / frame)))
            depth = self.depth
        self._window_min = depth if self._window_min is None else min(self._window_min, depth)
        self._window_ticks += 1
        if self._window_ticks < self.adapt_window:
            return
        surplus = int((self._window_min * frame - self.target_delay) / frame + 1e-9)
        self._window_ticks = 0
        self._window_min = None
        if surplus >= 1:
            self._drop(max(1, surplus // 2))

    def _drop(self, frames: int) -> None:
        assert self._next is not None
        for _ in range(frames):
            if not self._packets:
                return
            if self._packets.pop(self._next, None) is not None:
                self.stats.dropped += 1
            else:
                self.stats.lost += 1
            self._next += 1
