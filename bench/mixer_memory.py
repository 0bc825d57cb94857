"""Memory per embedded-mixer participant, taken apart (issue 14).

Each step runs in a fresh process: rooms of `--room` participants of one codec, built
through the classes the server uses (bench/profile_mixer.py's core load: ParticipantStream,
MixRoom, the mixer's codec tuning), every participant talking on every tick, with the
server's young-generation collector threshold (`[server] gc_threshold`, control.server.
tune_gc). After the ticks it reads, per participant:

* `rss_kib`: the process's RSS growth (VmRSS) over building and running the rooms;
* `malloc_in_use_kib` / `malloc_free_kib`: glibc's heap bytes in use and the free bytes it
  keeps (mallinfo2) — RSS that is free heap is garbage that was alive at once and is not
  given back;
* `libopus_kib`: the libopus states alive in the rooms (encoders and decoders counted,
  times opus_encoder_get_size / opus_decoder_get_size), and the states themselves
  (`codec_states`: Opus and Speex encoders and decoders created);
* `cyclic_garbage_per_tick`: objects only the cyclic collector frees, made per tick (the
  collector off for `--garbage-ticks` ticks, then one collection). The server collects
  its young generation every `gc_threshold` allocations, so per-tick cycles that hold
  buffers pile up between collections.

The RTP the phones send is made tick by tick (not held in lists, which would be counted).

    python -m bench.mixer_memory        # Opus, Speex-WB, G.722, G.711; 10, 50, 100 each
    python -m bench.mixer_memory --codecs Opus --participants 50 --gc-threshold 700

Live figures (SIPp callers into `chorus serve`) are bench/mixer_load.py's
`rss_kib_per_participant`.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import multiprocessing
import os
import platform
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from bench.profile_mixer import CODECS, TONES, build_core, payloads, run_core
from control.media.codecs import OpusCodec, SpeexCodec
from control.media.mixroom import MixRoom
from control.media.rtp import RtpPacket
from control.media.stream import ParticipantStream
from control.settings import ServerConfig

LOOPBACK = "127.0.0.1"
# (stream, its datagram for tick k, address): run_core's feed, tick k's packet made on demand
Feed = tuple[ParticipantStream, Any, tuple[str, int]]


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc_kib() -> tuple[float, float]:
    """glibc's (in use, free but kept) heap KiB; (0, 0) where mallinfo2 is missing."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return 0.0, 0.0
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 1024, info.fordblks / 1024


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _libopus_sizes() -> tuple[int, int]:
    """Bytes of one mono libopus encoder and decoder (opus_*_get_size)."""
    import opuslib.api

    lib = opuslib.api.libopus
    lib.opus_encoder_get_size.restype = ctypes.c_int
    lib.opus_decoder_get_size.restype = ctypes.c_int
    return int(lib.opus_encoder_get_size(1)), int(lib.opus_decoder_get_size(1))


class _Phone:
    """A participant's RTP, tick k made when the tick reads it (payloads cycle over 50)."""

    def __init__(self, pt: int, step: int, ssrc: int, source: list[bytes]) -> None:
        self._pt, self._step, self._ssrc, self._source = pt, step, ssrc, source

    def __getitem__(self, k: int) -> bytes:
        packet = RtpPacket(self._pt, k & 0xFFFF, k * self._step, self._ssrc, self._source[k % 50])
        return packet.serialize()


def _build(codec: str, room_size: int, participants: int) -> tuple[list[MixRoom], list[Feed]]:
    rooms, built = build_core(codec, room_size, participants, 1, False)
    _name, _rate, pt, _ch, step = CODECS[codec]
    amplitude = 0.25 / max(1.0, (room_size - 1) ** 0.5)  # as build_core's tones
    tones = [payloads(codec, f, 50, amplitude) for f in TONES]
    feeds = [
        (stream, _Phone(pt, step, 1000 + index, tones[index % room_size % len(TONES)]), addr)
        for index, (stream, _datagrams, addr) in enumerate(built)
    ]
    return rooms, feeds


def codec_states(rooms: list[MixRoom]) -> dict[str, int]:
    """Encoder and decoder states alive in the rooms (a participant's decoder and its
    listener chain's encoder; each room's shared chains)."""
    codecs = []
    for room in rooms:
        for stream in room.streams.values():
            codecs += [stream._decoder, stream.private.codec]  # noqa: SLF001 - a census
        codecs += [chain.codec for chain in room._shared.values()]  # noqa: SLF001
    out = {"opus_encoders": 0, "opus_decoders": 0, "speex_encoders": 0, "speex_decoders": 0}
    for codec in codecs:
        kind = "opus" if isinstance(codec, OpusCodec) else "speex"
        if isinstance(codec, OpusCodec | SpeexCodec):
            out[f"{kind}_encoders"] += codec._enc is not None  # noqa: SLF001
            out[f"{kind}_decoders"] += codec._dec is not None  # noqa: SLF001
    return out


def measure(
    codec: str, room_size: int, participants: int, ticks: int, gc_threshold: int, garbage: int
) -> dict[str, Any]:
    """One step, in this process (call it in a fresh one: freed pages would be reused)."""
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(gc_threshold, middle, old)  # as control.server.tune_gc
    # Imports, libraries, first-use caches; kept alive, so no freed pages are reused below.
    warm_rooms, warm_feeds = _build(codec, room_size, room_size)
    run_core(warm_rooms, warm_feeds, 50)
    gc.collect()
    rss0, (used0, free0) = _rss_kib(), _malloc_kib()
    rooms, feeds = _build(codec, room_size, participants)
    counters = run_core(rooms, feeds, ticks)
    if counters.frames_mixed != ticks * participants:
        raise RuntimeError(f"{codec}: {counters.frames_mixed} frames sent, not every listener's")
    rss1, (used1, free1) = _rss_kib(), _malloc_kib()
    gc.collect()
    gc.disable()
    run_core(rooms, feeds, ticks + garbage, ticks)
    cycles = gc.collect()
    gc.enable()
    states = codec_states(rooms)
    del warm_rooms, warm_feeds
    enc_size, dec_size = _libopus_sizes()
    libopus = states["opus_encoders"] * enc_size + states["opus_decoders"] * dec_size
    n = participants
    return {
        "codec": codec,
        "room": room_size,
        "participants": n,
        "ticks": ticks,
        "gc_threshold": gc_threshold,
        "rss_kib": round((rss1 - rss0) / n, 1),
        "malloc_in_use_kib": round((used1 - used0) / n, 1),
        "malloc_free_kib": round((free1 - free0) / n, 1),
        "libopus_kib": round(libopus / 1024 / n, 1),
        "libopus_state_bytes": {"encoder": enc_size, "decoder": dec_size},
        "codec_states": states,
        "cyclic_garbage_per_tick": round(cycles / garbage, 2),
    }


def _child(conn: Connection, *args: Any) -> None:
    try:
        conn.send(measure(*args))
    except Exception as exc:  # reported by the parent
        conn.send({"error": repr(exc)})


def run_step(*args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, *args))
    proc.start()
    result: dict[str, Any] = parent.recv()
    proc.join()
    if "error" in result:
        raise RuntimeError(result["error"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--codecs", nargs="+", default=["Opus", "SpeexWB", "G722", "G711"], choices=list(CODECS)
    )
    parser.add_argument("--participants", nargs="+", type=int, default=[10, 50, 100])
    parser.add_argument("--room", type=int, default=5, help="participants per room")
    parser.add_argument("--ticks", type=int, default=500, help="20 ms ticks before reading")
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=ServerConfig().gc_threshold,
        help="young-generation threshold (the server's default; Python's is 700)",
    )
    parser.add_argument("--garbage-ticks", type=int, default=50)
    args = parser.parse_args(argv)
    steps = []
    for codec in args.codecs:
        for n in args.participants:
            n = max(args.room, n // args.room * args.room)
            step = run_step(codec, args.room, n, args.ticks, args.gc_threshold, args.garbage_ticks)
            steps.append(step)
            print(
                f"{codec:8} {n:4} participants: RSS {step['rss_kib']:7.1f} KiB each, "
                f"malloc in use {step['malloc_in_use_kib']:7.1f} "
                f"free {step['malloc_free_kib']:7.1f}, "
                f"libopus {step['libopus_kib']:5.1f}, cyclic garbage "
                f"{step['cyclic_garbage_per_tick']} objects/tick",
                file=sys.stderr,
                flush=True,
            )
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M %Z", time.gmtime()),
        "command": " ".join(["python -m bench.mixer_memory", *sys.argv[1:]]),
        "steps": steps,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
