"""Chorus echo call rate, directly and behind Kamailio, against Kamailio's own as reference;
and resident memory per 1,000 established calls.

    python -m bench.sip_call_rate --hold 10 --rounds 1      # quick look
    python -m bench.sip_call_rate --hold 60 --rounds 3      # the figures for RESULTS.md
    python -m bench.sip_call_rate --hold 60 --rounds 3 --targets chorus_direct chorus_direct_uvloop

Each round searches the highest rate (INVITE with SDP, 200, ACK, BYE, 200; no media) that
SIPp sustains with zero failed calls (bench.kamailio_reference.max_sustained_rate, short
steps), then confirms it for ``--hold`` seconds, stepping down 10% until a whole hold passes
with no failed call. Three targets in the same go: Kamailio in front of a SIPp UAS (the
reference), Chorus' echo directly (the standard event loop, and ``[server] event_loop =
uvloop``), and Chorus' echo behind the same Kamailio configuration (``--targets`` picks).
Figures are medians of the confirmed rates over rounds; Chorus' rates are also given as a
ratio of the reference.

Next to the rates: CPU-seconds per 1,000 calls of each server over the confirming hold
(process CPU time of Chorus, and of Kamailio with all its children, from /proc), so the
Chorus : Kamailio ratio does not depend on what the load generator could send. Memory per
1,000 established calls divides the RSS growth by the dialogs actually up: the 200s to
INVITE that SIPp received (its -trace_counts), not the calls it attempted.
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
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.kamailio_reference import (
    Target,
    TargetFactory,
    kamailio_target,
    max_sustained_rate,
    run_step,
)
from bench.procstat import load_average, rss_kib
from tests.peers.chorus import ChorusProcess
from tests.peers.kamailio import KamailioProcess
from tests.peers.ports import free_ports
from tests.peers.sipp import scenario_path

QUIET = {"server": {"log_level": "WARNING", "trace_sip": False}}


def _pid(chorus: ChorusProcess) -> int:
    assert chorus.process is not None
    return chorus.process.pid


@contextlib.contextmanager
def chorus_direct(event_loop: str = "asyncio") -> Iterator[Target]:
    overrides = {"server": {**QUIET["server"], "event_loop": event_loop}}
    with ChorusProcess(overrides) as chorus:
        yield Target(f"127.0.0.1:{chorus.sip_port}", {"chorus": _pid(chorus)})


@contextlib.contextmanager
def chorus_direct_uvloop() -> Iterator[Target]:
    with chorus_direct("uvloop") as target:
        yield target


@contextlib.contextmanager
def chorus_behind_kamailio() -> Iterator[Target]:
    with (
        ChorusProcess(QUIET) as chorus,
        KamailioProcess([f"sip:127.0.0.1:{chorus.sip_port}"], shm_mb=1024) as proxy,
    ):
        assert proxy.pid is not None
        yield Target(proxy.sip_address, {"chorus": _pid(chorus), "kamailio": proxy.pid})


def established_dialogs(counts_csv: str) -> int:
    """Calls up now, from the last row of a SIPp -trace_counts file: ACKs sent for a 200
    to INVITE, less BYEs sent."""
    rows = [line for line in counts_csv.splitlines() if line.strip()]
    if len(rows) < 2:
        return 0
    header = rows[0].split(";")
    last = dict(zip(header, rows[-1].split(";"), strict=False))
    acks = [k for k in header if k.endswith("_ACK_Sent")]
    byes = [k for k in header if k.endswith("_BYE_Sent")]
    if not acks:
        return 0
    up = int(last.get(acks[0], "0") or 0)
    return up - sum(int(last.get(k, "0") or 0) for k in byes)


def memory_per_thousand_calls(calls: int = 1000, rate: float = 200.0) -> dict[str, Any]:
    """RSS growth of the Chorus process with ``calls`` echo calls offered at once, per
    1,000 calls that are established (counted by SIPp), not per call attempted."""
    hold_ms = int((calls / rate + 20) * 1000)
    with ChorusProcess(QUIET) as chorus, tempfile.TemporaryDirectory(prefix="sipp-mem-") as tmp:
        pid = _pid(chorus)
        time.sleep(1.0)
        idle = rss_kib([pid])
        sipp = subprocess.Popen(
            [
                "sipp", "-nostdin", "-i", "127.0.0.1", "-p", str(free_ports(1)[0]), "-sf",
                str(scenario_path("uac_echo.xml")), "-s", "echo", "-m", str(calls),
                "-r", str(rate), "-l", str(calls + 10), "-d", str(hold_ms),
                "-timeout", str(hold_ms // 1000 + 60), "-trace_counts", "-fd", "1",
                f"127.0.0.1:{chorus.sip_port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp,
        )  # fmt: skip
        try:
            time.sleep(calls / rate + 8)
            loaded = rss_kib([pid])
            load = load_average()
            time.sleep(1.5)  # the next -fd 1 row is written after the RSS reading
            files = list(Path(tmp).glob("*_counts.csv"))
            up = established_dialogs(files[0].read_text()) if files else 0
        finally:
            sipp.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sipp.wait(10)
            if sipp.poll() is None:
                sipp.kill()
    return {
        "calls_offered": calls,
        "calls_established": up,
        "idle_rss_mib": round(idle / 1024, 1),
        "loaded_rss_mib": round(loaded / 1024, 1),
        "mib_per_1000_established_calls": (
            round((loaded - idle) * 1000 / up / 1024, 1) if up else None
        ),
        "load_average": load,
    }


TARGETS: dict[str, TargetFactory] = {
    "kamailio_to_sipp_uas": kamailio_target("u1"),  # the reference: always measured
    "chorus_direct": chorus_direct,
    "chorus_direct_uvloop": chorus_direct_uvloop,
    "chorus_via_kamailio": chorus_behind_kamailio,
}
REFERENCE = "kamailio_to_sipp_uas"
GOAL_RATE = 1000.0  # issue 14 item 4: echo calls/s on one core
GOAL_CPU_RATIO = 4.0  # and CPU-seconds per call at most 4x Kamailio's


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
                      "successful": step.successful, "achieved_rate": step.achieved_rate,
                      "cpu_seconds": step.cpu_seconds,
                      "cpu_seconds_per_1000_calls": step.cpu_seconds_per_1000_calls,
                      "load_average": load_average()})  # fmt: skip
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
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=[name for name in TARGETS if name != REFERENCE],
        default=["chorus_direct", "chorus_direct_uvloop", "chorus_via_kamailio"],
        help="Chorus targets besides the Kamailio reference (always measured)",
    )
    parser.add_argument("--confirm-tries", type=int, default=5, help="holds stepping down 10%%")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS measurement")
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
    targets = {name: TARGETS[name] for name in (REFERENCE, *args.targets)}
    rounds: dict[str, list[float]] = {name: [] for name in targets}
    searched: dict[str, list[float]] = {name: [] for name in targets}
    confirmations: dict[str, list[Any]] = {name: [] for name in targets}
    started = time.monotonic()
    for round_index in range(args.rounds):
        for name, factory in targets.items():
            log(f"round {round_index + 1}: {name}")
            result = max_sustained_rate(factory, start_rate=100.0, **search)
            searched[name].append(result.max_rate)
            held, steps = confirm(factory, result.max_rate, args.hold, log, args.confirm_tries)
            rounds[name].append(held)
            confirmations[name].append(steps)
    medians = {name: statistics.median(rates) for name, rates in rounds.items()}
    reference = medians[REFERENCE] or 1.0
    # CPU of each server over each round's last (confirming) hold, median over rounds
    cpu: dict[str, dict[str, float]] = {}
    for name, per_round in confirmations.items():
        by_process: dict[str, list[float]] = {}
        for steps in per_round:
            for process, value in steps[-1]["cpu_seconds_per_1000_calls"].items():
                if value is not None:
                    by_process.setdefault(process, []).append(value)
        cpu[name] = {p: round(statistics.median(v), 3) for p, v in by_process.items()}
    kamailio_cpu = cpu.get(REFERENCE, {}).get("kamailio")
    cpu_ratio = {
        name: round(values["chorus"] / kamailio_cpu, 1)
        for name, values in cpu.items()
        if "chorus" in values and kamailio_cpu
    }
    report: dict[str, Any] = {
        "benchmark": "sip_call_rate",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python -m bench.sip_call_rate", *sys.argv[1:]]),
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
        "cpu_seconds_per_1000_calls": cpu,
        "chorus_cpu_per_call_to_kamailio": cpu_ratio,
        "goals": {
            name: {
                f"{GOAL_RATE:.0f}_calls_per_second": medians[name] >= GOAL_RATE,
                f"cpu_per_call_within_{GOAL_CPU_RATIO:g}x_kamailio": (
                    name in cpu_ratio and cpu_ratio[name] <= GOAL_CPU_RATIO
                ),
            }
            for name in args.targets
        },
        "memory": None if args.no_memory else memory_per_thousand_calls(),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    if kamailio_cpu is None or not any(medians.values()):
        print("no input: the reference or every target confirmed no rate", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
