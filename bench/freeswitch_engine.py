"""Chorus's own CPU per participant: the FreeSWITCH engine against the embedded mixer.

The same load both ways: SIPp callers (bench/sipp/uac_mixer_load.xml, G.711 A-law, 20 ms,
every member talking all the time) join R rooms of M members on a running `chorus serve`.

* embedded: Chorus receives, decodes, mixes (mix-minus) and sends every stream itself;
* freeswitch: each participant's audio is a SIP leg to one of two stand-in media nodes —
  SIPp with `-rtp_echo` (tests/sipp/uas_media_echo.xml) and the ESL fake as its Event Socket
  (a process of its own) — so RTP flows caller ↔ node and Chorus carries signalling, the
  Event Socket and its health probes only.

The figure is the server's CPU time (its process tree) over a steady window after every
call is up, divided by the participants and the window: % of one core per participant.
Nodes, SIPp and the ESL fake are not counted (they stand for FreeSWITCH's own cost, which
bench/mixer_load.py compares separately). A step passes when SIPp says every call worked
and, for the FreeSWITCH engine, every participant's leg reached a node.

    python -m bench.freeswitch_engine --quick     # one run each, short window
    python -m bench.freeswitch_engine             # three runs each, for RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.mixer_load import SCENARIO
from bench.procstat import cpu_seconds, load_average, process_tree
from bench.rtp_pcap import CODECS, write_rtp_pcap
from tests.peers.chorus import ChorusProcess
from tests.peers.fsnode import MediaNode
from tests.peers.ports import LOOPBACK
from tests.peers.sipp import run_sipp_async

CALL_RATE = 50.0  # calls per second while the rooms fill


def _scenario(workdir: Path, pcap: Path) -> Path:
    codec = CODECS["G711"]
    text = SCENARIO.read_text().replace("@PCAP@", str(pcap))
    text = text.replace("@PT@", str(codec.payload_type)).replace("@RTPMAP@", codec.rtpmap)
    path = workdir / "uac.xml"
    path.write_text(text)
    return path


async def run_once(
    engine: str, rooms: int, size: int, window: float, warmup: float, workdir: Path
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    calls = rooms * size
    fill = calls / CALL_RATE
    hold = fill + warmup + window + 2.0
    pcap = workdir / "tone.pcap"
    write_rtp_pcap(pcap, CODECS["G711"], 440.0, hold + 1, amplitude=0.1)
    inf = workdir / "rooms.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"room{i % rooms};\n" for i in range(calls)))
    nodes: list[MediaNode] = []
    overrides: dict[str, dict[str, Any]] = {
        "server": {"trace_sip": False, "log_level": "WARNING"},
        "rtp": {"codecs": ["PCMA", "PCMU"]},
    }
    if engine == "freeswitch":
        nodes = [MediaNode(workdir / f"node{i}", esl_in_process=False) for i in range(2)]
        for node in nodes:
            await node.start()
        overrides["audio"] = {"engine": "freeswitch"}
        overrides["freeswitch"] = {"nodes": [n.config for n in nodes]}
    chorus = ChorusProcess(overrides)
    chorus.start()
    try:
        idle_cpu = cpu_seconds(process_tree(chorus.process.pid))
        load = asyncio.ensure_future(
            run_sipp_async(
                _scenario(workdir, pcap),
                f"{LOOPBACK}:{chorus.sip_port}",
                calls=calls,
                rate=CALL_RATE,
                max_concurrent=calls,
                pause_ms=int(hold * 1000),
                extra_args=["-mp", "23000", "-inf", str(inf)],
                timeout=hold + 30,
            )
        )
        await asyncio.sleep(fill + warmup)
        pids = process_tree(chorus.process.pid)
        cpu_start, start = cpu_seconds(pids), time.monotonic()
        setup = cpu_start - idle_cpu  # the rooms filling: INVITEs, legs, answers
        load_start = load_average()
        await asyncio.sleep(window)
        cpu = cpu_seconds(process_tree(chorus.process.pid)) - cpu_start
        elapsed = time.monotonic() - start
        result = await load
        legs = sum(len(n.received("INVITE")) for n in nodes)
    finally:
        chorus.stop()
        for node in nodes:
            await node.stop()
    passed = result.ok and (engine != "freeswitch" or legs >= calls)
    return {
        "engine": engine,
        "participants": calls,
        "rooms": rooms,
        "cpu_seconds": round(cpu, 3),
        "window": round(elapsed, 2),
        "cpu_pct_per_participant": round(100 * cpu / elapsed / calls, 4),
        "setup_cpu_ms_per_call": round(1000 * setup / calls, 2),
        "legs_to_nodes": legs,
        "passed": passed,
        "load_average": load_start,
        "sipp": None if result.ok else result.describe()[-1500:],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    runs = 1 if args.quick else args.runs
    window = 5.0 if args.quick else args.window
    out: dict[str, Any] = {"rooms": args.rooms, "size": args.size, "runs": []}
    with tempfile.TemporaryDirectory(prefix="bench-fs-") as tmp:
        for index in range(runs):
            for engine in ("embedded", "freeswitch"):  # same run, alternating
                step = await run_once(
                    engine, args.rooms, args.size, window, 3.0, Path(tmp) / f"{engine}-{index}"
                )
                print(json.dumps(step), file=sys.stderr, flush=True)
                out["runs"].append(step)
    for engine in ("embedded", "freeswitch"):
        figures = [
            r["cpu_pct_per_participant"]
            for r in out["runs"]
            if r["engine"] == engine and r["passed"]
        ]
        out[engine] = statistics.median(figures) if figures else None
    if out["embedded"] and out["freeswitch"]:
        out["ratio"] = round(out["embedded"] / out["freeswitch"], 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=5)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
