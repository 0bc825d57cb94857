"""Reference figure: the highest call rate SIPp sustains through Kamailio with no failure.

Each step runs `rate * duration` calls (INVITE with SDP, 200, ACK, BYE, 200; no media) at
`rate` calls per second against a fresh target and counts it sustained only when every
call succeeded and SIPp kept the rate. The rate doubles until a step fails, then a binary
search narrows the bracket. The same search measures Chorus directly or behind Kamailio:
`max_sustained_rate()` takes any factory of targets.

    python -m bench.kamailio_reference                 # quick (a few minutes at most)
    python -m bench.kamailio_reference --duration 60   # the figure to record

Prints one JSON document. The whole machine (2 cores) is shared by SIPp UAC, SIPp UAS and
Kamailio, so the rate is a property of this machine, not of Kamailio alone. Each step also
records the CPU time the measured servers used (every process of each: Kamailio's main
process and all its children), as CPU-seconds per 1,000 successful calls: that figure does
not depend on what the load generator could send.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.procstat import cpu_seconds, process_tree
from tests.peers.kamailio import KamailioProcess, kamailio_available
from tests.peers.sipp import SippUas, Transport, run_sipp, sipp_available

__all__ = [
    "RateSearch",
    "StepResult",
    "Target",
    "TargetFactory",
    "kamailio_target",
    "max_sustained_rate",
    "main",
    "sipp_uas_target",
]


@dataclass(frozen=True, slots=True)
class Target:
    """A target under load: where SIPp sends, and the servers whose CPU time is charged
    (name -> root pid; the root's descendants count too)."""

    address: str
    processes: dict[str, int] = field(default_factory=dict)


# A factory returns a context manager that brings a target up, yields it, and tears it
# down on exit.
TargetFactory = Callable[[], contextlib.AbstractContextManager[Target]]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One rate tried."""

    rate: float
    calls: int
    successful: int
    failed: int
    achieved_rate: float
    retransmissions: int
    returncode: int
    sustained: bool
    wall_seconds: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds_per_1000_calls: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RateSearch:
    """The outcome of a search: the best sustained rate and every step on the way."""

    max_rate: float
    first_failed_rate: float | None
    duration: float
    scenario: str
    transport: str
    steps: list[StepResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _achieved_rate(raw: dict[str, str]) -> float:
    try:
        return float(raw.get("CallRate(C)", "0") or 0)
    except ValueError:
        return 0.0


def run_step(
    target: Target,
    rate: float,
    *,
    duration: float,
    scenario: str,
    service: str,
    transport: Transport,
    min_rate_ratio: float,
) -> StepResult:
    """Offer `rate` calls/s for `duration` seconds; sustained = all succeeded, rate kept.

    The CPU time of each of the target's servers is read before and after the SIPp run.
    """
    calls = max(1, round(rate * duration))
    trees = {name: process_tree(pid) for name, pid in target.processes.items()}
    cpu_before = {name: cpu_seconds(tree) for name, tree in trees.items()}
    started = time.monotonic()
    result = run_sipp(
        scenario,
        target.address,
        transport=transport,
        calls=calls,
        rate=rate,
        service=service,
        max_concurrent=max(100, int(rate * 4)),
        recv_timeout_ms=5_000,
        timeout=duration * 3 + 20,
    )
    wall = time.monotonic() - started
    cpu = {name: round(cpu_seconds(tree) - cpu_before[name], 2) for name, tree in trees.items()}
    stats = result.stats
    successful = stats.successful if stats else 0
    failed = stats.failed if stats else calls
    achieved = _achieved_rate(stats.raw) if stats else 0.0
    sustained = (
        result.ok and successful == calls and failed == 0 and achieved >= rate * min_rate_ratio
    )
    return StepResult(
        rate=rate,
        calls=calls,
        successful=successful,
        failed=failed,
        achieved_rate=round(achieved, 1),
        retransmissions=stats.retransmissions if stats else 0,
        returncode=result.returncode,
        sustained=sustained,
        wall_seconds=round(wall, 2),
        cpu_seconds=cpu,
        cpu_seconds_per_1000_calls={
            name: round(used * 1000 / successful, 3) if successful else None
            for name, used in cpu.items()
        },
    )


def max_sustained_rate(
    target_factory: TargetFactory,
    *,
    scenario: str = "uac_echo",
    service: str = "bench",
    transport: Transport = "u1",
    start_rate: float = 100.0,
    max_rate: float = 6400.0,
    duration: float = 5.0,
    precision: float = 0.1,
    max_steps: int = 12,
    min_rate_ratio: float = 0.9,
    cooldown: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> RateSearch:
    """Find the highest rate in [start_rate, max_rate] sustained for `duration` seconds.

    Doubling from `start_rate` brackets the limit; bisection stops when the bracket is
    narrower than `precision` (relative) or after `max_steps` steps. Each step gets a
    fresh target from `target_factory`, so a failed step's backlog cannot spoil the next.
    A step also fails if SIPp could not offer at least `min_rate_ratio` of the rate (the
    generator, not the target, was the limit: the figure is then a lower bound).
    """
    steps: list[StepResult] = []
    best = 0.0
    failed_at: float | None = None

    def attempt(rate: float) -> bool:
        with target_factory() as target:
            step = run_step(
                target,
                rate,
                duration=duration,
                scenario=scenario,
                service=service,
                transport=transport,
                min_rate_ratio=min_rate_ratio,
            )
        steps.append(step)
        if log is not None:
            log(json.dumps(asdict(step)))
        time.sleep(cooldown)
        return step.sustained

    rate = start_rate
    while len(steps) < max_steps:
        if attempt(rate):
            best = rate
            if rate >= max_rate:
                break
            rate = min(rate * 2, max_rate)
        else:
            failed_at = rate
            break
    low, high = best, failed_at
    while high is not None and len(steps) < max_steps and high - low > precision * max(low, 1):
        middle = round((low + high) / 2, 1) if low > 0 else round(high / 2, 1)
        if middle in (low, high) or middle <= 0:
            break
        if attempt(middle):
            low = best = middle
        else:
            high = failed_at = middle
    return RateSearch(
        max_rate=best,
        first_failed_rate=failed_at,
        duration=duration,
        scenario=scenario,
        transport=transport,
        steps=steps,
    )


@contextlib.contextmanager
def sipp_uas_target(transport: Transport = "u1") -> Iterator[Target]:
    """A SIPp UAS alone (the baseline without a proxy)."""
    with SippUas(transport=transport, stop_timeout=5) as uas:
        yield Target(uas.address)


def kamailio_target(
    transport: Transport = "u1", *, children: int = 2, shm_mb: int = 1024
) -> TargetFactory:
    """Factory: a SIPp UAS behind a fresh Kamailio edge proxy; yields Kamailio's address.

    Shared memory must hold every transaction until its wait timer (5 s) ends: about
    30 KB per call (INVITE + BYE), so 256 MB runs out near 8,500 calls in 5 s (1,700/s)
    and Kamailio answers 500. 1 GB keeps memory out of the measurement.
    """

    @contextlib.contextmanager
    def factory() -> Iterator[Target]:
        with (
            SippUas(transport=transport, stop_timeout=5) as uas,
            KamailioProcess([uas.sip_uri], children=children, shm_mb=shm_mb) as proxy,
        ):
            assert proxy.pid is not None
            yield Target(proxy.sip_address, {"kamailio": proxy.pid})

    return factory


def _kamailio_version() -> str:
    try:
        done = subprocess.run(
            ["kamailio", "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return "unknown"
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per rate step")
    parser.add_argument("--start-rate", type=float, default=100.0)
    parser.add_argument("--max-rate", type=float, default=6400.0)
    parser.add_argument("--precision", type=float, default=0.1, help="relative bracket width")
    parser.add_argument("--max-steps", type=int, default=10)
    parser.add_argument("--transport", choices=["u1", "t1"], default="u1")
    parser.add_argument("--children", type=int, default=2, help="Kamailio workers per listener")
    parser.add_argument("--shm", type=int, default=1024, help="Kamailio shared memory, MB")
    parser.add_argument(
        "--baseline", action="store_true", help="also measure SIPp UAC -> SIPp UAS directly"
    )
    args = parser.parse_args(argv)
    if not (kamailio_available() and sipp_available()):
        print(json.dumps({"error": "kamailio and sipp are required"}))
        return 2
    transport: Transport = "t1" if args.transport == "t1" else "u1"

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    common: dict[str, Any] = {
        "transport": transport,
        "start_rate": args.start_rate,
        "max_rate": args.max_rate,
        "duration": args.duration,
        "precision": args.precision,
        "max_steps": args.max_steps,
        "log": log,
    }
    started = time.monotonic()
    report: dict[str, Any] = {
        "benchmark": "kamailio_reference",
        "what": "INVITE(SDP)-200-ACK-BYE-200 calls/s sustained with zero failed calls",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "kamailio": _kamailio_version(),
        "kamailio_children": args.children,
        "kamailio_shm_mb": args.shm,
    }
    factory = kamailio_target(transport, children=args.children, shm_mb=args.shm)
    via = max_sustained_rate(factory, **common)
    report["via_kamailio"] = via.to_json()
    if args.baseline:
        direct = max_sustained_rate(lambda: sipp_uas_target(transport), **common)
        report["direct"] = direct.to_json()
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
