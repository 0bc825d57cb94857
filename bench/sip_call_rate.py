"""Chorus echo call rate, directly and behind Kamailio, against Kamailio's own as reference;
CPU-seconds per call side by side; resident memory per 1,000 established calls.

    python -m bench.sip_call_rate --hold 10 --rounds 1 --rates 200 400          # quick look
    python -m bench.sip_call_rate --hold 60 --rounds 3 --rates 800 1000 --pin-cpu 1 \
        --targets chorus_direct chorus_direct_uvloop --no-memory               # RESULTS.md

Interleaved ladder (the default): each round walks the ``--rates`` ladder, and at each rate
runs one ``--hold``-second step (INVITE with SDP, 200, ACK, BYE, 200; no media) against
every target in turn, Kamailio in front of a SIPp UAS (the reference) and the Chorus targets
(``--targets``), the order alternating from round to round. So a drift of the machine's
speed between minutes hits both sides of a same-rate pair alike, which a search per target
(minutes apart) could not promise. A target that fails a rate is not offered the higher
rates of that round. A step passes with zero failed calls, every call completed, and at
least 90 % of the rate offered; a step that received no call fails.

``--pin-cpu N`` makes "on one core" literal: the measured server's processes and threads
(Chorus; Kamailio with all its children) are moved to CPU N once up, and the bench itself,
so every SIPp it starts (the UAC, Kamailio's UAS), runs on the other CPUs.

Reported per step: CPU-seconds per 1,000 calls of each server (process CPU time from
/proc, children included) and, per same-rate pair of a round, the Chorus : Kamailio ratio,
whose median over the pairs is the figure checked against the goal (4x). The rate figure
per target is the median over rounds of the highest ladder rate passed. ``--search`` keeps
the older mode (a rate search per target, then ``--hold`` confirmations stepping down 10 %).
Memory per 1,000 established calls divides the RSS growth by the dialogs actually up: the
200s to INVITE that SIPp received (its -trace_counts), not the calls it attempted.
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
    StepResult,
    Target,
    TargetFactory,
    kamailio_target,
    max_sustained_rate,
    run_step,
)
from bench.procstat import load_average, process_tree, rss_kib
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


def echo_step(factory: TargetFactory, rate: float, hold: float) -> StepResult:
    """One ``hold``-second step of echo calls at ``rate`` against a fresh target."""
    with factory() as target:
        return run_step(
            target,
            rate,
            duration=hold,
            scenario="uac_echo",
            service="echo",
            transport="u1",
            min_rate_ratio=0.9,
        )


def confirm(
    factory: TargetFactory, rate: float, hold: float, log: Any, tries: int = 5
) -> tuple[float, list[dict[str, Any]]]:
    """Step down from ``rate`` until a ``hold``-second run has no failed call."""
    steps: list[dict[str, Any]] = []
    for _ in range(tries):
        step = echo_step(factory, rate, hold)
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


def pin_tree(root: int, cpu: int) -> int:
    """Move every thread of ``root`` and its descendants to ``cpu``; how many were moved.

    sched_setaffinity on a pid moves one thread only (Linux), so each task is set.
    """
    moved = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(task), {cpu})
                    moved += 1
    return moved


def pinned(factory: TargetFactory, cpu: int | None) -> TargetFactory:
    """The target of ``factory`` with its servers' processes pinned to ``cpu``."""
    if cpu is None:
        return factory

    @contextlib.contextmanager
    def wrapped() -> Iterator[Target]:
        with factory() as target:
            for pid in target.processes.values():
                pin_tree(pid, cpu)
            yield target

    return wrapped


def step_record(step: StepResult) -> dict[str, Any]:
    """What the report keeps of one step; no call received fails it whatever SIPp said."""
    return {
        "rate": step.rate,
        "passed": step.sustained and step.successful > 0,
        "successful": step.successful,
        "failed": step.failed,
        "achieved_rate": step.achieved_rate,
        "retransmissions": step.retransmissions,
        "cpu_seconds": step.cpu_seconds,
        "cpu_seconds_per_1000_calls": step.cpu_seconds_per_1000_calls,
        "load_average": load_average(),
    }


def ladder_round(
    targets: dict[str, TargetFactory],
    rates: list[float],
    hold: float,
    log: Any,
    *,
    reverse: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """One round: at each rate, one hold step per target in turn (order reversed when
    ``reverse``); a target that failed a rate sits out the higher ones."""
    order = list(targets)[::-1] if reverse else list(targets)
    steps: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    out: set[str] = set()
    for rate in rates:
        for name in order:
            if name in out:
                continue
            record = step_record(echo_step(targets[name], rate, hold))
            steps[name].append(record)
            log(json.dumps({"target": name, **record}))
            if not record["passed"]:
                out.add(name)
            time.sleep(0.5)
    return steps


def pair_ratios(rounds: list[dict[str, list[dict[str, Any]]]], name: str) -> list[dict[str, Any]]:
    """Chorus : Kamailio CPU per call for each rate both passed in the same round."""
    pairs = []
    for index, steps in enumerate(rounds):
        reference = {s["rate"]: s for s in steps.get(REFERENCE, []) if s["passed"]}
        for step in steps.get(name, []):
            ref = reference.get(step["rate"])
            if not step["passed"] or ref is None:
                continue
            ours = step["cpu_seconds_per_1000_calls"].get("chorus")
            theirs = ref["cpu_seconds_per_1000_calls"].get("kamailio")
            if ours and theirs:
                pairs.append({"round": index + 1, "rate": step["rate"], "chorus": ours,
                              "kamailio": theirs, "ratio": round(ours / theirs, 2)})  # fmt: skip
    return pairs


def ladder_report(
    args: argparse.Namespace, targets: dict[str, TargetFactory], log: Any
) -> tuple[dict[str, Any], bool]:
    """Run the interleaved ladder for ``args.rounds`` rounds; the report and whether any
    input was received at all."""
    rounds = [
        ladder_round(targets, args.rates, args.hold, log, reverse=index % 2 == 1)
        for index in range(args.rounds)
    ]
    best = {
        name: [max((s["rate"] for s in r[name] if s["passed"]), default=0.0) for r in rounds]
        for name in targets
    }
    medians = {name: statistics.median(values) for name, values in best.items()}
    pairs = {name: pair_ratios(rounds, name) for name in targets if name != REFERENCE}
    ratio = {
        name: statistics.median(p["ratio"] for p in found) if found else None
        for name, found in pairs.items()
    }
    report = {
        "mode": "interleaved ladder",
        "rates": args.rates,
        "rounds": rounds,
        "highest_rate_passed": best,
        "median_calls_per_second": medians,
        "cpu_per_call_pairs": pairs,
        "median_cpu_ratio_to_kamailio": ratio,
        "goals": {
            name: {
                f"{GOAL_RATE:.0f}_calls_per_second": medians[name] >= GOAL_RATE,
                f"cpu_per_call_within_{GOAL_CPU_RATIO:g}x_kamailio": (
                    ratio[name] is not None and ratio[name] <= GOAL_CPU_RATIO  # type: ignore[operator]
                ),
            }
            for name in args.targets
        },
    }
    # no input anywhere: every target (the reference too) must have received calls
    received = all(any(s["successful"] for r in rounds for s in r[name]) for name in targets)
    return report, received


def search_report(
    args: argparse.Namespace, targets: dict[str, TargetFactory], log: Any
) -> tuple[dict[str, Any], bool]:
    """The older mode: per round and target, a rate search, then holds stepping down."""
    search = {
        "service": "echo",
        "duration": args.duration,
        "max_steps": args.max_steps,
        "precision": args.precision,
        "log": log,
    }
    rounds: dict[str, list[float]] = {name: [] for name in targets}
    searched: dict[str, list[float]] = {name: [] for name in targets}
    confirmations: dict[str, list[Any]] = {name: [] for name in targets}
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
    report = {
        "mode": "search",
        "search_step_seconds": args.duration,
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
    }
    return report, kamailio_cpu is not None and any(medians.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--hold", type=float, default=60.0, help="seconds of each ladder step")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[400.0, 800.0, 1000.0], help="the ladder"
    )
    parser.add_argument(
        "--pin-cpu", type=int, default=None, help="pin the measured servers to this CPU"
    )
    parser.add_argument(
        "--targets",
        nargs="+",
        choices=[name for name in TARGETS if name != REFERENCE],
        default=["chorus_direct", "chorus_direct_uvloop", "chorus_via_kamailio"],
        help="Chorus targets besides the Kamailio reference (always measured)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS measurement")
    parser.add_argument("--search", action="store_true", help="the older search mode")
    parser.add_argument("--duration", type=float, default=10.0, help="--search: step seconds")
    parser.add_argument("--max-steps", type=int, default=9, help="--search")
    parser.add_argument("--precision", type=float, default=0.1, help="--search")
    parser.add_argument("--confirm-tries", type=int, default=5, help="--search: holds -10%%")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.pin_cpu is not None:
        cpus = os.sched_getaffinity(0)
        if args.pin_cpu not in cpus or len(cpus) < 2:
            parser.error(f"--pin-cpu {args.pin_cpu}: needs it among >= 2 CPUs {sorted(cpus)}")
        os.sched_setaffinity(0, cpus - {args.pin_cpu})  # the bench and every SIPp
    targets = {name: pinned(TARGETS[name], args.pin_cpu) for name in (REFERENCE, *args.targets)}
    started = time.monotonic()
    body, received = (search_report if args.search else ladder_report)(args, targets, log)
    report: dict[str, Any] = {
        "benchmark": "sip_call_rate",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python -m bench.sip_call_rate", *sys.argv[1:]]),
        "what": "INVITE(SDP)-200-ACK-BYE-200 calls/s to echo, sustained with zero failed calls",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "pinned_cpu": args.pin_cpu,
        "hold_seconds": args.hold,
        **body,
        "memory": None if args.no_memory else memory_per_thousand_calls(),
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    if not received:
        print("no input: a target received no call in any step", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
