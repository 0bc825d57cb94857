"""Chorus echo call rate, directly and behind Kamailio, against Kamailio's own as reference;
and resident memory per 1,000 established calls.

    python -m bench.sip_call_rate --hold 10 --rounds 1      # quick look
    python -m bench.sip_call_rate --hold 60 --rounds 3      # the figures for RESULTS.md

Each round searches the highest rate (INVITE with SDP, 200, ACK, BYE, 200; no media) that
SIPp sustains with zero failed calls (bench.kamailio_reference.max_sustained_rate, short
steps), then confirms it for ``--hold`` seconds, stepping down 10% until a whole hold passes
with no failed call. Three targets in the same go: Kamailio in front of a SIPp UAS (the
reference), Chorus' echo directly, and Chorus' echo behind the same Kamailio configuration.
Figures are medians of the confirmed rates over rounds; Chorus' rates are also given as a
ratio of the reference.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.kamailio_reference import TargetFactory, kamailio_target, max_sustained_rate, run_step
from tests.peers.chorus import ChorusProcess
from tests.peers.kamailio import KamailioProcess
from tests.peers.ports import free_ports
from tests.peers.sipp import scenario_path

QUIET = {"server": {"log_level": "WARNING", "trace_sip": False}}


@contextlib.contextmanager
def chorus_direct() -> Iterator[str]:
    with ChorusProcess(QUIET) as chorus:
        yield f"127.0.0.1:{chorus.sip_port}"


@contextlib.contextmanager
def chorus_behind_kamailio() -> Iterator[str]:
    with (
        ChorusProcess(QUIET) as chorus,
        KamailioProcess([f"sip:127.0.0.1:{chorus.sip_port}"], shm_mb=1024) as proxy,
    ):
        yield proxy.sip_address


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def memory_per_thousand_calls(calls: int = 1000, rate: float = 200.0) -> dict[str, Any]:
    """RSS growth of the Chorus process with ``calls`` echo calls established at once."""
    hold_ms = int((calls / rate + 20) * 1000)
    with ChorusProcess(QUIET) as chorus:
        assert chorus.process is not None
        pid = chorus.process.pid
        time.sleep(1.0)
        idle = rss_kib(pid)
        sipp = subprocess.Popen(
            [
                "sipp", "-nostdin", "-i", "127.0.0.1", "-p", str(free_ports(1)[0]), "-sf",
                str(scenario_path("uac_echo.xml")), "-s", "echo", "-m", str(calls),
                "-r", str(rate), "-l", str(calls + 10), "-d", str(hold_ms),
                "-timeout", str(hold_ms // 1000 + 60),
                f"127.0.0.1:{chorus.sip_port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(calls / rate + 8)
            loaded = rss_kib(pid)
        finally:
            sipp.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sipp.wait(10)
            if sipp.poll() is None:
                sipp.kill()
    per_thousand = (loaded - idle) * 1000 / calls / 1024
    return {
        "calls": calls,
        "idle_rss_mib": round(idle / 1024, 1),
        "loaded_rss_mib": round(loaded / 1024, 1),
        "mib_per_1000_calls": round(per_thousand, 1),
    }


def confirm(
    factory: TargetFactory, rate: float, hold: float, log: Any, tries: int = 5
) -> tuple[float, list[dict[str, Any]]]:
    """Step down from ``rate`` until a ``hold``-second run has no failed call."""
    steps: list[dict[str, Any]] = []
    for _ in range(tries):
        with factory() as target:
            step = run_step(
                target,
                rate,
                duration=hold,
                scenario="uac_echo",
                service="echo",
                transport="u1",
                min_rate_ratio=0.9,
            )
        steps.append({"rate": rate, "sustained": step.sustained, "failed": step.failed,
                      "achieved_rate": step.achieved_rate})  # fmt: skip
        log(json.dumps(steps[-1]))
        if step.sustained:
            return rate, steps
        rate = round(rate * 0.9, 1)
    return 0.0, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per search step")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the rate must hold")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-steps", type=int, default=9)
    parser.add_argument("--precision", type=float, default=0.1)
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    search = {
        "service": "echo",
        "duration": args.duration,
        "max_steps": args.max_steps,
        "precision": args.precision,
        "log": log,
    }
    targets = {
        "kamailio_to_sipp_uas": kamailio_target("u1"),
        "chorus_direct": chorus_direct,
        "chorus_via_kamailio": chorus_behind_kamailio,
    }
    rounds: dict[str, list[float]] = {name: [] for name in targets}
    searched: dict[str, list[float]] = {name: [] for name in targets}
    confirmations: dict[str, list[Any]] = {name: [] for name in targets}
    started = time.monotonic()
    for round_index in range(args.rounds):
        for name, factory in targets.items():
            log(f"round {round_index + 1}: {name}")
            result = max_sustained_rate(factory, start_rate=100.0, **search)
            searched[name].append(result.max_rate)
            held, steps = confirm(factory, result.max_rate, args.hold, log)
            rounds[name].append(held)
            confirmations[name].append(steps)
    medians = {name: statistics.median(rates) for name, rates in rounds.items()}
    reference = medians["kamailio_to_sipp_uas"] or 1.0
    report: dict[str, Any] = {
        "benchmark": "sip_call_rate",
        "what": "INVITE(SDP)-200-ACK-BYE-200 calls/s to echo, sustained with zero failed calls",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "search_step_seconds": args.duration,
        "hold_seconds": args.hold,
        "searched_rates": searched,
        "confirmed_rates": rounds,
        "confirmations": confirmations,
        "median_calls_per_second": medians,
        "ratio_to_kamailio_reference": {
            name: round(rate / reference, 3) for name, rate in medians.items()
        },
        "memory": memory_per_thousand_calls(),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
