"""Where the embedded mixer's time goes with every participant talking (issue 14, step 1).

Two loads, each run once plain (wall and CPU per participant-tick) and once under
cProfile, whose self times are attributed to the media stages of the hot path:

* **core** — `ParticipantStream.receive` fed prebuilt RTP datagrams and `MixRoom.tick`
  run back to back (no sockets, no event loop): parse, jitter, decode, resample, mix,
  encode, RTP stamping, RTCP bookkeeping;
* **live** — the real `EmbeddedMixer` in this process on loopback UDP, with every
  participant's phone in a sender process (one socket each, a tone every 20 ms): adds the
  event loop's receive path (one `datagram_received` per packet) and `sendto`.

With `--srtp` the core load runs SDES-SRTP (libsrtp) both ways.

    python -m bench.profile_mixer                        # G.711 and G.722, rooms of 5 and 50
    python -m bench.profile_mixer --codecs G711 --rooms 5 --participants 100

Stage attribution: a function's self time goes to the stage of its module (rtp.py → RTP
parse/stamp, jitter.py → jitter, …); numpy, builtins and the standard library have no stage
of their own and are charged to their callers, in proportion to the time each caller
spent in them.  cProfile's own overhead inflates Python-level functions relative to C
ones, so the percentages rank the stages; the plain run gives the real cost.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import os
import platform
import pstats
import random
import statistics
import sys
import time
from collections import defaultdict
from typing import Any

from bench.mixer_capacity import paced_phones
from control.media.answer import answer_audio, supported_rtpmaps
from control.media.codecs import CodecTuning, codec_for
from control.media.engine import ParticipantId, RoomId
from control.media.mixer import EmbeddedMixer
from control.media.mixroom import MixCounters, MixRoom, Outgoing
from control.media.ports import PortAllocator
from control.media.rtp import RtpPacket
from control.media.srtp import SrtpContext, SrtpPolicy, generate_crypto
from control.media.stream import MIXER_TUNING, ParticipantStream
from control.media.tone import sine
from control.sip import sdp

CODECS: dict[str, tuple[str, int, int, int | None, int]] = {
    # name, rtpmap clock, payload type, channels, RTP timestamp step per 20 ms
    "G711": ("PCMA", 8000, 8, None, 160),
    "G722": ("G722", 8000, 9, None, 160),
    "Opus": ("opus", 48000, 111, 2, 960),
    "SpeexWB": ("speex", 16000, 97, None, 320),
}
ENGINE_CODECS = ("opus", "G722", "speex", "PCMU", "PCMA", "telephone-event")
TONES = (410.0, 630.0, 970.0, 1330.0, 1790.0)
LOOPBACK = "127.0.0.1"
SUITE = "AES_CM_128_HMAC_SHA1_80"

# module file name -> stage (functions of other files are charged to their callers)
STAGES = {
    "srtp.py": "SRTP",
    "rtp.py": "RTP parse / stamp",
    "jitter.py": "jitter buffer",
    "codecs.py": "decode / encode",
    "speex.py": "decode / encode",
    "polyphase.py": "resample",
    "mixroom.py": "mix-minus, limiter, per-listener loop (mixroom)",
    "stream.py": "stream bookkeeping (VAD level, FIFO, source filter)",
    "rtcpsession.py": "RTCP",
    "rtcp.py": "RTCP",
    "mixer.py": "mixer tick / send loop",
    "selector_events.py": "event loop receive (datagram_received)",
    "base_events.py": "event loop",
    "events.py": "event loop",
    "selectors.py": "event loop",
}
# C functions with a stage of their own wherever they are called from
C_STAGES = {
    "<method 'sendto' of '_socket.socket' objects>": "sendto (syscall)",
    "<method 'recvfrom' of '_socket.socket' objects>": "recvfrom (syscall)",
    "<method 'poll' of 'select.epoll' objects>": "epoll wait (idle)",
    "<method 'encode' of 'G722.G722' objects>": "decode / encode",
    "<method 'decode' of 'G722.G722' objects>": "decode / encode",
}
ENCODE_FUNCS = {"encode", "ulaw_encode", "alaw_encode"}


def _offer(codec: str, port: int, crypto: str | None = None) -> sdp.SessionDescription:
    name, rate, pt, channels, _step = CODECS[codec]
    media = sdp.audio_media(
        port,
        [sdp.RtpMap(pt, name, rate, channels)],
        ptime=20,
        proto="RTP/SAVP" if crypto else "RTP/AVP",
        attributes=[sdp.Attribute("crypto", crypto)] if crypto else (),
    )
    return sdp.build_offer(
        origin=sdp.Origin("-", "1", 1, "IN", "IP4", LOOPBACK),
        connection=sdp.Connection.for_address(LOOPBACK),
        media=[media],
    )


def payloads(codec: str, freq: float, frames: int, amplitude: float) -> list[bytes]:
    """`frames` 20 ms frames of a tone, encoded with Chorus's own codec."""
    name, rate, _pt, channels, _step = CODECS[codec]
    factory = codec_for(name, rate, channels or 1)
    assert factory is not None
    enc = factory()
    n = enc.frame_samples(20)
    pcm = sine(freq, frames * 0.02, enc.sample_rate, amplitude=amplitude)
    return [enc.encode(pcm[i * n : (i + 1) * n]) for i in range(frames)]


# --- stage attribution ---------------------------------------------------------------

Key = tuple[str, int, str]


def _own_stage(key: Key) -> str | None:
    path, _line, func = key
    if path == "~":
        return C_STAGES.get(func)
    if "pylibsrtp" in path:
        return "SRTP"
    if "opuslib" in path:
        return "decode / encode"
    base = os.path.basename(path)
    stage = STAGES.get(base)
    if base == "codecs.py" and func == "process":  # codecs.Resampler
        return "resample"
    if base == "stream.py" and func in ("encode",):
        return "resample"  # EncoderChain.encode: resample + hand over to the codec
    if base == "stream.py" and func in ("packet",):
        return "RTP parse / stamp"
    if base == "stream.py" and func in ("to_internal", "skip_frame"):
        return "resample"
    if base == "stream.py" and func == "pull":
        return "decode / encode"
    return stage


def attribute(stats: pstats.Stats) -> dict[str, float]:
    """Self time per stage in seconds (see the module docstring)."""
    table: dict[Key, Any] = stats.stats  # type: ignore[attr-defined]
    memo: dict[Key, dict[str, float]] = {}

    def shares(key: Key, depth: int = 0) -> dict[str, float]:
        own = _own_stage(key)
        if own is not None:
            return {own: 1.0}
        if key in memo:
            return memo[key]
        callers = table.get(key, (0, 0, 0, 0, {}))[4]
        total = sum(edge[3] for edge in callers.values())
        if not callers or total <= 0 or depth > 30:
            return {"other (interpreter, numpy glue)": 1.0}
        memo[key] = {"other (interpreter, numpy glue)": 1.0}  # cycle guard
        out: dict[str, float] = defaultdict(float)
        for caller, edge in callers.items():
            for stage, f in shares(caller, depth + 1).items():
                out[stage] += f * edge[3] / total
        memo[key] = dict(out)
        return memo[key]

    result: dict[str, float] = defaultdict(float)
    for key, (_cc, _nc, tt, _ct, _callers) in table.items():
        for stage, f in shares(key).items():
            result[stage] += tt * f
    return dict(result)


def _percentages(seconds: dict[str, float], exclude: tuple[str, ...] = ()) -> dict[str, float]:
    busy = {k: v for k, v in seconds.items() if k not in exclude}
    total = sum(busy.values()) or 1.0
    return {k: round(100 * v / total, 1) for k, v in sorted(busy.items(), key=lambda kv: -kv[1])}


def _top(stats: pstats.Stats, n: int = 15) -> list[str]:
    table: dict[Key, Any] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(table.items(), key=lambda kv: -kv[1][2])[:n]
    return [
        f"{kv[1][2] * 1000:8.1f} ms {kv[1][1]:8d} calls  {os.path.basename(kv[0][0])}:{kv[0][2]}"
        for kv in rows
    ]


# --- core load -----------------------------------------------------------------------


def build_core(
    codec: str,
    room_size: int,
    participants: int,
    ticks: int,
    srtp: bool,
    seed: int = 1,
    tuning: CodecTuning = MIXER_TUNING,
) -> tuple[list[MixRoom], list[tuple[ParticipantStream, list[bytes], tuple[str, int]]]]:
    """Rooms of `room_size`, every participant sending its tone on every tick."""
    rng = random.Random(seed)
    supported = supported_rtpmaps(ENGINE_CODECS)
    _name, _rate, pt, _ch, step = CODECS[codec]
    amplitude = 0.25 / max(1.0, (room_size - 1) ** 0.5)
    tones = [payloads(codec, f, 50, amplitude) for f in TONES]
    rooms: list[MixRoom] = []
    feeds: list[tuple[ParticipantStream, list[bytes], tuple[str, int]]] = []
    for r in range(participants // room_size):
        room = MixRoom(RoomId(f"r{r}"), tuning=tuning)
        for i in range(room_size):
            index = r * room_size + i
            port = 10000 + 2 * index
            phone_key = generate_crypto(1, SUITE, rng.randbytes) if srtp else None
            terms = answer_audio(
                _offer(codec, port, str(phone_key) if phone_key else None),
                0,
                supported=supported,
                srtp=SrtpPolicy.OPTIONAL,
                randbytes=rng.randbytes,
            )
            stream = ParticipantStream(terms, rng=rng, now=0.0, tuning=tuning)
            room.add(ParticipantId(f"p{i}"), stream)
            phone = None
            if phone_key is not None:
                assert terms.crypto is not None
                phone = SrtpContext(phone_key, terms.crypto.local)
            source = tones[i % len(tones)]
            datagrams = []
            for k in range(ticks):
                data = RtpPacket(pt, k & 0xFFFF, k * step, 1000 + index, source[k % 50])
                wire = data.serialize()
                datagrams.append(phone.protect(wire) if phone is not None else wire)
            feeds.append((stream, datagrams, (LOOPBACK, port)))
        rooms.append(room)
    return rooms, feeds


def run_core(
    rooms: list[MixRoom],
    feeds: list[tuple[ParticipantStream, list[bytes], tuple[str, int]]],
    ticks: int,
    start: int = 0,
) -> MixCounters:
    counters = MixCounters()
    events: list[Any] = []
    out: list[Outgoing] = []
    for k in range(start, ticks):
        now = k * 0.02
        for stream, datagrams, addr in feeds:
            stream.receive(datagrams[k], addr, now)
        for room in rooms:
            out.clear()
            room.tick(now + 0.001, counters, events, out, rtp_timeout=60.0)
    return counters


WARM_TICKS = 20  # core load: ticks run before any measurement


def timed_core(
    codec: str,
    room_size: int,
    participants: int,
    ticks: int,
    srtp: bool,
    tuning: CodecTuning = MIXER_TUNING,
) -> float:
    """CPU seconds of a fresh core load's ticks after the warm-up; raises unless every
    listener got every frame (a load that sends less would look cheap)."""
    warm = WARM_TICKS
    rooms, feeds = build_core(codec, room_size, participants, ticks, srtp, tuning=tuning)
    run_core(rooms, feeds, warm)
    cpu0 = time.process_time()
    counters = run_core(rooms, feeds, ticks, warm)
    cpu = time.process_time() - cpu0
    if counters.frames_mixed != (ticks - warm) * participants:
        raise RuntimeError(
            f"{codec} core load sent {counters.frames_mixed} frames, not every listener's"
        )
    return cpu


def core_profile(
    codec: str, room_size: int, participants: int, ticks: int, srtp: bool
) -> dict[str, Any]:
    warm = WARM_TICKS
    cpu = timed_core(codec, room_size, participants, ticks, srtp)
    rooms, feeds = build_core(codec, room_size, participants, ticks, srtp)
    run_core(rooms, feeds, warm)
    prof = cProfile.Profile()
    prof.enable()
    run_core(rooms, feeds, ticks, warm)
    prof.disable()
    stats = pstats.Stats(prof)
    per = cpu / ((ticks - warm) * participants)
    return {
        "cpu_us_per_participant_tick": round(per * 1e6, 2),
        "cpu_percent_per_participant": round(100 * per / 0.02, 3),
        "stages_percent": _percentages(attribute(stats)),
        "top_self": _top(stats),
    }


def _rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _opus_rss(room_size: int, participants: int, rate: int, cx: int, conn: Any) -> None:
    """In a fresh process: RSS growth per participant from building and warming the rooms
    (a process that built other rooms first reuses their freed pages: no figure)."""
    before = _rss_kib()
    tuning = CodecTuning(pcm_rate=rate, opus_complexity=cx)
    rooms, feeds = build_core("Opus", room_size, participants, 40, False, tuning=tuning)
    run_core(rooms, feeds, 40)
    conn.send((_rss_kib() - before) / participants)


def opus_tuning(
    room_size: int,
    participants: int,
    ticks: int,
    runs: int,
    rates: list[int],
    complexities: list[int],
) -> dict[str, Any]:
    """Opus core load per (PCM rate, complexity), interleaved run by run: CPU per
    participant-tick (process time, median of `runs`) and RSS per participant (the growth
    from building and warming the rooms).  48000 is the codec at its own rate with the
    mixer resampling 16 <-> 48 kHz around it (the code before the room-rate change)."""
    warm = WARM_TICKS
    configs = [(rate, cx) for rate in rates for cx in complexities]
    cpu: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    rss: dict[tuple[int, int], list[float]] = {c: [] for c in configs}
    for _ in range(runs):
        for rate, cx in configs:
            parent, child = multiprocessing.get_context("spawn").Pipe()
            proc = multiprocessing.get_context("spawn").Process(
                target=_opus_rss, args=(room_size, participants, rate, cx, child)
            )
            proc.start()
            rss[(rate, cx)].append(parent.recv())
            proc.join()
            tuning = CodecTuning(pcm_rate=rate, opus_complexity=cx)
            spent = timed_core("Opus", room_size, participants, ticks, False, tuning)
            cpu[(rate, cx)].append(100 * spent / ((ticks - warm) * participants) / 0.02)
    out: dict[str, Any] = {}
    for rate, cx in configs:
        runs_cpu = cpu[(rate, cx)]
        out[f"opus{rate // 1000}k/complexity{cx}"] = {
            "cpu_percent_per_participant": round(statistics.median(runs_cpu), 3),
            "cpu_percent_per_participant_runs": [round(c, 3) for c in runs_cpu],
            "participants_per_core": round(100 / statistics.median(runs_cpu), 1),
            "rss_kib_per_participant_runs": [round(r, 1) for r in rss[(rate, cx)]],
        }
    return out


# --- live load -----------------------------------------------------------------------


def _phones(targets: list[tuple[int, int]], codec: str, seconds: float, ready: Any) -> None:
    """One socket per participant, its tone every 20 ms, drift-free."""
    _name, _rate, pt, _ch, step = CODECS[codec]
    tones = [payloads(codec, f, 50, 0.1) for f in TONES]
    which = [tone for _port, tone in targets]
    ports = [port for port, _tone in targets]
    paced_phones(ports, lambda i, k: tones[which[i]][k % 50], pt, step, seconds, ready)


async def live_profile(
    codec: str, room_size: int, participants: int, seconds: float, profile: bool
) -> dict[str, Any]:
    low = random.randrange(20000, 50000, 2)
    mixer = EmbeddedMixer(
        PortAllocator(low, low + 2 * participants + 200),
        host=LOOPBACK,
        codecs=ENGINE_CODECS,
        rtp_timeout=60.0,
        srtp="optional",
        rng=random.Random(2),
    )
    targets = []
    for i in range(participants):
        room = RoomId(f"room{i // room_size}")
        answer = await mixer.attach(room, ParticipantId(f"p{i}"), _offer(codec, 9), 0)
        targets.append((answer.accept.port, i % room_size % len(TONES)))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    warmup = 1.5
    proc = ctx.Process(target=_phones, args=(targets, codec, warmup + seconds + 1.0, ready))
    proc.start()
    await asyncio.to_thread(ready.wait, 30.0)
    await asyncio.sleep(warmup)
    before = await mixer.stats()
    prof = cProfile.Profile() if profile else None
    cpu0 = time.process_time()
    if prof is not None:
        prof.enable()
    await asyncio.sleep(seconds)
    if prof is not None:
        prof.disable()
    cpu = time.process_time() - cpu0
    after = await mixer.stats()
    await asyncio.to_thread(proc.join, 15.0)
    await mixer.close()
    packets_in = after.packets_in - before.packets_in
    frames = after.frames_mixed - before.frames_mixed
    if packets_in == 0 or frames == 0:
        raise RuntimeError("the live load received or sent nothing")
    result: dict[str, Any] = {
        "cpu_percent_per_participant": round(100 * cpu / seconds / participants, 3),
        "packets_in_per_participant_tick": round(packets_in / participants / (seconds / 0.02), 3),
        "frames_out_per_participant_tick": round(frames / participants / (seconds / 0.02), 3),
        "late_ticks": after.late_ticks - before.late_ticks,
    }
    if prof is not None:
        stats = pstats.Stats(prof)
        seconds_by_stage = attribute(stats)
        result["stages_percent_of_busy"] = _percentages(
            seconds_by_stage, exclude=("epoll wait (idle)",)
        )
        result["top_self"] = _top(stats)
    return result


def srtp_cost(codec: str, packets: int = 20000) -> dict[str, float]:
    """µs per protect and per unprotect of one 20 ms packet (libsrtp through pylibsrtp)."""
    rng = random.Random(3)
    a = generate_crypto(1, SUITE, rng.randbytes)
    b = generate_crypto(1, SUITE, rng.randbytes)
    tx, rx = SrtpContext(a, b), SrtpContext(b, a)
    _name, _rate, pt, _ch, step = CODECS[codec]
    payload = payloads(codec, 440.0, 1, 0.1)[0]
    wires = [RtpPacket(pt, k & 0xFFFF, k * step, 7, payload).serialize() for k in range(packets)]
    t0 = time.process_time()
    protected = [tx.protect(w) for w in wires]
    t1 = time.process_time()
    for p in protected:
        rx.unprotect(p)
    t2 = time.process_time()
    return {
        "protect_us": round((t1 - t0) / packets * 1e6, 2),
        "unprotect_us": round((t2 - t1) / packets * 1e6, 2),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "date": time.strftime("%Y-%m-%d %H:%M %Z", time.gmtime()),
        "command": " ".join(["python -m bench.profile_mixer", *sys.argv[1:]]),
        "load_average": os.getloadavg(),
        "core": {},
        "live": {},
        "srtp": {},
    }
    if args.opus_rates:
        n = max(args.rooms[0], args.participants // args.rooms[0] * args.rooms[0])
        result["opus_tuning"] = opus_tuning(
            args.rooms[0], n, args.ticks, args.runs, args.opus_rates, args.opus_complexity
        )
        result["load_average_after"] = os.getloadavg()
        return result
    for codec in args.codecs:
        result["srtp"][codec] = srtp_cost(codec)
        for room in args.rooms:
            n = max(room, args.participants // room * room)
            key = f"{codec}/room{room}/{n}"
            result["core"][key] = core_profile(codec, room, n, args.ticks, args.srtp)
            if not args.no_live:
                plain = [
                    await live_profile(codec, room, n, args.seconds, False)
                    for _ in range(args.runs)
                ]
                profiled = await live_profile(codec, room, n, args.seconds, True)
                cpus = sorted(p["cpu_percent_per_participant"] for p in plain)
                profiled["cpu_percent_per_participant_runs"] = [
                    p["cpu_percent_per_participant"] for p in plain
                ]
                profiled["cpu_percent_per_participant_median"] = cpus[len(cpus) // 2]
                profiled["late_ticks_runs"] = [p["late_ticks"] for p in plain]
                result["live"][key] = profiled
            print(key, "done", file=sys.stderr, flush=True)
    result["load_average_after"] = os.getloadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codecs", nargs="+", default=["G711", "G722"], choices=list(CODECS))
    parser.add_argument("--rooms", nargs="+", type=int, default=[5, 50])
    parser.add_argument("--participants", type=int, default=100)
    parser.add_argument("--ticks", type=int, default=250, help="core load: ticks per run")
    parser.add_argument("--seconds", type=float, default=5.0, help="live load: window")
    parser.add_argument("--runs", type=int, default=3, help="live load: plain runs (median)")
    parser.add_argument("--srtp", action="store_true", help="core load over SDES-SRTP")
    parser.add_argument("--no-live", action="store_true", help="core load only")
    parser.add_argument(
        "--opus-rates",
        nargs="+",
        type=int,
        help="only the Opus tuning comparison: libopus PCM rates (48000 16000), interleaved",
    )
    parser.add_argument("--opus-complexity", nargs="+", type=int, default=[5])
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
