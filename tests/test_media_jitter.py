"""Jitter buffer on a simulated clock: order, loss, duplicates, wrap, drift, resets."""

from __future__ import annotations

import random

from control.media.jitter import Arrival, Frame, JitterBuffer, Lost
from control.media.rtp import RtpPacket

TICK = 0.02
Out = Frame | Lost | None


def pkt(seq: int, ts: int | None = None, ssrc: int = 1, marker: bool = False) -> RtpPacket:
    seq &= 0xFFFF
    ts = seq * 160 if ts is None else ts
    return RtpPacket(0, seq, ts & 0xFFFFFFFF, ssrc, b"%d" % seq, marker)


def stream(count: int, *, start_seq: int = 0, start_ts: int = 0, ssrc: int = 1) -> list:
    return [pkt(start_seq + i, start_ts + 160 * i, ssrc) for i in range(count)]


def simulate(
    jb: JitterBuffer, arrivals: list[tuple[float, RtpPacket]], ticks: int, t0: float = 0.0
) -> list[Out]:
    """Deliver arrivals in time order and pull one item per 20 ms tick."""
    pending = sorted(arrivals, key=lambda a: a[0])
    out: list[Out] = []
    i = 0
    for n in range(ticks):
        now = t0 + n * TICK
        while i < len(pending) and pending[i][0] <= now:
            jb.put(pending[i][1], pending[i][0])
            i += 1
        out.append(jb.get(now))
    return out


def played(out: list[Out]) -> list[int]:
    return [o.sequence for o in out if isinstance(o, Frame)]


def inner(out: list[Out]) -> list[Out]:
    """The outcomes from the first played frame to the last (drops the stream's tail)."""
    idx = [i for i, o in enumerate(out) if isinstance(o, Frame)]
    return out[idx[0] : idx[-1] + 1]


def underruns(out: list[Out]) -> list[Lost]:
    return [o for o in inner(out) if isinstance(o, Lost) and o.underrun]


def regular(packets: list[RtpPacket], period: float = TICK, offset: float = 0.005) -> list:
    return [(offset + i * period, p) for i, p in enumerate(packets)]


def test_steady_stream_plays_in_order_without_loss() -> None:
    jb = JitterBuffer(8000)
    out = simulate(jb, regular(stream(50)), 60)
    assert played(out) == list(range(50))
    assert jb.stats.lost == 0 and jb.stats.dropped == 0
    assert out[0] is None  # buffering first
    assert jb.target_delay == jb.min_delay


def test_reordered_packets_play_in_order() -> None:
    packets = stream(20)
    arrivals = regular(packets)
    # 5 overtakes 4 and 9 arrives after 10: both still before their playout turn.
    arrivals[4], arrivals[5] = (arrivals[5][0], packets[4]), (arrivals[4][0], packets[5])
    arrivals[9], arrivals[10] = (arrivals[10][0], packets[9]), (arrivals[9][0], packets[10])
    jb = JitterBuffer(8000)
    assert played(simulate(jb, arrivals, 30)) == list(range(20))
    assert jb.stats.lost == 0


def test_loss_is_reported_for_concealment() -> None:
    arrivals = [a for a in regular(stream(20)) if a[1].sequence not in (5, 12, 13)]
    jb = JitterBuffer(8000)
    out = simulate(jb, arrivals, 30)
    declared = [o.sequence for o in inner(out) if isinstance(o, Lost) and not o.underrun]
    assert declared == [5, 12, 13]
    # Two losses in a row empty a 40 ms buffer: the first tick waits (stretches) once.
    assert [o.sequence for o in underruns(out)] == [12]
    assert played(out) == [s for s in range(20) if s not in (5, 12, 13)]
    assert jb.stats.lost == 3


def test_duplicates_are_dropped() -> None:
    packets = stream(10)
    arrivals = regular(packets) + [(0.0451, packets[2]), (0.0452, packets[2])]
    jb = JitterBuffer(8000)
    assert played(simulate(jb, arrivals, 15)) == list(range(10))
    assert jb.stats.duplicates + jb.stats.late == 2


def test_a_packet_after_its_turn_is_late() -> None:
    packets = stream(10)
    arrivals = [a for a in regular(packets) if a[1].sequence != 4] + [(0.2, packets[4])]
    jb = JitterBuffer(8000)
    out = simulate(jb, arrivals, 15)
    assert 4 not in played(out)
    assert jb.stats.late == 1
    assert jb.put(packets[1], 0.3) is Arrival.LATE


def test_underrun_stretches_and_the_late_packet_still_plays() -> None:
    packets = stream(10)
    # Packet 5 (and everything after it) is held up by 50 ms: nothing else is queued.
    arrivals = [(t + (0.05 if p.sequence >= 5 else 0.0), p) for t, p in regular(packets)]
    jb = JitterBuffer(8000)
    out = simulate(jb, arrivals, 20)
    assert played(out) == list(range(10))  # nothing lost: the playout waited
    waits = underruns(out)
    assert waits and all(o.sequence == 5 for o in waits)
    assert jb.stats.lost == 0


def test_sequence_and_timestamp_wrap_around() -> None:
    packets = stream(40, start_seq=65520, start_ts=0xFFFFFFFF - 160 * 10)
    arrivals = [a for a in regular(packets) if a[1].sequence != 2]
    jb = JitterBuffer(8000)
    out = simulate(jb, arrivals, 50)
    expected = [(65520 + i) & 0xFFFF for i in range(40)]
    expected.remove(2)
    assert played(out) == expected
    assert jb.stats.lost == 1 and jb.stats.resets == 0
    assert jb.frame_duration == 0.02


def test_fast_sender_clock_drift_drops_frames_and_bounds_delay() -> None:
    # The sender's clock runs 2 % fast: 500 frames arrive in 9.8 s of our time.
    packets = stream(500)
    jb = JitterBuffer(8000)
    depths = []
    out: list[Out] = []
    pending = regular(packets, period=TICK * 0.98)
    i = 0
    for n in range(520):
        now = n * TICK
        while i < len(pending) and pending[i][0] <= now:
            jb.put(pending[i][1], pending[i][0])
            i += 1
        depths.append(jb.depth)
        out.append(jb.get(now))
    assert jb.stats.dropped >= 5  # ~10 frames of surplus accumulate over 10 s
    assert max(depths[100:]) <= 4  # the delay never runs away
    assert underruns(out) == []
    seqs = played(out)
    assert seqs == sorted(seqs)


def test_slow_sender_clock_drift_stretches_without_loss() -> None:
    # 2 % slow: every ~50 ticks the buffer runs dry once and a frame is concealed.
    jb = JitterBuffer(8000)
    out = simulate(jb, regular(stream(300), period=TICK * 1.02), 320)
    assert played(out) == list(range(300))
    assert jb.stats.lost == 0 and jb.stats.dropped == 0
    # 300 frames at 20.4 ms leave 6 frames' worth of gaps, each concealed once.
    assert 4 <= len(underruns(out)) <= 8


def test_target_delay_follows_jitter_within_bounds() -> None:
    rng = random.Random(5)
    arrivals = [(0.005 + i * TICK + rng.uniform(0, 0.06), p) for i, p in enumerate(stream(300))]
    jb = JitterBuffer(8000, max_delay=0.2)
    out = simulate(jb, arrivals, 320)
    assert jb.jitter > 0.01
    assert jb.min_delay < jb.target_delay <= 0.2
    seqs = played(out)
    assert seqs == sorted(seqs)
    # With 60 ms of jitter most packets still make it once the delay has grown.
    assert len(seqs) >= 270

    calm = JitterBuffer(8000, max_delay=0.2)
    simulate(calm, regular(stream(100)), 110)
    assert calm.target_delay == calm.min_delay


def test_max_delay_bound_drops_a_burst() -> None:
    # 30 packets arrive at once after a stall: more than max_delay worth of audio.
    packets = stream(40)
    arrivals = regular(packets[:5]) + [(0.7, p) for p in packets[5:35]]
    arrivals += [(0.7 + (i + 1) * TICK, p) for i, p in enumerate(packets[35:])]
    jb = JitterBuffer(8000, max_delay=0.1, max_concealed=100)
    out = simulate(jb, arrivals, 50)
    assert jb.stats.dropped > 0
    seqs = played(out)
    assert seqs[:5] == [0, 1, 2, 3, 4] and seqs[-1] == 39
    assert jb.depth * jb.frame_duration <= 0.1


def test_ssrc_change_resets() -> None:
    jb = JitterBuffer(8000)
    first = regular(stream(10, ssrc=1))
    second = [(0.25 + i * TICK, p) for i, p in enumerate(stream(10, start_seq=40000, ssrc=2))]
    results = []
    out: list[Out] = []
    pending = first + second
    i = 0
    for n in range(40):
        now = n * TICK
        while i < len(pending) and pending[i][0] <= now:
            results.append(jb.put(pending[i][1], pending[i][0]))
            i += 1
        out.append(jb.get(now))
    assert results.count(Arrival.RESET) == 1
    assert played(out) == list(range(10)) + [40000 + k for k in range(10)]
    assert jb.stats.resets == 1


def test_big_sequence_jump_resets() -> None:
    jb = JitterBuffer(8000)
    packets = stream(10) + stream(10, start_seq=30000, start_ts=999_999)
    outcomes = []
    for i, p in enumerate(packets):
        outcomes.append(jb.put(p, i * TICK))
        jb.get(i * TICK + 0.001)
    assert outcomes[10] is Arrival.RESET
    # A lone packet far behind is ignored until its successor confirms a restart.
    assert jb.put(pkt(5), 1.0) is Arrival.IGNORED
    assert jb.put(pkt(6), 1.01) is Arrival.RESET


def test_stopped_stream_goes_idle_then_resumes() -> None:
    # 10 packets, 1 s of silence (DTX), then a new talkspurt: sequence continues,
    # timestamp jumps, marker set.
    talk2 = [pkt(10 + i, 8000 + 160 * (10 + i), marker=(i == 0)) for i in range(10)]
    arrivals = regular(stream(10)) + [(1.2 + i * TICK, p) for i, p in enumerate(talk2)]
    jb = JitterBuffer(8000, max_concealed=5)
    out = simulate(jb, arrivals, 80)
    assert played(out) == list(range(20))
    assert len(underruns(out)) == 5  # conceal a little, then stop asking for audio
    assert out[40] is None
    assert jb.stats.lost == 0
