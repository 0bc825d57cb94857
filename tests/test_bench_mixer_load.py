"""bench/mixer_load's explanations of a failed step: what the server, the kernel and the
listeners' counts say is named, and a clean window names nothing."""

from __future__ import annotations

from bench.mixer_load import _arrival, _where_dropped, diagnose

CLEAN = {
    "chorus_mixer_ticks": 200.0,
    "chorus_mixer_ticks_late": 0.0,
    "chorus_mixer_ticks_dropped": 0.0,
    "chorus_mixer_frames_mixed": 20000.0,
    "chorus_mixer_frames_dropped": 0.0,
}


def test_a_clean_window_has_no_reason() -> None:
    assert diagnose(CLEAN, {"RcvbufErrors": 0, "SndbufErrors": 0}, [], 100, 200.0) == []


def test_a_starved_server_is_named_before_the_network() -> None:
    server = {**CLEAN, "chorus_mixer_ticks_late": 30.0, "chorus_mixer_ticks_dropped": 5.0}
    server["chorus_mixer_frames_mixed"] = 19500.0
    server["chorus_mixer_frames_dropped"] = 500.0
    short = {"listener": 3, "seq_skipped": 0, "short": True}
    lost = {"listener": 4, "seq_skipped": 2, "short": False}
    reasons = diagnose(server, {"RcvbufErrors": 7, "server_sockets": 7}, [short, lost], 100, 200.0)
    assert reasons[0].startswith("server dropped 5 ticks (500 listener frames)")
    assert "ran 30 ticks late" in reasons[1]
    assert "sent 19500 frames for 20000 due" in reasons[2]
    assert "7 on the server's RTP sockets" in reasons[3]
    assert reasons[4].startswith("1 listeners' streams started late or stopped early")
    assert reasons[5].startswith("1 listeners skipped sequence numbers")


def test_kernel_drops_are_told_apart_by_socket() -> None:
    before = {10001: 5, 10002: 0, 30000: 1, 40000: 0}
    after = {10001: 9, 10002: 2, 30000: 4, 40000: 6, 50000: 1}
    where = _where_dropped(before, after, {10001}, [10000], range(30000, 34000))
    assert where == {
        "listener_sockets": 4,
        "sipp_sockets": 2,
        "server_sockets": 3,
        "other_sockets": 7,
    }


def test_the_kernel_arrival_time_wins_over_the_read_time() -> None:
    import socket
    import struct

    stamp = [(socket.SOL_SOCKET, 35, struct.pack("qq", 1700000000, 500_000_000))]
    assert _arrival(stamp, 9.0) == 1700000000.5
    assert _arrival([], 9.0) == 9.0
