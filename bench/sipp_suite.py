"""The SIPp load-test suite a release engineer runs: the highest rate each scenario sustains
with zero failures, confirmed by a hold, and a soak at a fraction of it.

    python -m bench.sipp_suite                              # every scenario, short steps
    python -m bench.sipp_suite --rounds 3 --hold 60         # the figures for RESULTS.md
    python -m bench.sipp_suite --soak 30 --soak-scenarios echo join
    python -m bench.sipp_suite --scenarios echo join --soak 30 --soak-rates 48 35 --soak-together
    python -m bench.sipp_suite --target 10.0.0.5:5060 --scenarios echo

Scenarios (bench/sipp/, see its README): ``join`` (a room with audio from a pcap, held),
``subscribe`` (conference-info, NOTIFY versions checked), ``refer`` (REFER add, then
remove), ``message`` (MESSAGE into rooms), ``echo`` (INVITE-200-ACK-BYE with SDP). Callers
spread over ``--rooms`` rooms through an injection file the runner writes; the scenarios
that need a live room get one anchor participant per room (a ``join`` call held for the
whole trial), ``refer`` gets a SIPp UAS as the target the rooms dial, and ``subscribe``
gets a trickle of participants joining and leaving the rooms so NOTIFYs keep coming.

The method follows RFC 7502 (SIP benchmarking methodology):

- A *trial* offers ``rate`` calls per second for ``duration`` seconds (``rate * duration``
  calls). It **passes** only when every call offered was created and completed
  successfully: SIPp exits 0; no failed call (a failed check in a scenario, an error
  response, a timeout, an unexpected message all fail a call); no retransmission (a
  request or response SIPp had to send again: the server was late); no unexpected
  message SIPp had to deal with outside a call (``OutOfCallMsgs``, ``DeadCallMsgs``);
  SIPp kept at least ``--min-rate-ratio`` of the offered rate (else the generator, not
  the server, was the limit); and every helper (anchors, target, trickle) did the same.
  A trial that completed no call fails: no input, no pass. NOTIFYs SIPp answered by
  itself (``-aa``, ``AutoAnswered``: the subscribe scenario's one scheduling window, see
  its file) are reported per trial, not failed: the server sent a valid NOTIFY in its
  dialog, SIPp was not standing at its wait.
- The *search* (RFC 7502's iterative search for the highest rate without failure): from
  ``--start-rate`` the rate doubles while trials pass; the first failure brackets the
  limit, and bisection narrows the bracket to ``--precision`` (relative) or
  ``--max-steps`` trials. Each trial meets a fresh server when the runner starts its own,
  so one trial's backlog cannot spoil the next.
- The *hold* confirms the found rate with a trial of ``--hold`` seconds; when it fails the
  rate steps down 20 % and holds again (at most 6 holds: a short search trial can pass a
  rate a longer one cannot). The held rate is the figure; with ``--rounds N`` the median
  over rounds.
- The *soak* (``--soak MINUTES``) runs one trial of that length at ``--soak-fraction`` of
  the held rate (or ``--soak-rate``), sampling the server's resident memory (bench/procstat.py,
  the server and its children) every ``--soak-sample`` seconds: the failed calls and the RSS
  growth from the first sample after the warm-up (a tenth of the soak) to the last. A soak
  passes when its trial does and that growth is under ``--soak-max-growth`` percent (5, the
  issue's). ``--soak-together`` offers every soak scenario at once against one server (each
  at its rate, ``--soak-rates`` one per scenario), the issue's soak at half the maximum echo
  and room-join rates; without it they soak one after the other, each on a fresh server.
- The *reference*: the same search for the echo scenario against a SIPp UAS (tests/sipp/
  uas.xml) on the same machine, the generator's own ceiling; Chorus' rates are also given as
  a ratio of it.

The runner starts its own Chorus server on free loopback ports (``chorus serve``; moderators
and REFER targets set for the refer scenario, ``[rtp] timeout`` above any hold) or takes
``--target HOST:PORT`` (then ``--pid`` names the server process for the soak's RSS). The
report is printed as JSON and appended to ``--results`` (bench/RESULTS.md; ``-`` for none).
The exit status is 0 only when every scenario held a rate above zero and every soak passed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.procstat import load_average, process_tree, rss_kib
from bench.sipp_trial import (
    SCENARIOS,
    Scenario,
    Trial,
    TrialSettings,
    run_trial,
    server_settings,
)
from tests.peers.chorus import ChorusProcess
from tests.peers.ports import LOOPBACK
from tests.peers.sipp import SippUas, scenario_path

__all__ = ["find_max_rate", "hold_rate", "main", "markdown"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


@contextlib.contextmanager
def _server(
    target: str | None, call_hold: float, duration: float
) -> Iterator[tuple[str, int | None]]:
    """The address under test and the server's pid (None when not ours and not given)."""
    if target is not None:
        yield target, None
        return
    with ChorusProcess(server_settings(call_hold, duration)) as chorus:
        assert chorus.process is not None
        yield f"{LOOPBACK}:{chorus.sip_port}", chorus.process.pid


def find_max_rate(
    attempt: Callable[[float], bool],
    *,
    start_rate: float,
    max_rate: float,
    precision: float,
    max_steps: int,
) -> tuple[float, float | None, int]:
    """The highest rate ``attempt`` passes: doubling from ``start_rate`` until a failure
    (or ``max_rate``), then bisection until the bracket is narrower than ``precision``
    (relative) or ``max_steps`` attempts were made. Returns (best, first failed rate, steps);
    best is 0 when even ``start_rate`` failed and so did every bisection below it."""
    steps = 0
    best, failed_at = 0.0, None
    rate = start_rate
    while steps < max_steps:
        steps += 1
        if attempt(rate):
            best = rate
            if rate >= max_rate:
                break
            rate = min(rate * 2, max_rate)
        else:
            failed_at = rate
            break
    low, high = best, failed_at
    while high is not None and steps < max_steps and high - low > precision * max(low, 1.0):
        middle = round((low + high) / 2, 1)
        if middle in (low, high) or middle <= 0:
            break
        steps += 1
        if attempt(middle):
            low = best = middle
        else:
            high = failed_at = middle
    return best, failed_at, steps


def hold_rate(
    attempt: Callable[[float], bool], rate: float, *, tries: int = 6, step: float = 0.8
) -> float:
    """The rate that passes a hold: ``rate``, else 20 % less, up to ``tries`` holds; 0 if none."""
    for _ in range(tries):
        if rate <= 0:
            break
        if attempt(rate):
            return rate
        rate = round(rate * step, 1)
    return 0.0


@dataclass(slots=True)
class ScenarioResult:
    """Search, hold and soak of one scenario over the rounds."""

    scenario: str
    what: str
    searched: list[float] = field(default_factory=list)
    held: list[float] = field(default_factory=list)
    trials: list[dict[str, Any]] = field(default_factory=list)
    soak: dict[str, Any] | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.held) if self.held else 0.0


class Runner:
    """Runs trials for one target configuration and keeps every trial for the report."""

    def __init__(self, args: argparse.Namespace, log: Callable[[str], None]) -> None:
        self.args = args
        self.log = log
        self.settings = TrialSettings(
            rooms=args.rooms, call_hold=args.call_hold, min_rate_ratio=args.min_rate_ratio
        )

    def trial(self, scenario: Scenario, rate: float, duration: float, into: ScenarioResult) -> bool:
        with _server(self.args.target, self.settings.call_hold, duration) as (address, _):
            trial = run_trial(scenario, address, rate, duration, self.settings)
        record = {**asdict(trial), "passed": trial.passed}
        into.trials.append(record)
        self.log(
            f"{scenario.name} {rate:g}/s x {duration:g}s: "
            + ("pass" if trial.passed else "FAIL " + "; ".join(trial.reasons))
        )
        if self.args.target is not None:
            time.sleep(self.args.cooldown)
        return trial.passed

    def search(self, attempt: Callable[[float], bool]) -> float:
        """`find_max_rate` with the run's search settings."""
        best, _, _ = find_max_rate(
            attempt,
            start_rate=self.args.start_rate,
            max_rate=self.args.max_rate,
            precision=self.args.precision,
            max_steps=self.args.max_steps,
        )
        return best

    def search_and_hold(self, scenario: Scenario, into: ScenarioResult) -> None:
        best = self.search(lambda r: self.trial(scenario, r, self.args.duration, into))
        into.searched.append(best)
        held = hold_rate(lambda r: self.trial(scenario, r, self.args.hold, into), best)
        into.held.append(held)

    def soak(self, scenario: Scenario, rate: float) -> dict[str, Any]:
        """One long trial at ``rate``, the server's RSS sampled all along."""
        return self.soak_together([(scenario, rate)])[0]

    def soak_together(self, plan: Sequence[tuple[Scenario, float]]) -> list[dict[str, Any]]:
        """One long trial of each scenario at its rate, all at once against one server
        (each SIPp in a thread of its own), the server's RSS sampled all along: one report
        per scenario, the RSS series and its verdict shared."""
        seconds = self.args.soak * 60
        samples: list[tuple[float, int]] = []
        trials: list[Trial | None] = [None] * len(plan)
        with _server(self.args.target, self.settings.call_hold, seconds) as (address, pid):
            pid = pid if pid is not None else self.args.pid
            done = threading.Event()

            def sample() -> None:
                started = time.monotonic()
                while pid is not None and not done.wait(self.args.soak_sample):
                    samples.append((time.monotonic() - started, rss_kib(process_tree(pid))))

            def offer(index: int) -> None:
                scenario, rate = plan[index]
                trials[index] = run_trial(scenario, address, rate, seconds, self.settings)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            offers = [threading.Thread(target=offer, args=(i,)) for i in range(len(plan))]
            try:
                for thread in offers:
                    thread.start()
            finally:
                for thread in offers:
                    thread.join()
                done.set()
                sampler.join()
        rss = rss_verdict(samples, seconds, self.args.soak_max_growth)
        names = [scenario.name for scenario, _ in plan]
        reports = []
        for (scenario, rate), trial in zip(plan, trials, strict=True):
            assert trial is not None, f"{scenario.name}: the SIPp thread ended without a trial"
            reasons = [*trial.reasons, *rss["reasons"]]
            report = {
                "scenario": scenario.name,
                "minutes": self.args.soak,
                "rate": rate,
                "together_with": [n for n in names if n != scenario.name],
                "calls": trial.offered,
                "successful": trial.successful,
                "failed": trial.failed,
                "retransmissions": trial.retransmissions,
                "passed": not reasons,
                "reasons": reasons,
                **{key: value for key, value in rss.items() if key != "reasons"},
                "rss_samples": len(samples),
                "rss_kib_series": [[round(at, 1), kib] for at, kib in samples],
            }
            self.log(f"soak {scenario.name}: {report}")
            reports.append(report)
        return reports


def rss_verdict(
    samples: Sequence[tuple[float, int]], seconds: float, max_growth: float
) -> dict[str, Any]:
    """The RSS growth from the first sample after the warm-up (a tenth of the soak) to the
    last, and a reason to fail when it is over ``max_growth`` percent (issue 13: 5) or when
    there were not two samples to judge by (no input, no pass)."""
    warm = [kib for at, kib in samples if at >= seconds / 10] or [kib for _, kib in samples]
    growth = (warm[-1] - warm[0]) * 100 / warm[0] if len(warm) >= 2 and warm[0] else None
    reasons = []
    if growth is None:
        reasons.append(f"RSS not judged: {len(samples)} samples")
    elif growth >= max_growth:
        reasons.append(f"RSS grew {growth:.2f} % (limit {max_growth:g} %)")
    return {
        "rss_kib_first_after_warmup": warm[0] if warm else None,
        "rss_kib_last": warm[-1] if warm else None,
        "rss_growth_percent": round(growth, 2) if growth is not None else None,
        "reasons": reasons,
    }


def reference_search(runner: Runner) -> float:
    """The echo search against a SIPp UAS: what this machine's SIPp can do at all."""
    echo = SCENARIOS["echo"]

    def step(rate: float) -> bool:
        with SippUas(scenario_path("uas"), stop_timeout=5) as uas:
            trial = run_trial(echo, uas.address, rate, runner.args.duration, runner.settings)
        runner.log(f"reference {rate:g}/s: {'pass' if trial.passed else trial.reasons}")
        return trial.passed

    return runner.search(step)


def markdown(report: dict[str, Any]) -> str:
    """The section appended to RESULTS.md."""
    lines = [
        f"## SIPp load-test suite (issue 13 item 2; {report['date']})",
        "",
        f"`{report['command']}` — machine: {report['machine']}; trial {report['duration']} s,"
        f" hold {report['hold']} s, calls hold {report['call_hold']} s, {report['rooms']}"
        f" rooms; target {report['target']}. Pass = every call offered completed, no failed"
        " call, no retransmission, no unexpected message, offered rate kept, helpers clean"
        " (bench/sipp_suite.py docstring).",
    ]
    if report["scenarios"]:
        lines += [
            "",
            "| scenario | searched (calls/s) | held per round | median held | ratio to reference |",
            "|---|---|---|---|---|",
        ]
    reference = report.get("reference_calls_per_second")
    for name, result in report["scenarios"].items():
        ratio = f"{result['median'] / reference:.3f}" if reference else "—"
        lines.append(
            f"| {name} | {', '.join(f'{r:g}' for r in result['searched'])} |"
            f" {', '.join(f'{r:g}' for r in result['held'])} | **{result['median']:g}** | {ratio} |"
        )
    if reference is not None:
        lines += [
            "",
            f"Reference (echo scenario against a SIPp UAS, same run): {reference:g} calls/s.",
        ]
    for soak in report.get("soaks", []):
        verdict = "pass" if soak["passed"] else "FAIL: " + "; ".join(soak["reasons"])
        lines += [
            "",
            f"Soak {soak['scenario']}: {soak['minutes']} min at {soak['rate']:g} calls/s"
            + (f" (at once with {', '.join(together)})" if (together := soak.get("together_with"))
               else "")
            + f", {soak['successful']} of {soak['calls']} calls completed, {soak['failed']} failed,"
            f" RSS {soak['rss_kib_first_after_warmup']} → {soak['rss_kib_last']} KiB"
            f" ({soak['rss_growth_percent']} %), {verdict}.",
        ]  # fmt: skip
        series = soak.get("rss_kib_series") or []
        if series:
            lines.append("RSS series (s, KiB): " + ", ".join(f"{at:g} {kib}" for at, kib in series))
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS)
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per search trial")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds the found rate must hold")
    parser.add_argument("--call-hold", type=float, default=1.0, help="seconds each call holds")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--start-rate", type=float, default=5.0)
    parser.add_argument("--max-rate", type=float, default=1000.0)
    parser.add_argument("--precision", type=float, default=0.1, help="relative bracket width")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--min-rate-ratio", type=float, default=0.9)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--reference", action="store_true", help="also search SIPp -> SIPp UAS")
    parser.add_argument("--soak", type=float, default=0.0, metavar="MINUTES")
    parser.add_argument("--soak-fraction", type=float, default=0.5)
    parser.add_argument("--soak-rate", type=float, help="soak at this rate, no search")
    parser.add_argument("--soak-scenarios", nargs="+", choices=sorted(SCENARIOS))
    parser.add_argument(
        "--soak-together",
        action="store_true",
        help="soak the soak scenarios at once against one server (the issue's soak), not in turn",
    )
    parser.add_argument(
        "--soak-max-growth",
        type=float,
        default=5.0,
        help="RSS growth (percent, after the warm-up) a soak may show and pass",
    )
    parser.add_argument(
        "--soak-rates",
        nargs="+",
        type=float,
        metavar="RATE",
        help="per soak scenario, in order (overrides --soak-rate)",
    )
    parser.add_argument(
        "--soak-sample", type=float, default=10.0, help="seconds between RSS samples"
    )
    parser.add_argument("--target", help="HOST:PORT of a server to test instead of our own")
    parser.add_argument("--pid", type=int, help="the --target server's pid, for the soak's RSS")
    parser.add_argument(
        "--cooldown", type=float, default=3.0, help="seconds between trials on --target"
    )
    parser.add_argument(
        "--results", default=str(RESULTS), help="markdown file to append to; - for none"
    )
    return parser.parse_args(argv)


def _exit_on_term(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C: every server and SIPp started is stopped on the way out."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_term)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    runner = Runner(args, log)
    started = time.monotonic()
    results = {name: ScenarioResult(name, SCENARIOS[name].what) for name in args.scenarios}
    search = (args.soak_rate is None and args.soak_rates is None) or not args.soak
    if search:
        for round_index in range(args.rounds):
            for name in args.scenarios:
                log(f"round {round_index + 1}: {name}")
                runner.search_and_hold(SCENARIOS[name], results[name])
    soaks = []
    plan: list[tuple[Scenario, float]] = []
    names = args.soak_scenarios or (args.scenarios if args.soak else [])
    if args.soak_rates is not None and len(args.soak_rates) != len(names):
        raise SystemExit(f"--soak-rates: {len(args.soak_rates)} rates for {len(names)} scenarios")
    for index, name in enumerate(names):
        rate = (
            args.soak_rates[index]
            if args.soak_rates is not None
            else args.soak_rate or round(results[name].median * args.soak_fraction, 1)
        )
        if rate <= 0:
            soaks.append({"scenario": name, "minutes": args.soak, "rate": 0.0, "passed": False,
                          "reasons": ["no held rate to soak at"], "calls": 0, "successful": 0,
                          "failed": 0, "rss_kib_first_after_warmup": None, "rss_kib_last": None,
                          "rss_growth_percent": None})  # fmt: skip
            continue
        plan.append((SCENARIOS[name], rate))
    if args.soak_together and plan:
        soaks += runner.soak_together(plan)
    else:
        soaks += [runner.soak(scenario, rate) for scenario, rate in plan]
    report: dict[str, Any] = {
        "benchmark": "sipp_suite",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(
            ["python -m bench.sipp_suite", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": f"{os.cpu_count()} CPUs shared with other sessions, load average"
        f" {load_average()} at the end, Python {platform.python_version()}",
        "target": args.target or "own chorus serve on loopback",
        "duration": args.duration,
        "hold": args.hold,
        "call_hold": args.call_hold,
        "rooms": args.rooms,
        "scenarios": {
            name: {**asdict(r), "median": r.median} for name, r in results.items() if search
        },
        "soaks": soaks,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    if args.reference and search:
        report["reference_calls_per_second"] = reference_search(runner)
    failed = [n for n, r in report["scenarios"].items() if r["median"] <= 0]
    failed += [f"soak {s['scenario']}" for s in soaks if not s["passed"]]
    report["failed"] = failed
    print(json.dumps(report, indent=2))
    if args.results != "-":
        with open(args.results, "a") as out:
            out.write("\n" + markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
