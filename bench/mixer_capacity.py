"""Best cases of the embedded mixer: one talker per room, the rest silent.

BEST CASE, not the capacity figure. The capacity figure is bench/mixer_load.py: SIPp
callers through `chorus serve`, every member talking, every listener's stream counted on
real UDP (FreeSWITCH's reference method). Here only one participant per room talks, so
every other listener shares one encode, and (1) has no sockets at all: both are upper
bounds, kept to show what encode sharing and the UDP path cost.

Two measurements, one run, one JSON document:

1. **core** — the mixer core fed directly, bypassing sockets: prebuilt RTP datagrams go
   into `ParticipantStream.receive` and `MixRoom.tick` runs back to back.  This gives the
   CPU cost per participant per 20 ms tick without UDP system calls, with encode-once
   sharing on and off (the sharing gain), for G.711 (PCMU), G.722 and Opus in rooms of 5
   and of 50.  One participant per room talks (a tone), the others send silence, as in
   a real conference where most people listen.
2. **live** — the real `EmbeddedMixer` on loopback UDP with synthetic phones in a separate
   process (one socket per participant, real RTP every 20 ms).  The participant count
   grows from an estimate until a step shows a late tick or a dropped frame; "carried" is
   the largest count that showed neither.  CPU per participant is this process's CPU time
   over the measured window divided by participants.

    python -m bench.mixer_capacity --quick        # about two minutes
    python -m bench.mixer_capacity                # longer steps, more of them
    python -m bench.mixer_capacity --no-share     # live runs without encode sharing

The machine has 2 cores shared with other work: figures are this machine's, on this day.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from control.media.answer import answer_audio, supported_rtpmaps
from control.media.codecs import codec_for
from control.media.engine import ParticipantId, RoomId
from control.media.mixer import EmbeddedMixer
from control.media.mixroom import MixCounters, MixRoom, Outgoing
from control.media.ports import PortAllocator
from control.media.rtp import RtpPacket
from control.media.srtp import SrtpPolicy
from control.media.stream import ParticipantStream
from control.media.tone import sine
from control.sip import sdp

CODECS: dict[str, tuple[str, int, int, int | None]] = {
    "G711": ("PCMU", 8000, 0, None),
    "G722": ("G722", 8000, 9, None),
    "Opus": ("opus", 48000, 111, 2),
}
ENGINE_CODECS = ("opus", "G722", "PCMU", "PCMA", "telephone-event")
LOOPBACK = "127.0.0.1"


def _offer(codec: str, port: int) -> sdp.SessionDescription:
    name, rate, pt, channels = CODECS[codec]
    media = sdp.audio_media(port, [sdp.RtpMap(pt, name, rate, channels)], ptime=20)
    return sdp.build_offer(
        origin=sdp.Origin("-", "1", 1, "IN", "IP4", LOOPBACK),
        connection=sdp.Connection.for_address(LOOPBACK),
        media=[media],
    )


def _payloads(codec: str, frames: int, talker: bool) -> list[bytes]:
    """`frames` encoded 20 ms frames: a 440 Hz tone for a talker, silence for the rest."""
    name, rate, _pt, channels = CODECS[codec]
    factory = codec_for(name, rate, channels or 1)
    assert factory is not None
    enc = factory()
    n = enc.frame_samples(20)
    pcm = sine(440.0, frames * 0.02, enc.sample_rate, amplitude=0.3 if talker else 0.0)
    return [enc.encode(pcm[i * n : (i + 1) * n]) for i in range(frames)]


# --- 1. core ---------------------------------------------------------------------------


def core_cost(codec: str, room_size: int, rooms: int, share: bool, ticks: int) -> dict[str, Any]:
    """CPU seconds per participant per tick with the core fed directly (no sockets)."""
    rng = random.Random(1)
    supported = supported_rtpmaps(ENGINE_CODECS)
    _name, _rate, pt, _ch = CODECS[codec]
    step = {"G711": 160, "G722": 160, "Opus": 960}[codec]
    talk = _payloads(codec, 50, True)
    quiet = _payloads(codec, 50, False)
    mixes = []
    feeds: list[tuple[ParticipantStream, list[bytes], tuple[str, int]]] = []
    for r in range(rooms):
        room = MixRoom(RoomId(f"r{r}"), share_encoding=share)
        for i in range(room_size):
            port = 10000 + 2 * (r * room_size + i)
            terms = answer_audio(
                _offer(codec, port),
                0,
                supported=supported,
                srtp=SrtpPolicy.OPTIONAL,
                randbytes=rng.randbytes,
            )
            stream = ParticipantStream(terms, rng=rng, now=0.0)
            room.add(ParticipantId(f"p{i}"), stream)
            source = talk if i == 0 else quiet
            datagrams = [
                RtpPacket(pt, k & 0xFFFF, k * step, 1000 + i, source[k % 50]).serialize()
                for k in range(ticks)
            ]
            feeds.append((stream, datagrams, (LOOPBACK, port)))
        mixes.append(room)
    counters = MixCounters()
    events: list[Any] = []
    out: list[Outgoing] = []
    warm = min(20, ticks // 4)
    cpu0 = 0.0
    for k in range(ticks):
        if k == warm:
            cpu0 = time.process_time()
            encodes0 = counters.encodes
        now = k * 0.02
        for stream, datagrams, addr in feeds:
            stream.receive(datagrams[k], addr, now)
        for room in mixes:
            out.clear()
            room.tick(now + 0.001, counters, events, out, rtp_timeout=60.0)
    cpu = time.process_time() - cpu0
    participants = room_size * rooms
    per = cpu / ((ticks - warm) * participants)
    return {
        "participants": participants,
        "cpu_us_per_participant_tick": round(per * 1e6, 2),
        "encodes_per_tick": round((counters.encodes - encodes0) / (ticks - warm), 2),
        # one core's worth of 20 ms ticks, before UDP and event-loop costs
        "core_only_participants_per_core": int(0.02 / per),
    }


# --- 2. live ---------------------------------------------------------------------------


def paced_phones(
    ports: list[int],
    payload: Callable[[int, int], bytes],
    pt: int,
    step: int,
    seconds: float,
    ready: Any,
) -> None:
    """Synthetic phones: one UDP socket per port, `payload(index, k)` every 20 ms, drift-free."""
    socks = []
    for _ in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((LOOPBACK, 0))
        s.setblocking(False)
        socks.append(s)
    ready.set()
    start = time.monotonic()
    k = 0
    while time.monotonic() - start < seconds:
        for index, (port, s) in enumerate(zip(ports, socks, strict=True)):
            data = RtpPacket(pt, k & 0xFFFF, k * step, 5000 + index, payload(index, k))
            try:
                s.sendto(data.serialize(), (LOOPBACK, port))
            except OSError:
                pass
        k += 1
        delay = start + k * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for s in socks:
        s.close()


def _sender(targets: list[tuple[int, bool]], codec: str, seconds: float, ready: Any) -> None:
    """One talker (a tone) or a silent phone per target."""
    _name, _rate, pt, _ch = CODECS[codec]
    step = {"G711": 160, "G722": 160, "Opus": 960}[codec]
    talk = _payloads(codec, 50, True)
    quiet = _payloads(codec, 50, False)
    ports = [port for port, _talker in targets]
    talkers = [talker for _port, talker in targets]
    paced_phones(
        ports, lambda i, k: (talk if talkers[i] else quiet)[k % 50], pt, step, seconds, ready
    )


async def live_step(
    codec: str, room_size: int, participants: int, share: bool, seconds: float
) -> dict[str, Any]:
    low = random.randrange(20000, 50000, 2)
    mixer = EmbeddedMixer(
        PortAllocator(low, low + 2 * participants + 200),
        host=LOOPBACK,
        codecs=ENGINE_CODECS,
        rtp_timeout=60.0,
        srtp="optional",
        rng=random.Random(2),
        share_encoding=share,
    )
    targets = []
    for i in range(participants):
        room = RoomId(f"room{i // room_size}")
        answer = await mixer.attach(room, ParticipantId(f"p{i}"), _offer(codec, 9), 0)
        targets.append((answer.accept.port, i % room_size == 0))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    warmup = 1.0
    proc = ctx.Process(target=_sender, args=(targets, codec, warmup + seconds + 0.5, ready))
    proc.start()
    await asyncio.to_thread(ready.wait, 30.0)
    await asyncio.sleep(warmup)
    before = await mixer.stats()
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu0
    after = await mixer.stats()
    await asyncio.to_thread(proc.join, 10.0)
    await mixer.close()
    delta = {k: getattr(after, k) - getattr(before, k) for k in asdict(after)}
    return {
        "participants": participants,
        "ticks": delta["ticks"],
        "late_ticks": delta["late_ticks"],
        "dropped_frames": delta["frames_dropped"],
        "frames_mixed": delta["frames_mixed"],
        "packets_in": delta["packets_in"],
        "cpu_percent_per_participant": round(100 * cpu / seconds / participants, 3),
        "ok": delta["late_ticks"] == 0 and delta["frames_dropped"] == 0,
    }


async def live_capacity(
    codec: str, room_size: int, estimate: int, share: bool, seconds: float, steps: int
) -> dict[str, Any]:
    """Grow by 1.5x while steps pass, then bisect once between the last pass and fail."""
    n = max(room_size, (estimate // room_size) * room_size)
    best: dict[str, Any] | None = None
    tried = []
    fail: int | None = None
    for _ in range(steps):
        step = await live_step(codec, room_size, n, share, seconds)
        tried.append(step)
        if step["ok"]:
            best = step
            grow = n * 3 // 2 if fail is None else (n + fail) // 2
            n = max(n + room_size, (grow // room_size) * room_size)
            if fail is not None and n >= fail:
                break
        else:
            fail = n
            lower = best["participants"] if best else 0
            n = ((lower + n) // 2 // room_size) * room_size
            if n <= lower or n < room_size:
                break
    return {
        "carried": best["participants"] if best else 0,
        "cpu_percent_per_participant": best["cpu_percent_per_participant"] if best else None,
        "steps": tried,
    }


async def run(quick: bool, share: bool) -> dict[str, Any]:
    core_ticks = 60 if quick else 250
    seconds = 2.0 if quick else 8.0
    steps = 3 if quick else 6
    result: dict[str, Any] = {
        "best_case": "one talker per room, the others silent; core = no sockets",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "quick": quick,
        "live_share_encoding": share,
        "core": {},
        "live": {},
    }
    for codec in CODECS:
        for size, rooms in ((5, 20), (50, 2)):
            key = f"{codec}/room{size}"
            shared = core_cost(codec, size, rooms, True, core_ticks)
            alone = core_cost(codec, size, rooms, False, core_ticks)
            result["core"][key] = {
                "shared": shared,
                "per_listener": alone,
                "sharing_gain": round(
                    alone["cpu_us_per_participant_tick"] / shared["cpu_us_per_participant_tick"],
                    2,
                ),
            }
            chosen = shared if share else alone
            # UDP in and out through one event loop costs about as much again as G.711
            # mixing; start the live search at a third of the core-only figure.
            estimate = min(400, chosen["core_only_participants_per_core"] // 3)
            result["live"][key] = await live_capacity(codec, size, estimate, share, seconds, steps)
            print(key, json.dumps(result["live"][key]["carried"]), file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short steps (about 2 minutes)")
    parser.add_argument(
        "--no-share", action="store_true", help="live runs encode per listener (baseline)"
    )
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.quick, not args.no_share))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
