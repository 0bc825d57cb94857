"""Mixer capacity measured the way FreeSWITCH's mod_conference capacity usually is.

SIPp callers join rooms on a running `chorus serve` and play a capture all the time, so
every member talks on every tick (a non-silent signal on every stream). The server's CPU
time (the server process and every mixer worker it spawned) over a steady window,
divided by the participants, is the CPU % per participant; 100 / that is participants per
core. The same method gives FreeSWITCH 1.10 mod_conference ≈0.5 % of a core per G.711
participant and ≈1.2 % per G.722 participant, all talking, on a machine of this kind.

    python -m bench.mixer_load --quick      # one run per configuration, short window
    python -m bench.mixer_load              # three runs, the figures for RESULTS.md
    python -m bench.mixer_load --codecs G711 --rooms 5 --workers 0 --runs 1
    python -m bench.mixer_load --media python native   # the C media loop against Python
    python -m bench.mixer_load --workers 1 2 --scale   # 2 workers carry twice 1 worker's

How a step runs (one fresh server per step, so RSS starts from an idle server):

* five SIPp processes, each playing its own tone (bench/rtp_pcap.py writes the captures
  with Chorus's codecs: G.711 A-law, G.722, Opus, Speex-WB; 20 ms packets). Member m of
  every room is a call of SIPp process m % 5, so a listener in a room of 5 must hear four
  tones and not its own (mix-minus), one in a room of 50 all five;
* the SDP names SIPp's per-call port ([auto_media_port+1]) and SIPp replays the capture
  from that port; the server latches there (symmetric RTP) and sends the listener's mix to
  it, where this benchmark has a UDP socket bound: every listener's stream is received on
  real UDP and counted (RTCP, muxed on the same port, is told apart and not counted);
* the window starts once every listener's stream arrives, plus a warm-up. A step passes
  when the packets received in the window are participants × ticks (the window / 20 ms)
  within 0.1 %, no sequence number was skipped beyond 0.1 %, every listener received, and
  the decoded sample of each sampled listener holds the tones it must hear (FFT) and, in
  rooms of 5, not its own; a server that got no input sends silence and fails the step.
  A failed step says why (`why`, also printed): the server's mixer counters over the
  window from its /metrics (late and dropped ticks, frames mixed), the kernel's UDP drops
  by socket (the bench's listeners, SIPp's, others), and which listeners (`missed`: caller,
  room, member) were short of packets or skipped sequence numbers.

The load generator and the receiver share the 2 cores with the server and with whatever
else runs: the load average is recorded with every figure. CPU % per participant is the
server's own CPU time, not wall-clock throughput, so it depends less on that load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import errno
import json
import multiprocessing
import os
import platform
import random
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
import tomllib
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds, load_average, process_tree, rss_kib
from bench.rtp_pcap import CODECS, BenchCodec, write_rtp_pcap
from control.media.rtp import RtpPacket
from control.media.tone import tone_power
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import LOOPBACK, free_ports
from tests.peers.sipp import SippResult, run_sipp_async

SCENARIO = Path(__file__).resolve().parent / "sipp" / "uac_mixer_load.xml"
TONES = (410.0, 630.0, 970.0, 1330.0, 1790.0)  # one per SIPp process; no harmonic collides
CALLERS = len(TONES)
TICK = 0.02
TOLERANCE = 0.001  # packets out = participants x ticks within 0.1 %
SAMPLE_FRAMES = 75  # 1.5 s of each sampled listener is decoded, the last second analysed
ANALYSED_FRAMES = 50  # the first 0.5 s lets a decoder that starts mid-stream lock on
MAX_SAMPLES = 10
FREESWITCH = {"G711": 0.5, "G722": 1.2}  # % of a core per participant, mod_conference 1.10

# Participants per step: G.711, G.722 and Speex-WB leave a core room to spare; a room of 50
# needs 50, which for Opus is about a whole core (such a step may fail: it is saturated).
PARTICIPANTS = {"G711": 100, "G722": 100, "SpeexWB": 50, "Opus": 50}


# --- the receiver (its own process: every listener's socket) ---------------------------


# Linux: SO_TIMESTAMPNS (= SCM_TIMESTAMPNS) gives each datagram the kernel's receive time
# (struct timespec, CLOCK_REALTIME), which the socket module does not name.
SO_TIMESTAMPNS = 35
_CMSG_SPACE = socket.CMSG_SPACE(16)


def _arrival(ancillary: list[tuple[int, int, bytes]], fallback: float) -> float:
    """A datagram's kernel arrival time, so a receiver that was descheduled and read late
    does not stretch or shrink a listener's span (its read time would)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec * 1e-9
    return fallback


def _bind_block(base: int, calls: int) -> list[socket.socket] | None:
    """Sockets on base+1+4k (k < calls), if SIPp's own base and base+2 are free too."""
    held: list[socket.socket] = []
    try:
        for port in (base, base + 2):  # SIPp binds -mp and -mp+2 itself: only test them
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind((LOOPBACK, port))
            finally:
                probe.close()
        for k in range(calls):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((LOOPBACK, base + 1 + 4 * k))
            sock.setblocking(False)
        return held
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        for sock in held:
            sock.close()
        return None


def _receiver(conn: Connection, calls_per_caller: list[int], seed: int) -> None:
    """Bind every listener's port, report the SIPp -mp bases, then count until told to stop.

    Commands on `conn`: ("seen",) -> how many listeners have had RTP so far;
    ("start", sampled) -> open the window, keeping the last SAMPLE_FRAMES datagrams of the
    sampled listeners; ("end",) -> per listener: packets received in the window, the ticks
    its stream spanned (first to last arrival / 20 ms, + 1), the packets the server sent
    over that span (by sequence number), and the samples; ("stop",).

    A listener's ticks come from its own arrival times (the kernel's, SO_TIMESTAMPNS), so
    the count is not off by one tick at each edge of the window, which 0.1 % could not
    absorb, nor by a receiver that read late.
    """
    rng = random.Random(seed)
    socks: list[socket.socket] = []
    bases: list[int] = []
    for calls in calls_per_caller:
        for _ in range(200):
            base = rng.randrange(10000, 19000, 2)  # below the ephemeral range and the tests'
            if any(abs(base - b) < 4 * 200 for b in bases):
                continue
            block = _bind_block(base, calls)
            if block is not None:
                socks.extend(block)
                bases.append(base)
                break
        else:
            conn.send(("error", "no free block of media ports"))
            return
    conn.send(("ready", bases))
    n = len(socks)
    counts = [0] * n
    first_t = [0.0] * n
    last_t = [0.0] * n
    first_seq = [-1] * n
    top_seq = [-1] * n
    counting = False
    recording: dict[int, deque[bytes]] = {}
    seen: set[int] = set()
    poller = select.epoll()
    index = {}
    for i, sock in enumerate(socks):
        poller.register(sock.fileno(), select.EPOLLIN)
        index[sock.fileno()] = i
    control = conn.fileno()
    poller.register(control, select.EPOLLIN)
    while True:
        events = poller.poll(0.5)
        now = time.time()  # the kernel timestamps are CLOCK_REALTIME too
        for fd, _ in events:
            if fd == control:
                command = conn.recv()
                if command[0] == "start":
                    counts = [0] * n
                    first_seq = [-1] * n
                    top_seq = [-1] * n
                    counting = True
                    recording = {i: deque(maxlen=SAMPLE_FRAMES) for i in command[1]}
                elif command[0] == "end":
                    counting = False
                    spans = [
                        round((last_t[i] - first_t[i]) / TICK) + 1 if counts[i] else 0
                        for i in range(n)
                    ]
                    sent = [top_seq[i] - first_seq[i] + 1 if counts[i] else 0 for i in range(n)]
                    samples = {i: list(d) for i, d in recording.items()}
                    conn.send((counts, spans, sent, samples))
                    recording = {}
                elif command[0] == "seen":
                    conn.send(len(seen))
                else:
                    for sock in socks:
                        sock.close()
                    return
                continue
            i = index[fd]
            sock = socks[i]
            keep = recording.get(i)
            while True:
                try:
                    data, ancillary, _flags, _addr = sock.recvmsg(2048, _CMSG_SPACE)
                except BlockingIOError:
                    break
                if len(data) < 12 or 192 <= data[1] <= 223:
                    continue  # RTCP on the RTP port (RFC 5761 §4), or not RTP
                seen.add(fd)
                if not counting:
                    continue
                seq = (data[2] << 8) | data[3]
                arrival = _arrival(ancillary, now)
                if counts[i] == 0:
                    first_t[i] = arrival
                    first_seq[i] = top_seq[i] = seq
                else:
                    step = (seq - top_seq[i]) & 0xFFFF
                    if step < 0x8000:
                        top_seq[i] += step
                counts[i] += 1
                last_t[i] = arrival
                if keep is not None:
                    keep.append(data)


# --- what the server and the kernel say about the window --------------------------------

MIXER_COUNTERS = (
    "chorus_mixer_ticks",
    "chorus_mixer_ticks_late",
    "chorus_mixer_ticks_dropped",
    "chorus_mixer_frames_mixed",
    "chorus_mixer_frames_dropped",
    "chorus_mixer_rtp_received",
)
UDP_COUNTERS = ("InDatagrams", "OutDatagrams", "InErrors", "RcvbufErrors", "SndbufErrors")


def _scrape(url: str) -> dict[str, float]:
    """The server's mixer counters from its /metrics (summed over mixer workers), and its
    mixer errors by kind; empty when the scrape fails (the step still runs)."""
    import urllib.request

    found: dict[str, float] = {}
    try:
        with urllib.request.urlopen(url, timeout=5.0) as response:
            text = response.read().decode()
    except OSError:
        return found
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        name = name.replace("_total{", "{").removesuffix("_total")
        if name in MIXER_COUNTERS or name.startswith("chorus_mixer_errors{"):
            found[name] = float(value.split()[0])
    return found


def _udp_counters() -> dict[str, int]:
    """The kernel's UDP counters (/proc/net/snmp, machine-wide): RcvbufErrors counts
    datagrams dropped because a receiving socket's buffer was full, SndbufErrors sends
    refused for a full send buffer."""
    lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()]
    for head, values in zip(lines, lines[1:], strict=False):
        if head[0] == "Udp:" and values[0] == "Udp:" and not values[1].isalpha():
            table = dict(zip(head[1:], values[1:], strict=True))
            return {k: int(table[k]) for k in UDP_COUNTERS if k in table}
    return {}


def _udp_drops() -> dict[int, int]:
    """Datagrams each UDP socket dropped (full receive buffer), by local port: the kernel's
    per-socket `drops` column of /proc/net/udp and udp6 (this machine, every process)."""
    drops: dict[int, int] = {}
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if int(fields[-1]):
                    drops[port] = drops.get(port, 0) + int(fields[-1])
    return drops


def _where_dropped(
    before: dict[int, int],
    after: dict[int, int],
    listener_ports: set[int],
    sipp_bases: list[int],
    server_ports: range,
) -> dict[str, int]:
    """The window's per-socket drops, told apart: the bench's listener sockets (the mix the
    server sent), SIPp's (the mix SIPp also receives on its media port), everything else
    (the server's RTP sockets among them, or another process's)."""
    where = {"listener_sockets": 0, "sipp_sockets": 0, "server_sockets": 0, "other_sockets": 0}
    for port, count in after.items():
        grew = count - before.get(port, 0)
        if grew <= 0:
            continue
        if port in listener_ports:
            where["listener_sockets"] += grew
        elif any(base <= port < base + 4 * 200 for base in sipp_bases):
            where["sipp_sockets"] += grew
        elif port in server_ports:
            where["server_sockets"] += grew
        else:
            where["other_sockets"] += grew
    return where


def _delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after}


def diagnose(
    server: dict[str, float],
    kernel: dict[str, float],
    listeners: list[dict[str, Any]],
    participants: int,
    window_ticks: float,
) -> list[str]:
    """Why a step's delivery check failed, in the order to suspect: the server did not mix
    (late or dropped ticks), the kernel dropped datagrams (full socket buffers), or the
    server sent what the listener never read (the receiver or the network)."""
    reasons = []
    dropped = server.get("chorus_mixer_ticks_dropped", 0)
    late = server.get("chorus_mixer_ticks_late", 0)
    if dropped:
        frames = server.get("chorus_mixer_frames_dropped", 0)
        reasons.append(
            f"server dropped {dropped:.0f} ticks ({frames:.0f} listener frames) catching up "
            "after stalls: the mixer was not scheduled in time"
        )
    if late:
        reasons.append(f"server ran {late:.0f} ticks late (> 10 ms; summed over mixer workers)")
    mixed = server.get("chorus_mixer_frames_mixed")
    if mixed is not None and mixed < participants * window_ticks * (1 - TOLERANCE):
        reasons.append(f"server sent {mixed:.0f} frames for {participants * window_ticks:.0f} due")
    if kernel.get("RcvbufErrors"):
        reasons.append(
            f"kernel dropped {kernel['RcvbufErrors']:.0f} UDP datagrams at full receive buffers"
            f" (machine-wide): {kernel.get('listener_sockets', 0):.0f} on the bench's listener"
            f" sockets, {kernel.get('sipp_sockets', 0):.0f} on SIPp's, "
            f"{kernel.get('server_sockets', 0):.0f} on the server's RTP sockets, "
            f"{kernel.get('other_sockets', 0):.0f} on other processes' sockets"
        )
    if kernel.get("SndbufErrors"):
        reasons.append(f"kernel refused {kernel['SndbufErrors']} UDP sends (full send buffers)")
    short = [entry for entry in listeners if entry["short"]]
    if short:
        reasons.append(
            f"{len(short)} listeners' streams started late or stopped early in the window"
            " (their first or last packet more than 3 ticks inside it)"
        )
    lost = [entry for entry in listeners if entry["seq_skipped"]]
    if lost:
        reasons.append(
            f"{len(lost)} listeners skipped sequence numbers: sent by the server, not read"
        )
    return reasons


# --- one step --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    codec: str
    room_size: int
    participants: int
    workers: int
    warmup: float
    window: float
    silent: bool = False  # the self-check: callers send digital silence, the step must fail
    label: str = ""
    media: str = "python"  # or "native": [rtp] native_media, the C media loop

    @property
    def key(self) -> str:
        base = f"{self.codec}/room{self.room_size}/workers{self.workers}"
        if self.media != "python":
            base += f"/{self.media}"
        return f"{base}/{self.label}" if self.label else base


def _members(step: Step) -> list[list[tuple[int, int]]]:
    """Per SIPp process, its calls in order: (room, member) of each."""
    rooms = step.participants // step.room_size
    calls: list[list[tuple[int, int]]] = [[] for _ in range(CALLERS)]
    for room in range(rooms):
        for member in range(step.room_size):
            calls[member % CALLERS].append((room, member))
    return calls


def _heard(codec: BenchCodec, datagrams: list[bytes]) -> Any:
    """Decode a listener's sampled datagrams in sequence order into PCM."""
    import numpy as np

    packets = sorted((RtpPacket.parse(d) for d in datagrams), key=lambda p: p.sequence)
    dec = codec.new()
    frames = [dec.decode(p.payload) for p in packets][-ANALYSED_FRAMES:]
    return (np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)), dec.sample_rate


def _check_tones(
    step: Step, codec: BenchCodec, caller: int, datagrams: list[bytes]
) -> dict[str, Any]:
    pcm, rate = _heard(codec, datagrams)
    powers = {f: round(tone_power(pcm, rate, f), 1) for f in TONES}
    own = TONES[caller]
    want = [f for f in TONES if step.room_size > CALLERS or f != own]
    weakest = min(powers[f] for f in want) if want else -200.0
    ok = len(pcm) > 0 and weakest > -50.0
    if step.room_size <= CALLERS:
        ok = ok and powers[own] < weakest - 20.0  # mix-minus: not their own voice
    return {"caller": caller, "frames": len(datagrams), "tone_db": powers, "ok": ok}


def _scenario(workdir: Path, name: str, pcap: Path, codec: BenchCodec) -> Path:
    text = SCENARIO.read_text().replace("@PCAP@", str(pcap))
    text = text.replace("@PT@", str(codec.payload_type)).replace("@RTPMAP@", codec.rtpmap)
    xml = workdir / f"{name}.xml"
    xml.write_text(text)
    return xml


async def _prime(sip_port: int, workdir: Path, pcap: Path, codec: BenchCodec) -> None:
    """One short call into every worker's first room, so the mixer workers (started on
    the first attach) are up before the idle RSS is read."""
    inf = workdir / "prime.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"prime{i};\n" for i in range(8)))
    await run_sipp_async(
        _scenario(workdir, "prime", pcap, codec),
        f"{LOOPBACK}:{sip_port}",
        calls=8,
        rate=50,
        pause_ms=200,
        extra_args=["-mp", str(random.randrange(19000, 19800, 2)), "-inf", str(inf)],
        timeout=30,
    )


async def run_step(step: Step, workdir: Path, pcap_seconds: float, pause_ms: int) -> dict[str, Any]:
    codec = CODECS[step.codec]
    members = _members(step)
    calls_per_caller = [len(c) for c in members]
    # every room's members at the same level: the mix of 49 stays below the limiter's knee
    amplitude = 0.0 if step.silent else 0.25 / max(1.0, (step.room_size - 1) ** 0.5)
    pcaps = []
    for caller, freq in enumerate(TONES):
        path = workdir / f"{step.codec}-{caller}-{pcap_seconds:.0f}-{amplitude:.3f}.pcap"
        if not path.exists():
            write_rtp_pcap(
                path, codec, freq, pcap_seconds, amplitude=amplitude, ssrc=0x5EED0000 + caller
            )
        pcaps.append(path)
    (web_port,) = free_ports(1)
    metrics_url = f"http://{LOOPBACK}:{web_port}/metrics"
    overrides: dict[str, dict[str, Any]] = {
        "server": {"log_level": "WARNING", "trace_sip": False},
        "web": {"listen": f"http:{LOOPBACK}:{web_port}", "metrics_public": True},
        "rtp": {
            "codecs": ["PCMA", "PCMU", "G722", "opus", "speex", "telephone-event"],
            "mixer_workers": step.workers,
            "timeout": 60.0,
            "native_media": step.media == "native",
        },
        "conference": {"max_participants": max(100, step.room_size), "max_rooms": 1000},
    }
    chorus = ChorusProcess(overrides)
    low, high = tomllib.loads(chorus.config_path.read_text())["rtp"]["port_range"].split("-")
    server_ports = range(int(low), int(high) + 1)  # the server's (and its workers') RTP
    await asyncio.to_thread(chorus.start, 60.0)
    assert chorus.process is not None
    server_pid = chorus.process.pid
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    receiver = ctx.Process(
        target=_receiver, args=(child, calls_per_caller, os.getpid() ^ int(time.time()))
    )
    tasks: list[asyncio.Task[SippResult]] = []
    try:
        if step.workers:
            await _prime(chorus.sip_port, workdir, pcaps[0], codec)
        await asyncio.sleep(1.0)  # idle, with any mixer workers up
        tree = process_tree(server_pid)
        rss_idle = rss_kib(tree)
        receiver.start()
        message = await asyncio.to_thread(parent.recv)
        if message[0] != "ready":
            raise RuntimeError(message[1])
        bases: list[int] = message[1]
        ports: list[tuple[int, int, int]] = []  # (caller, room, member) per listener index
        sip_ports = free_ports(CALLERS)
        rate = 30
        for caller, calls in enumerate(members):
            xml = _scenario(workdir, f"uac-{caller}", pcaps[caller], codec)
            inf = workdir / f"rooms-{caller}.csv"
            inf.write_text("SEQUENTIAL\n" + "".join(f"mix{room};\n" for room, _m in calls))
            ports.extend((caller, room, member) for room, member in calls)
            tasks.append(
                asyncio.create_task(
                    run_sipp_async(
                        xml,
                        f"{LOOPBACK}:{chorus.sip_port}",
                        calls=len(calls),
                        rate=rate,
                        local_port=sip_ports[caller],
                        pause_ms=pause_ms,
                        recv_timeout_ms=20_000,
                        extra_args=["-mp", str(bases[caller]), "-inf", str(inf)],
                        timeout=pause_ms / 1000 + 60,
                    )
                )
            )
        t0 = time.monotonic()
        deadline = t0 + step.participants / (rate * CALLERS) + 20.0
        while True:
            await asyncio.sleep(0.25)
            parent.send(("seen",))
            up = await asyncio.to_thread(parent.recv)
            if up == step.participants or time.monotonic() > deadline:
                break
            if all(t.done() for t in tasks):
                break
        setup = time.monotonic() - t0
        await asyncio.sleep(step.warmup)
        stride = max(1, len(ports) // MAX_SAMPLES)
        sampled = list(range(0, len(ports), stride))[:MAX_SAMPLES]
        tree = process_tree(server_pid)
        load_before = load_average()
        server1 = await asyncio.to_thread(_scrape, metrics_url)  # outside the window
        kernel1 = _udp_counters()
        drops1 = _udp_drops()
        t1 = time.monotonic()
        parent.send(("start", sampled))
        cpu1 = cpu_seconds(tree)
        by_process1 = [cpu_seconds([pid]) for pid in tree]
        await asyncio.sleep(step.window)
        cpu2 = cpu_seconds(tree)
        by_process2 = [cpu_seconds([pid]) for pid in tree]
        t2 = time.monotonic()
        parent.send(("end",))
        kernel2 = _udp_counters()
        drops2 = _udp_drops()
        server2 = await asyncio.to_thread(_scrape, metrics_url)
        counts, spans, sent, samples = await asyncio.to_thread(parent.recv)
        rss_steady = rss_kib(tree)
        load_after = load_average()
        results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            parent.send(("stop",))
        await asyncio.to_thread(receiver.join, 10.0)
        await asyncio.to_thread(chorus.stop)
    seconds = t2 - t1
    window_ticks = seconds / TICK
    received = sum(counts)
    expected = sum(spans)  # participants x ticks, each listener over its own span
    skipped = sum(max(0, s - c) for s, c in zip(sent, counts, strict=True))
    short = sum(1 for s in spans if s < window_ticks - 3)  # started late or stopped early
    missed = [
        {
            "listener": i,
            "caller": ports[i][0],
            "room": ports[i][1],
            "member": ports[i][2],
            "received": counts[i],
            "ticks_spanned": spans[i],
            "sent_by_seq": sent[i],
            "seq_skipped": max(0, sent[i] - counts[i]),
            "short": spans[i] < window_ticks - 3,
        }
        for i in range(len(counts))
        if counts[i] < spans[i] * (1 - TOLERANCE)
        or sent[i] > counts[i]
        or spans[i] < window_ticks - 3
    ]
    server = _delta(server1, server2)
    kernel = _delta(kernel1, kernel2)
    listener_ports = {
        bases[c] + 1 + 4 * k for c, calls in enumerate(members) for k in range(len(calls))
    }
    kernel.update(_where_dropped(drops1, drops2, listener_ports, bases, server_ports))
    tones = [_check_tones(step, codec, ports[i][0], samples.get(i, [])) for i in sampled]
    cpu = cpu2 - cpu1
    cpu_pp = 100.0 * cpu / seconds / step.participants
    sipp_ok = all(r.ok for r in results)
    ratio = received / expected if expected else 0.0
    ok = (
        abs(ratio - 1.0) <= TOLERANCE
        and skipped <= TOLERANCE * expected
        and short == 0
        and all(t["ok"] for t in tones)
        and len(tones) > 0
        and sipp_ok
    )
    why = diagnose(server, kernel, missed, step.participants, window_ticks)
    why += [f"caller {t['caller']}'s listener heard {t['tone_db']}" for t in tones if not t["ok"]]
    if not sipp_ok:
        why.append("a SIPp caller failed: calls not set up, or dropped")
    return {
        "step": step.key,
        "participants": step.participants,
        "rooms": step.participants // step.room_size,
        "setup_s": round(setup, 2),
        "window_s": round(seconds, 3),
        "packets_received": received,
        "packets_expected": round(expected),
        "received_ratio": round(ratio, 5),
        "seq_skipped": skipped,
        "listeners_short": short,
        "received_per_wall_tick": round(received / (step.participants * window_ticks), 5),
        "cpu_s": round(cpu, 3),
        "server_processes": len(tree),
        # the server first, then its mixer workers (and any other child): how evenly the
        # rooms' work spread over the workers
        "cpu_s_by_process": [
            round(b - a, 3) for a, b in zip(by_process1, by_process2, strict=True)
        ],
        "cpu_percent_per_participant": round(cpu_pp, 3),
        "participants_per_core": round(100.0 / cpu_pp, 1) if cpu_pp > 0 else None,
        "rss_idle_mib": round(rss_idle / 1024, 1),
        "rss_steady_mib": round(rss_steady / 1024, 1),
        "rss_kib_per_participant": round((rss_steady - rss_idle) / step.participants, 1),
        "load_average": {"before": load_before, "after": load_after},
        "server_counters": server,
        "kernel_udp": kernel,
        "listeners_missing": len(missed),
        "missed": missed[:20],  # which participant missed what (the first 20)
        "why": [] if ok else why,
        "tones": tones,
        "sipp": [
            {"ok": r.ok, "stats": None if r.stats is None else [r.stats.successful, r.stats.failed]}
            for r in results
        ],
        "ok": ok,
    }


def summarise(runs: list[dict[str, Any]], codec: str) -> dict[str, Any]:
    """Median over all runs of one configuration; how many passed is counted next to it
    (a failed run's CPU is still a measurement: of a server that fell behind, a floor)."""
    good = [r for r in runs if r["ok"]]
    use = runs
    cpu = statistics.median(r["cpu_percent_per_participant"] for r in use)
    summary: dict[str, Any] = {
        "runs": len(runs),
        "passed": len(good),
        "participants": runs[0]["participants"],
        "cpu_percent_per_participant": round(cpu, 3),
        "cpu_percent_per_participant_runs": [r["cpu_percent_per_participant"] for r in runs],
        "participants_per_core": round(100.0 / cpu, 1) if cpu > 0 else None,
        "rss_kib_per_participant": round(
            statistics.median(r["rss_kib_per_participant"] for r in use), 1
        ),
        "received_ratio_runs": [r["received_ratio"] for r in runs],
        "load_average_runs": [r["load_average"]["after"][0] for r in runs],
    }
    if codec in FREESWITCH:
        summary["freeswitch_cpu_percent_per_participant"] = FREESWITCH[codec]
        summary["ratio_to_freeswitch"] = round(FREESWITCH[codec] / cpu, 2) if cpu > 0 else None
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    warmup = 1.5 if args.quick else 2.0
    window = 4.0 if args.quick else args.window
    runs = 1 if args.quick else args.runs
    steps = [
        Step(
            codec,
            room,
            (
                max(room, PARTICIPANTS[codec] // room * room)
                if args.participants is None
                else args.participants
            )
            * (max(1, workers) if args.scale else 1),
            workers,
            warmup,
            window,
            media=media,
        )
        for workers in args.workers
        for codec in args.codecs
        for room in args.rooms
        for media in args.media  # innermost: the paths alternate, under the same load
    ]
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python -m bench.mixer_load", *sys.argv[1:]]),
        "method": "SIPp play_pcap_audio, every member talking; server CPU time over the window",
        "steps": [],
        "summary": {},
    }
    with tempfile.TemporaryDirectory(prefix="mixer-load-") as tmp:
        workdir = Path(tmp)
        for run_index in range(runs):  # interleaved, so the machine's load spreads evenly
            for step in steps:
                result["steps"].append(await _run_logged(step, workdir, run_index))
        for step in steps:
            runs_of = [r for r in result["steps"] if r["step"] == step.key and "cpu_s" in r]
            if runs_of:
                result["summary"][step.key] = summarise(runs_of, step.codec)
            else:
                result["summary"][step.key] = {"runs": 0, "passed": 0}
        for step in steps:  # the C media loop against the Python path, measured alongside
            python_key = step.key.removesuffix(f"/{step.media}")
            if step.media == "python" or python_key not in result["summary"]:
                continue
            ours = result["summary"][step.key].get("cpu_percent_per_participant")
            theirs = result["summary"][python_key].get("cpu_percent_per_participant")
            if ours and theirs:
                result["summary"][step.key]["ratio_to_python"] = round(ours / theirs, 3)
        fewest = min(args.workers)
        for step in steps:  # N workers against the fewest asked for, same codec/room/path
            one = result["summary"].get(dataclasses.replace(step, workers=fewest).key)
            ours = result["summary"][step.key]
            if step.workers == fewest or not one or not one.get("cpu_percent_per_participant"):
                continue
            if ours.get("cpu_percent_per_participant"):
                ours[f"vs_workers{fewest}"] = {
                    "participants": round(ours["participants"] / one["participants"], 2),
                    "cpu_per_participant": round(
                        ours["cpu_percent_per_participant"] / one["cpu_percent_per_participant"], 3
                    ),
                    "passed": f"{ours['passed']}/{ours['runs']} vs {one['passed']}/{one['runs']}",
                }
        if not args.no_checks:
            # A step whose callers send only digital silence must fail (no input, no pass).
            silent = Step("G711", 5, 20, 0, warmup, min(window, 4.0), silent=True, label="silent")
            done = await _run_logged(silent, workdir, 0)
            result["self_check_silent_step_failed"] = not done["ok"]
            result["steps"].append(done)
            # The projection (100 / CPU % per participant) checked: one worker-less server
            # with 80 % of a core's projected participants must still pass.
            result["near_capacity"] = {}
            for codec in [] if args.quick else args.codecs:
                summary = result["summary"].get(f"{codec}/room5/workers0", {})
                per_core = summary.get("participants_per_core")
                if not per_core:
                    continue
                n = max(5, int(0.8 * per_core) // 5 * 5)
                step = Step(codec, 5, n, 0, warmup, window, label="near-capacity")
                done = await _run_logged(step, workdir, 0)
                result["steps"].append(done)
                result["near_capacity"][codec] = {
                    "participants": n,
                    "projected_per_core": per_core,
                    "passed": done["ok"],
                    "cpu_percent_of_a_core": done.get("cpu_percent_per_participant", 0) * n,
                    "received_ratio": done.get("received_ratio"),
                    "load_average": done.get("load_average"),
                }
    return result


async def _run_logged(step: Step, workdir: Path, run_index: int) -> dict[str, Any]:
    setup_estimate = step.participants / (30 * CALLERS) + 4.0
    pause_ms = int((setup_estimate + step.warmup + step.window + 2.0) * 1000)
    pcap_seconds = pause_ms / 1000 + 3.0
    try:
        done = await run_step(step, workdir, pcap_seconds, pause_ms)
    except Exception as exc:  # a step that cannot run is a failed step, reported
        done = {"step": step.key, "ok": False, "error": repr(exc)}
    done["run"] = run_index
    print(
        step.key,
        step.participants,
        "ok" if done["ok"] else "FAIL",
        done.get("cpu_percent_per_participant"),
        done.get("received_ratio"),
        done.get("load_average"),
        file=sys.stderr,
        flush=True,
    )
    for reason in done.get("why", []):
        print("   ", reason, file=sys.stderr, flush=True)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run each, 4 s window")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=10.0, help="steady window, seconds")
    parser.add_argument("--codecs", nargs="+", default=list(CODECS), choices=list(CODECS))
    parser.add_argument("--rooms", nargs="+", type=int, default=[5, 50])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--participants", type=int, help="override the per-codec count")
    parser.add_argument(
        "--scale",
        action="store_true",
        help="N workers carry N times the participants (1 -> 2 workers scaling)",
    )
    parser.add_argument(
        "--media",
        nargs="+",
        default=["python"],
        choices=["python", "native"],
        help="mixer media path(s): native is [rtp] native_media (the C media loop)",
    )
    parser.add_argument(
        "--no-checks", action="store_true", help="skip the silent and near-capacity steps"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    failed = [k for k, v in result["summary"].items() if v.get("passed", 0) == 0]
    return 1 if failed or result.get("self_check_silent_step_failed") is False else 0


if __name__ == "__main__":
    sys.exit(main())
