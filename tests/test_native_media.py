"""The native media loop (control/media/native/_media.c) against its Python reference.

Each C function is fed what its Python counterpart is fed and must give the same answer:
`parse_rtp` the same RtpPacket (or RtpError with the same message) as `RtpPacket.parse`,
`level_db` the same level as `stream.level_db`; `recv_batch`/`send_batch` the datagrams,
sources and arrival times the event loop's sockets give.  Then the whole `EmbeddedMixer`
on the native path: legs read by the tick, not the event loop, and the mix-minus right.
The mixer's sample-for-sample differential with native parse/level is in
tests/test_mixer_differential.py.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.config import ConfigError, parse_config
from control.media import native
from control.media.codecs import G722Codec, PcmaCodec, PcmuCodec, SpeexCodec
from control.media.engine import ParticipantId, RoomId
from control.media.jitter import Frame, JitterBuffer
from control.media.rtp import RtpError, RtpPacket, SequenceTracker
from control.media.stream import level_db
from tests import test_conference_peers as conference_peers
from tests.peers.chorus import ChorusProcess
from tests.test_media_mixer import (
    FREQS,
    _assert_hears,
    _join,
    _mixed_past,
    _peer,
    make_mixer,
)

media = native.load()


def _python_parse(data: bytes) -> RtpPacket | str:
    try:
        return RtpPacket.parse(data)
    except RtpError as exc:
        return f"RtpError: {exc}"


def _native_parse(data: bytes) -> RtpPacket | str:
    try:
        return media.parse_rtp(data)
    except RtpError as exc:
        return f"RtpError: {exc}"


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=200),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.none() | st.integers(0, 0xFFFF),
    extension=st.binary(max_size=12).map(lambda b: b[: len(b) // 4 * 4]),
    padding=st.integers(0, 255),
)


@given(packets)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_rtp_gives_the_python_packet(packet: RtpPacket) -> None:
    data = packet.serialize()
    parsed = media.parse_rtp(data)
    assert parsed == RtpPacket.parse(data)
    assert type(parsed) is RtpPacket


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_parse_rtp_refuses_what_python_refuses(data: bytes) -> None:
    """Arbitrary octets: the same packet or the same RtpError message."""
    assert _native_parse(data) == _python_parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\x08\x00",
        bytes([0x40]) + bytes(11),  # version 1
        bytes([0xA0, 8]) + bytes(10),  # padding count 0
        bytes([0xA0, 8]) + bytes(9) + b"\x40",  # padding longer than the packet
        bytes([0x83, 8]) + bytes(10) + bytes(8),  # CSRC list runs past
        bytes([0x90, 8]) + bytes(10) + b"\x00\x01",  # extension header runs past
        bytes([0x90, 8]) + bytes(10) + b"\xbe\xde\x00\x02" + bytes(4),  # extension past
        bytes([0xB0, 8]) + bytes(10) + b"\xbe\xde\x00\x00\x00\x00\x05",  # padding in ext
    ],
)
def test_parse_rtp_errors_match(data: bytes) -> None:
    expected = _python_parse(data)
    assert isinstance(expected, str)
    assert _native_parse(data) == expected


def test_parse_rtp_packet_is_frozen_and_takes_any_buffer() -> None:
    data = RtpPacket(8, 1, 2, 3, b"abc").serialize()
    packet = media.parse_rtp(memoryview(bytearray(data)))
    assert packet == RtpPacket.parse(data)
    with pytest.raises(AttributeError):
        packet.sequence = 5  # type: ignore[misc]


# --- the G.711 decode ------------------------------------------------------------------

# Decode a payload (bytes) or conceal a lost one (an int: samples), in that order.
g711_script = st.lists(st.binary(max_size=480) | st.integers(1, 480), max_size=12)


@pytest.mark.parametrize(
    ("python", "fast"), [(PcmuCodec, native.NativePcmu), (PcmaCodec, native.NativePcma)]
)
@given(script=g711_script)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_native_g711_decoder_gives_the_python_samples(
    python: type[PcmuCodec], fast: type[PcmuCodec], script: list[bytes | int]
) -> None:
    """Every octet's sample, and the concealment after it (which repeats the last frame)."""
    reference, candidate = python(), fast()
    for step in script:
        if isinstance(step, bytes):
            want, got = reference.decode(step), candidate.decode(step)
        else:
            want, got = reference.conceal(step), candidate.conceal(step)
        assert got.dtype == np.int16 and np.array_equal(got, want)
    assert candidate.encode(np.arange(-160, 160, 2, dtype=np.int16)) == reference.encode(
        np.arange(-160, 160, 2, dtype=np.int16)
    )


def test_table_decode_is_every_table_entry_and_refuses_a_bad_table() -> None:
    table = np.arange(-128, 128, dtype=np.int16) * 97
    out = np.frombuffer(media.table_decode(bytes(range(256)) * 2, table), dtype=np.int16)
    assert np.array_equal(out, np.concatenate([table, table]))
    assert media.table_decode(b"", table) == bytearray()
    with pytest.raises(ValueError, match="256 int16"):
        media.table_decode(b"\x00", table[:255])


def test_native_kit_decodes_g711_natively_and_leaves_other_codecs() -> None:
    kit = native.kit()
    assert type(kit.decoder(PcmuCodec)) is native.NativePcmu
    assert type(kit.decoder(PcmaCodec)) is native.NativePcma
    assert type(kit.decoder(G722Codec)) is G722Codec
    assert type(kit.decoder(lambda: SpeexCodec(16000))) is SpeexCodec


def test_level_db_matches_python() -> None:
    rng = np.random.default_rng(11)
    frames = [np.zeros(160, np.int16), np.full(320, 32767, np.int16), np.array([], np.int16)]
    frames += [rng.integers(-a, a, size=160, dtype=np.int16) for a in (1, 30, 3000, 32767)]
    frames.append((np.sin(np.arange(320) / 7) * 9000).astype(np.int16)[::2])  # a strided view
    for frame in frames:
        assert media.level_db(np.ascontiguousarray(frame)) == pytest.approx(
            level_db(frame), abs=1e-4
        )
    with pytest.raises((TypeError, BufferError)):
        media.level_db(np.zeros(160, np.float32))


# --- sockets --------------------------------------------------------------------------


@pytest.fixture
def udp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    yield rx, tx
    rx.close()
    tx.close()


def _readable(sock: socket.socket) -> None:
    assert select.select([sock], [], [], 5.0)[0], "nothing arrived"


Got = list[tuple[int, bytes, tuple[str, int], float]]


def _collect(sock: socket.socket, count: int, cap: int) -> list[Got]:
    """recv_batch calls (at most `cap` each) until `count` datagrams came; each call's list."""
    calls: list[Got] = []
    while sum(len(c) for c in calls) < count:
        _readable(sock)
        got, errors = media.recv_batch([sock.fileno()], cap)
        assert errors == []
        calls.append(got)
    return calls


def test_recv_batch_reads_every_waiting_datagram_in_order(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = udp_pair
    media.enable_timestamps(rx.fileno())
    before = time.monotonic()
    sent = [struct.pack("!I", k) * (k + 1) for k in range(40)] + [bytes(60000)]
    for data in sent:
        tx.sendto(data, rx.getsockname())
    got = [item for call in _collect(rx, len(sent), 100) for item in call]
    after = time.monotonic()
    assert [d for _i, d, _a, _t in got] == sent
    assert {i for i, _d, _a, _t in got} == {0}
    assert all(a == tx.getsockname() for _i, _d, a, _t in got)
    arrivals = [t for _i, _d, _a, t in got]
    assert arrivals == sorted(arrivals)  # the kernel's receive times, on the monotonic clock
    assert before - 0.01 <= arrivals[0] and arrivals[-1] <= after
    assert media.recv_batch([rx.fileno()], 100) == ([], [])  # nothing left, nothing blocks


def test_recv_batch_caps_each_socket_and_keeps_the_rest(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = udp_pair
    for k in range(30):
        tx.sendto(bytes([k]), rx.getsockname())
    calls = _collect(rx, 30, 20)
    assert all(len(call) <= 20 for call in calls)
    assert [d for call in calls for _i, d, _a, _t in call] == [bytes([k]) for k in range(30)]


def test_recv_batch_reports_a_bad_socket_and_reads_the_others(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = udp_pair
    tx.sendto(b"x" * 12, rx.getsockname())
    _readable(rx)
    spare = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dead = spare.fileno()
    spare.close()
    got, errors = media.recv_batch([dead, rx.fileno()], 8)
    assert [(i, d) for i, d, _a, _t in got] == [(1, b"x" * 12)]
    assert [i for i, _e in errors] == [0]


def test_send_batch_sends_each_on_its_socket(
    udp_pair: tuple[socket.socket, socket.socket],
) -> None:
    rx, tx = udp_pair
    host, port = rx.getsockname()
    errors = media.send_batch(
        [(tx.fileno(), b"one", host, port), (tx.fileno(), b"two", "localhost", port)]
    )
    assert errors == [(1, 0)]  # a name, not a literal: left to the caller's transport
    _readable(rx)
    data, source = rx.recvfrom(100)
    assert (data, source) == (b"one", tx.getsockname())
    refused = media.send_batch([(-1, b"x", host, port)])
    assert refused[0][0] == 0 and refused[0][1] != 0


def test_ipv6_addresses_round_trip() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    rx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        rx.bind(("::1", 0))
        tx.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1")
    try:
        assert media.send_batch([(tx.fileno(), b"six", "::1", rx.getsockname()[1])]) == []
        got = _collect(rx, 1, 4)[0]
        assert [(d, a) for _i, d, a, _t in got] == [(b"six", tx.getsockname()[:2])]
    finally:
        rx.close()
        tx.close()


# --- the mixer on the native path -----------------------------------------------------


def test_switch_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(native.ENV, "0")
    assert native.choose(True) is False
    monkeypatch.setenv(native.ENV, "1")
    assert native.choose(False) is True
    monkeypatch.delenv(native.ENV)
    assert native.choose(True) is True and native.choose(False) is False


@pytest.mark.parametrize("on", [True, False], ids=["native", "python"])
async def test_mixer_reads_legs_and_mixes_minus_on_either_path(
    monkeypatch: pytest.MonkeyPatch, on: bool
) -> None:
    """The same room heard the same way on the C loop (the default) and the Python path."""
    monkeypatch.delenv(native.ENV, raising=False)
    engine = make_mixer(21, native=on)
    peers = [_peer(kind, seed=i) for i, kind in enumerate(("PCMA", "PCMU", "G722"))]
    try:
        await _join(engine, peers, RoomId("n"))
        legs = list(engine._legs.values())
        assert engine.native is on
        # Native: the tick reads the RTP sockets, not the event loop; Python: the loop does.
        assert all((leg.fd >= 0) is on for leg in legs)
        assert all(leg.rtp.is_reading() is not on for leg in legs)  # type: ignore[union-attr]
        sent = await asyncio.gather(*(p.play(f, 2.0) for p, f in zip(peers, FREQS, strict=True)))
        assert await _mixed_past(*peers), "the mixer stopped sending"
        for i, peer in enumerate(peers):
            assert sent[i] > 0
            _assert_hears(peer, FREQS[i], [f for j, f in enumerate(FREQS) if j != i])
        stats = await engine.stats()
        assert stats.packets_in > 0 and stats.send_errors == 0
        stream = engine.stream(RoomId("n"), ParticipantId("p0"))
        assert stream is not None and stream.stats.received > 0 and stream.latched is not None
    finally:
        await engine.close()
        for peer in peers:
            peer.close()


async def test_native_off_keeps_the_event_loop_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    engine = make_mixer(22, native=False)
    peers = [_peer("PCMA")]
    try:
        await _join(engine, peers, RoomId("p"))
        assert engine.native is False
        leg = next(iter(engine._legs.values()))
        assert leg.fd == -1 and leg.rtp is not None
        assert leg.rtp.is_reading()  # type: ignore[attr-defined]
    finally:
        await engine.close()
        peers[0].close()


def test_config_key_parsed_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(native.ENV, raising=False)
    assert parse_config({}).rtp.native_media is True  # the default: make deps builds it
    assert parse_config({"rtp": {"native_media": False}}).rtp.native_media is False
    with pytest.raises(ConfigError, match="rtp.native_media"):
        parse_config({"rtp": {"native_media": "yes"}})


def test_a_missing_extension_is_refused_not_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unbuilt C loop never silently becomes the Python path: the config says why, and
    only an explicit `native_media = false` (or CHORUS_NATIVE_MEDIA=0) runs without it."""
    monkeypatch.delenv(native.ENV, raising=False)
    monkeypatch.setattr(native, "_module", None)  # as if the extension did not import
    monkeypatch.setattr(native, "_import_error", "No module named '_media'")
    assert not native.available()
    with pytest.raises(ConfigError, match="rtp.native_media.*not built.*native_media = false"):
        parse_config({})
    assert parse_config({"rtp": {"native_media": False}}).rtp.native_media is False
    monkeypatch.setenv(native.ENV, "0")
    assert parse_config({}).rtp.native_media is True  # the key as written; the env decides
    monkeypatch.setenv(native.ENV, "1")
    with pytest.raises(ConfigError, match="not built"):
        parse_config({"rtp": {"native_media": False}})
    monkeypatch.delenv(native.ENV)
    with pytest.raises(native.NativeUnavailable, match="make deps"):
        make_mixer(23)  # the engine's own default is the C loop too
    make_mixer(24, native=False)  # and its Python path needs nothing built


@pytest.mark.timeout(60)
@pytest.mark.peer("baresip", "sipp", "sipp-pcap")
def test_baresip_and_sipp_hear_each_other_on_the_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference stays live-tested now that the C loop is the default: the FFT mix-minus
    test of tests/test_conference_peers.py (baresip's tone, SIPp's pcap speech, echo) run
    against a server with `native_media = false`."""
    monkeypatch.delenv(native.ENV, raising=False)  # the server inherits the environment
    with ChorusProcess({"rtp": {"native_media": False}}) as chorus:
        conference_peers.test_baresip_and_sipp_hear_each_other(
            chorus, tmp_path, "PCMU/8000/1", 8000
        )
        assert "embedded mixer: Python media path" in chorus.log()
        assert "native media loop" not in chorus.log()


# --- the jitter buffer ----------------------------------------------------------------

Op = tuple[str, int, int, int, bool, float]  # op, ssrc, sequence step, ts wobble, marker, dt

ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "get", "get"]),
        st.sampled_from([7, 7, 7, 7, 7, 7, 9]),
        st.one_of(st.integers(-3, 4), st.integers(-3, 4), st.sampled_from([-2000, 300, 40000])),
        st.sampled_from([0, 0, 0, 1, -7, 160, 90000]),
        st.sampled_from([False, False, False, True]),
        st.floats(0.0, 0.06),
    ),
    max_size=400,
)


def _observed(buf: object) -> tuple[object, ...]:
    """Everything the buffer shows (its stats copied: Python's JitterStats is live)."""
    names = ("jitter", "depth", "target_delay", "frame_duration", "playing")
    return (*(getattr(buf, name) for name in names), astuple(buf.stats))


def _drive(factory: type, script: list[Op], **options: float) -> list[object]:
    buf = factory(8000, **options)
    seen: list[object] = []
    seq, now = 65530, 100.0
    for op, ssrc, step, wobble, marker, dt in script:
        now += dt
        if op == "put":
            seq = (seq + step) % 65536
            ts = (seq * 160 + wobble) % (1 << 32)
            seen.append(buf.put(RtpPacket(8, seq, ts, ssrc, b"x", marker=marker), now))
        else:
            seen.append(buf.get(now))
        seen.append(_observed(buf))
    buf.reset()
    seen.append(_observed(buf))
    return seen


@given(ops)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_native_jitter_buffer_gives_the_python_frames(script: list[Op]) -> None:
    """The same puts and gets: the same Arrival, Frame/Lost/None and state after each."""
    assert _drive(media.JitterBuffer, script) == _drive(JitterBuffer, script)


@given(ops)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_native_jitter_buffer_with_other_limits(script: list[Op]) -> None:
    options = {"min_delay": 0.02, "max_delay": 0.1, "adapt_window": 5, "max_concealed": 2}
    assert _drive(media.JitterBuffer, script, **options) == _drive(JitterBuffer, script, **options)


def test_native_jitter_buffer_steady_stream() -> None:
    """A clean 20 ms stream with jittered arrivals, as a phone sends: every frame played."""
    rng = np.random.default_rng(3)
    py, c = JitterBuffer(8000), media.JitterBuffer(8000)
    played = []
    for k in range(500):
        packet = RtpPacket(8, k % 65536, k * 160, 5, bytes([k % 256]))
        arrival = k * 0.02 + float(rng.uniform(0, 0.015))
        assert c.put(packet, arrival) == py.put(packet, arrival)
        item = c.get(k * 0.02 + 0.016)
        assert item == py.get(k * 0.02 + 0.016)
        played.append(item)
        assert c.jitter == py.jitter and c.stats == py.stats
    assert sum(isinstance(p, Frame) for p in played) > 450
    with pytest.raises(ValueError):
        media.JitterBuffer(8000, min_delay=0.5, max_delay=0.1)


# --- the sequence tracker -------------------------------------------------------------


@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 1, 1, 1, 2]),
            st.one_of(st.integers(-3, 3), st.sampled_from([0, 1, 1, 1, 3001, -150, 32768])),
        ),
        max_size=300,
    ),
    st.integers(1, 3),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_native_sequence_tracker_gives_the_python_updates(
    steps: list[tuple[int, int]], min_sequential: int
) -> None:
    """RFC 3550 A.1 fed the same SSRCs and sequence numbers (wrap, jumps, restarts,
    duplicates): the same SequenceUpdate and counters after every packet."""
    c = media.SequenceTracker(min_sequential=min_sequential)
    py = SequenceTracker(min_sequential=min_sequential)
    seq = 65500
    for ssrc, step in steps:
        seq = (seq + step) % 65536
        assert c.update(ssrc, seq) == py.update(ssrc, seq)
        for name in ("ssrc", "received", "probation", "cycles", "max_seq", "base_seq"):
            assert getattr(c, name) == getattr(py, name), name
        assert (c.extended_max, c.expected, c.lost) == (py.extended_max, py.expected, py.lost)
    with pytest.raises(ValueError):
        media.SequenceTracker(min_sequential=0)
