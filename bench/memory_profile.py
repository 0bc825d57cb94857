"""Where the server's memory goes under a steady SIPp load: a leak (grows with every call,
without bound) or a cache/pool (levels off), and which allocation sites.

    python -m bench.memory_profile --scenario echo --rate 40 --minutes 3
    python -m bench.memory_profile --scenario join --rate 30 --minutes 2

The runner starts ``chorus serve`` in a child process of this module (``--child``) with
tracemalloc on (``PYTHONTRACEMALLOC=25``: 25-frame tracebacks) and the bench suite's server
settings. The child takes a labelled snapshot when sent SIGUSR1: ``gc.collect()`` first (so
garbage is not counted as held), then the tracemalloc snapshot (pickled) and the live
objects counted by type (``gc.get_objects()``), both written to the work directory; every
``--sample`` seconds it also appends its RSS and traced memory to ``samples.jsonl``.

The load runs in two equal halves of ``--minutes`` (bench/sipp_trial.run_trial, the
suite's trials), each followed by ``--settle`` seconds of no calls (above the 32 s of
Timer H/J/K, so finished transactions and dialogs have had their time to go), and a
snapshot after each: ``base`` (after a warm-up of ``--warmup`` calls and the settle),
``half`` and ``end``. Growth ``base -> half`` includes caches filling; growth ``half ->
end`` is what the second half's calls added once caches were warm: a site that grows as
much per call in the second half as in the first is a leak, one that stopped is a cache.
Figures are per 1,000 successful calls. The report (top sites by traceback, object counts
by type) is printed and, unless ``--results -``, appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procstat import rss_kib
from bench.sipp_trial import SCENARIOS, TrialSettings, run_trial, server_settings
from tests.peers.chorus import ROOT, ChorusProcess
from tests.peers.ports import LOOPBACK

__all__ = ["main"]

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# --- the child: chorus serve in-process, snapshots on SIGUSR1 --------------------------


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _snapshot(workdir: Path, label: str) -> None:
    gc.collect()
    counts = Counter(_type_name(o) for o in gc.get_objects())
    snap = tracemalloc.take_snapshot()
    snap.dump(str(workdir / f"{label}.snapshot"))
    (workdir / f"{label}.types.json").write_text(json.dumps(counts))
    (workdir / f"{label}.done").write_text(str(rss_kib([os.getpid()])))


def _child(config: Path, workdir: Path, sample: float) -> int:
    from control.cli import main as chorus_main

    labels = iter(["base", "half", "end", *(f"extra{n}" for n in range(100))])
    requests: list[str] = []
    wake = threading.Event()

    def on_usr1(signum: int, frame: object) -> None:
        requests.append(next(labels))
        wake.set()

    def sampler() -> None:
        with (workdir / "samples.jsonl").open("a") as out:
            while True:
                wake.wait(sample)
                wake.clear()
                while requests:
                    _snapshot(workdir, requests.pop(0))
                current, peak = tracemalloc.get_traced_memory()
                row = {"t": time.time(), "rss_kib": rss_kib([os.getpid()]), "traced": current}
                out.write(json.dumps(row) + "\n")
                out.flush()

    if not tracemalloc.is_tracing():
        tracemalloc.start(25)
    signal.signal(signal.SIGUSR1, on_usr1)
    threading.Thread(target=sampler, daemon=True).start()
    return chorus_main(["serve", "--config", str(config)])


# --- the runner ---------------------------------------------------------------------


class _Server:
    """The child under tracemalloc, on the ChorusProcess's config and free ports."""

    def __init__(self, overrides: dict[str, dict[str, Any]], sample: float) -> None:
        self.chorus = ChorusProcess(overrides)  # writes the config; not started
        self.workdir = self.chorus.workdir
        self.sample = sample
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> _Server:
        env = {**os.environ, "PYTHONTRACEMALLOC": "25"}
        config = str(self.chorus.config_path)
        argv = [sys.executable, "-m", "bench.memory_profile", "--child", config,
                str(self.workdir), str(self.sample)]  # fmt: skip
        log = (self.workdir / "chorus.log").open("wb")
        self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if b"chorus ready" in line:
                return self
        raise RuntimeError("chorus did not start: " + (self.workdir / "chorus.log").read_text())

    def snapshot(
        self, label: str, timeout: float = 600.0
    ) -> tuple[tracemalloc.Snapshot, Counter[str], int]:
        assert self.process is not None
        self.process.send_signal(signal.SIGUSR1)
        done = self.workdir / f"{label}.done"
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"no snapshot {label}")
            time.sleep(0.5)
        snap = tracemalloc.Snapshot.load(str(self.workdir / f"{label}.snapshot"))
        types = Counter(json.loads((self.workdir / f"{label}.types.json").read_text()))
        return snap, types, int(done.read_text())

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _frames(stat: tracemalloc.StatisticDiff, depth: int) -> str:
    """The innermost frames inside the project (control/), else the innermost frames."""
    frames = list(reversed(stat.traceback))  # tracemalloc keeps the oldest frame first
    ours = [f for f in frames if "/control/" in f.filename]
    pick = (ours or frames)[:depth]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in pick)


def _site_growth(
    old: tracemalloc.Snapshot, new: tracemalloc.Snapshot, calls: int, top: int
) -> list[dict[str, Any]]:
    per = 1000.0 / max(calls, 1)
    diffs = new.compare_to(old, "traceback")
    diffs.sort(key=lambda d: d.size_diff, reverse=True)
    return [
        {
            "site": _frames(d, 4),
            "kib_per_1000": round(d.size_diff / 1024 * per, 1),
            "blocks_per_1000": round(d.count_diff * per, 1),
            "kib_total": round(d.size / 1024, 1),
        }
        for d in diffs[:top]
        if d.size_diff > 0
    ]


def _type_growth(
    old: Counter[str], new: Counter[str], calls: int, top: int
) -> list[dict[str, Any]]:
    per = 1000.0 / max(calls, 1)
    diff = Counter({k: new[k] - old.get(k, 0) for k in new})
    return [
        {"type": k, "per_1000": round(v * per, 1), "count": new[k]}
        for k, v in diff.most_common(top)
        if v > 0
    ]


def _trial(scenario: str, address: str, rate: float, seconds: float, rooms: int) -> int:
    trial = run_trial(SCENARIOS[scenario], address, rate, seconds, TrialSettings(rooms, 1.0))
    if trial.successful == 0:
        raise SystemExit(f"{scenario} {rate}/s x {seconds}s: no call completed: {trial.reasons}")
    if trial.failed:  # a failed call's session waits for its RTP timeout: held, not leaked
        print(
            f"warning: {trial.failed} failed calls; lower --rate for a clean figure",
            file=sys.stderr,
        )
    verdict = "; ".join(trial.reasons) or "pass"
    print(f"{scenario} {rate:g}/s x {seconds:g}s: {trial.successful} calls ok, "
          f"{trial.failed} failed, {verdict}", file=sys.stderr)  # fmt: skip
    return trial.successful


def profile(args: argparse.Namespace) -> dict[str, Any]:
    half = args.minutes * 30.0
    settings = server_settings(1.0, half)
    with _Server(settings, args.sample) as server:
        address = f"{LOOPBACK}:{server.chorus.sip_port}"
        _trial(args.scenario, address, min(args.rate, 10.0), args.warmup / min(args.rate, 10.0),
               args.rooms)  # fmt: skip
        time.sleep(args.settle)
        base, base_types, base_rss = server.snapshot("base")
        first = _trial(args.scenario, address, args.rate, half, args.rooms)
        time.sleep(args.settle)
        mid, mid_types, mid_rss = server.snapshot("half")
        second = _trial(args.scenario, address, args.rate, half, args.rooms)
        time.sleep(args.settle)
        end, end_types, end_rss = server.snapshot("end")
    traced = [sum(s.size for s in snap.statistics("filename")) for snap in (base, mid, end)]
    return {
        "scenario": args.scenario,
        "rate": args.rate,
        "calls": [first, second],
        "rss_kib": [base_rss, mid_rss, end_rss],
        "traced_kib": [round(t / 1024) for t in traced],
        "traced_kib_per_1000": [
            round((traced[1] - traced[0]) / 1024 * 1000 / first, 1),
            round((traced[2] - traced[1]) / 1024 * 1000 / second, 1),
        ],
        "sites_first_half": _site_growth(base, mid, first, args.top),
        "sites_second_half": _site_growth(mid, end, second, args.top),
        "types_first_half": _type_growth(base_types, mid_types, first, args.top),
        "types_second_half": _type_growth(mid_types, end_types, second, args.top),
        "workdir": str(server.workdir),
    }


def markdown(report: dict[str, Any], command: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"\n## Memory profile: {report['scenario']} at {report['rate']:g} calls/s ({now})\n",
        f"`{command}` (tracemalloc 25 frames; snapshots after a settle with no calls)\n",
        f"- calls per half: {report['calls']}; RSS KiB base/half/end: {report['rss_kib']}; "
        f"traced KiB: {report['traced_kib']}; traced growth KiB per 1,000 calls, first/second "
        f"half: {report['traced_kib_per_1000']}\n",
    ]
    for key in ("sites_second_half", "sites_first_half"):
        lines.append(f"\n{key.replace('_', ' ')} (KiB and blocks per 1,000 calls):\n")
        lines.append("| site (innermost control/ frames) | KiB/1000 | blocks/1000 | KiB held |")
        lines.append("|---|---|---|---|")
        lines.extend(
            f"| {s['site']} | {s['kib_per_1000']} | {s['blocks_per_1000']} | {s['kib_total']} |"
            for s in report[key][:10]
        )
    for key in ("types_second_half", "types_first_half"):
        lines.append(f"\n{key.replace('_', ' ')} (objects per 1,000 calls, count at end):\n")
        lines.append(
            ", ".join(f"{t['type']} {t['per_1000']} ({t['count']})" for t in report[key][:12])
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return _child(Path(argv[1]), Path(argv[2]), float(argv[3]))
    parser = argparse.ArgumentParser(prog="python -m bench.memory_profile")
    parser.add_argument("--scenario", choices=["echo", "join"], default="echo")
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--minutes", type=float, default=3.0, help="load time, in two halves")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=200, help="calls before the base snapshot")
    parser.add_argument("--settle", type=float, default=40.0, help="seconds idle before a snapshot")
    parser.add_argument("--sample", type=float, default=30.0)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    report = profile(args)
    print(json.dumps(report, indent=1))
    text = markdown(report, "python -m bench.memory_profile " + " ".join(argv))
    print(text)
    if args.results != "-":
        with contextlib.suppress(OSError), Path(args.results).open("a") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
