"""Where Chorus' CPU goes under the echo call-rate load: py-spy samples the server while SIPp
places INVITE(SDP)-200-ACK-BYE-200 calls to echo at a fixed rate.

    python -m bench.profile_call_rate --rate 400 --duration 20
    python -m bench.profile_call_rate --rate 400 --duration 20 --event-loop uvloop

py-spy (a PyPI wheel, ``pip install py-spy``; the bench fails without it) attaches to the
running ``chorus serve`` and records every sampled stack (``--format raw``, idle samples
dropped). The report gives, for the busiest functions, the share of busy samples spent in the
function itself (self) and in it or anything it called (inclusive), and the same folded into
the stages of one call (parse, transaction, dialog and session, SDP, echo media set-up,
socket work, event loop). The server's own CPU time over the load (from /proc) and the calls
SIPp completed give CPU-seconds per 1,000 calls next to it. A run in which SIPp completed no
call, or py-spy took no sample, fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.procstat import cpu_seconds, load_average, process_tree
from tests.peers.chorus import ChorusProcess
from tests.peers.sipp import run_sipp

# A frame's file names the stage it belongs to; the first match from the leaf wins.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "SIP parse / serialise",
        ("sip/message.py", "sip/framing.py", "sip/headers.py", "sip/uri.py"),
    ),
    ("SDP", ("sip/sdp/", "media/answer.py")),
    (
        "transactions + timers",
        ("sip/transaction.py", "sip/timers.py", "sip/timerheap.py", "sip/matching.py"),
    ),
    (
        "dialog / session / UA",
        (
            "sip/useragent.py",
            "sip/compose.py",
            "sip/counters.py",
            "sip/session.py",
            "sip/dialog.py",
            "sip/sessiontimer.py",
        ),
    ),
    ("app routing", ("control/app.py", "control/server.py", "control/streams")),
    ("echo media set-up (RTP sockets, RTCP)", ("control/echo/", "media/ports.py", "media/rtcp")),
    ("SIP transport", ("sip/transport.py",)),
    ("logging", ("logging/",)),
    ("event loop (asyncio / uvloop)", ("asyncio/", "uvloop", "selectors.py")),
)


def _frame_file(frame: str) -> str:
    # py-spy raw frames read "function (path/file.py:line)"
    start = frame.rfind("(")
    return frame[start + 1 :] if start >= 0 else frame


def _function(frame: str) -> str:
    head, _, where = frame.rpartition(" (")
    path = where.rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[-2:]) if parts else path
    return f"{head} ({short})"


def stage_of(stack: list[str]) -> str:
    """The stage of a sample: the first stage (from the leaf up) whose files hold a frame."""
    for frame in reversed(stack):
        where = _frame_file(frame)
        for stage, needles in STAGES:
            if any(needle in where for needle in needles):
                return stage
    return "other"


def summarise(raw: str, top: int = 25) -> dict[str, Any]:
    """Self and inclusive shares of the busy samples, per function and per stage."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack_text.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[_function(frames[-1])] += count
        for name in {_function(f) for f in frames}:
            inclusive[name] += count
        stages[stage_of(frames)] += count
    if total == 0:
        return {"samples": 0}

    def share(n: int) -> float:
        return round(100.0 * n / total, 1)

    return {
        "samples": total,
        "stages_percent": {k: share(v) for k, v in stages.most_common()},
        "top_self_percent": {k: share(v) for k, v in self_counts.most_common(top)},
        "top_inclusive_percent": {k: share(v) for k, v in inclusive.most_common(top)},
    }


def profile(
    rate: float, duration: float, event_loop: str, sample_rate: int, keep: Path | None = None
) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: pip install py-spy")
    overrides = {"server": {"log_level": "WARNING", "trace_sip": False, "event_loop": event_loop}}
    with ChorusProcess(overrides) as chorus, tempfile.TemporaryDirectory() as tmp:
        assert chorus.process is not None
        pid = chorus.process.pid
        out = Path(tmp) / "stacks.txt"
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", str(sample_rate), "--format",
             "raw", "--output", str(out), "--duration", str(int(duration + 2)), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        time.sleep(1.0)  # py-spy attached before the first call
        tree = process_tree(pid)
        before = cpu_seconds(tree)
        calls = max(1, round(rate * duration))
        result: dict[str, Any] = {}

        def load() -> None:
            result["sipp"] = run_sipp(
                "uac_echo",
                f"127.0.0.1:{chorus.sip_port}",
                calls=calls,
                rate=rate,
                service="echo",
                max_concurrent=max(100, int(rate * 4)),
                recv_timeout_ms=5_000,
                timeout=duration * 3 + 20,
            )

        thread = threading.Thread(target=load)
        thread.start()
        thread.join()
        used = cpu_seconds(tree) - before
        load_avg = load_average()
        _, err = spy.communicate(timeout=duration + 30)
        raw = out.read_text() if out.exists() else ""
        if keep is not None:
            keep.write_text(raw)
    stats = result["sipp"].stats
    successful = stats.successful if stats else 0
    failed = stats.failed if stats else calls
    summary = summarise(raw)
    if successful == 0 or summary["samples"] == 0:
        print(err.decode(errors="replace"), file=sys.stderr)
        raise SystemExit(f"no input: {successful} calls completed, {summary['samples']} samples")
    return {
        "rate": rate,
        "duration": duration,
        "event_loop": event_loop,
        "calls": calls,
        "successful": successful,
        "failed": failed,
        "chorus_cpu_seconds": round(used, 2),
        "cpu_seconds_per_1000_calls": round(used * 1000 / successful, 3),
        "load_average": load_avg,
        **summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=400.0, help="calls per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--sample-rate", type=int, default=250, help="py-spy samples/s")
    parser.add_argument("--stacks", type=Path, help="keep py-spy's raw stacks in this file")
    args = parser.parse_args(argv)
    report = {
        "benchmark": "profile_call_rate",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python -m bench.profile_call_rate", *sys.argv[1:]]),
        **profile(args.rate, args.duration, args.event_loop, args.sample_rate, args.stacks),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
