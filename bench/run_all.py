"""Run every benchmark in turn and write their JSON documents to bench/out/.

    python -m bench.run_all            # the full figures (tens of minutes on 2 cores)
    python -m bench.run_all --quick    # a short pass to check the benchmarks still run

bench/RESULTS.md records the figures with the command, the machine and the date.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

FULL = {
    "sip_call_rate": ["--duration", "10", "--hold", "60", "--rounds", "3"],
    "kamailio_reference": ["--duration", "10", "--baseline"],
    "mixer_load": [],
    "mixer_capacity": [],
    "msrp_chat": ["--runs", "5"],
    "msrp_file": ["--runs", "5"],
    "file_pull": ["--runs", "3"],
    "chat_fanout": ["--runs", "5"],
    "screen_fanout": ["--runs", "3"],
    "freeswitch_engine": ["--runs", "3"],
    "cluster_rate": ["--rounds", "3"],
    "conference_info": ["--runs", "5"],
    "muc_fanout": ["--runs", "3"],
    "xmpp_messages": ["--runs", "3"],
}
QUICK = {
    "sip_call_rate": ["--duration", "5", "--hold", "10", "--max-steps", "5"],
    "kamailio_reference": ["--duration", "4", "--max-steps", "5"],
    "mixer_load": ["--quick"],
    "mixer_capacity": ["--quick"],
    "msrp_chat": ["--runs", "2", "--messages", "2000"],
    "msrp_file": ["--runs", "2", "--megabytes", "20"],
    "file_pull": ["--runs", "1", "--megabytes", "5", "--pullers", "3"],
    "chat_fanout": ["--runs", "1", "--sizes", "10"],
    "screen_fanout": ["--runs", "1", "--viewers", "10"],
    "freeswitch_engine": ["--quick", "--runs", "1"],
    "cluster_rate": ["--rounds", "1", "--duration", "4", "--max-steps", "3", "--rooms-bisect", "0"],
    "conference_info": ["--runs", "3", "--subscribers", "50", "--room", "20"],
    "muc_fanout": ["--runs", "1", "--messages", "10", "--sip", "5", "--xmpp", "5"],
    "xmpp_messages": ["--runs", "1", "--messages", "500"],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("only", nargs="*", help="benchmark names (default: all)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    OUT.mkdir(exist_ok=True)
    failed = 0
    for name, extra in plan.items():
        if args.only and name not in args.only:
            continue
        started = time.monotonic()
        print(f"== {name} {' '.join(extra)}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", *extra],
            capture_output=True,
            text=True,
            check=False,
        )
        (OUT / f"{name}.json").write_text(done.stdout)
        (OUT / f"{name}.log").write_text(done.stderr)
        print(done.stdout[-3000:], flush=True)
        print(f"== {name}: exit {done.returncode} in {time.monotonic() - started:.0f} s")
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
