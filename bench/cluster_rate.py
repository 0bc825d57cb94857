"""Call rate and rooms carried by 1 and 2 Chorus control nodes behind Kamailio (cluster mode).

    python -m bench.cluster_rate --rounds 1 --duration 5      # quick look
    python -m bench.cluster_rate --rounds 3                   # the figures for RESULTS.md

The edge is deploy/kamailio/kamailio.cfg (2 children, OPTIONS probes every 5 s); each node
is a `chorus serve` in cluster mode ([cluster] kamailio_rpc), so it registers in the
dispatcher set and pins every room it opens in htable ``rooms`` over JSON-RPC, unpinning
it when the room ends. Every SIPp call opens a room of its own (bench/sipp/
uac_room_per_call.xml: ``sip:<service>-<call number>@edge``, one member, no RTP sent).

- Call rate: the highest rate with zero failed calls for ``--duration`` seconds
  (bench.kamailio_reference.max_sustained_rate: doubling, then bisection, a fresh cluster
  per step); INVITE(SDP)-200-ACK-BYE-200, the room ending with the BYE.
- Rooms carried: N calls at ``--room-rate`` calls/s that all stay up (one room each) for
  ``--hold`` seconds after the last is placed; N doubles from ``--rooms-from`` until a step
  fails, then ``--rooms-bisect`` steps narrow the bracket. A step counts when every call
  succeeded *and* all N rooms were pinned in Kamailio at once (read over JSON-RPC during
  the hold). Each node's CPU during the hold is given as
  a share of one core: a node at ~100 % is the limit (one Python process uses one core).

Both for 1 and 2 nodes in the same round; figures are medians over rounds, and the 2-node
figure is also given as a ratio of the 1-node one. SIPp, Kamailio and the nodes share the
machine's cores (2 here), so the ratio says what a second node buys on the same machine,
not on a second one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.kamailio_reference import Target, TargetFactory, max_sustained_rate
from bench.procstat import cpu_seconds, load_average, process_tree
from control.kamailio import parse_dispatcher_list, parse_htable_dump
from tests.peers.chorus import ChorusProcess
from tests.peers.kamailio import KamailioProcess
from tests.peers.sipp import SippResult, run_sipp

SCENARIO = Path(__file__).resolve().parent / "sipp" / "uac_room_per_call.xml"
EDGE = {"WITH_DS_PING": True, "DS_PING_INTERVAL": 5}


@dataclass
class ClusterUnderTest:
    edge: KamailioProcess
    nodes: list[ChorusProcess]

    @property
    def target(self) -> Target:
        assert self.edge.pid is not None
        processes = {"kamailio": self.edge.pid}
        for index, node in enumerate(self.nodes):
            assert node.process is not None
            processes[f"chorus{index + 1}"] = node.process.pid
        return Target(self.edge.sip_address, processes)

    def pin_count(self) -> int:
        try:
            return len(parse_htable_dump(self.edge.rpc_call("htable.dump", "rooms", timeout=10)))
        except (OSError, ValueError):
            return -1

    def registered(self) -> bool:
        try:
            targets = parse_dispatcher_list(self.edge.rpc_call("dispatcher.list"))
        except (OSError, ValueError):
            return False
        return len([t for t in targets if t.active]) == len(self.nodes)


@contextlib.contextmanager
def cluster(nodes: int) -> Iterator[ClusterUnderTest]:
    with KamailioProcess([], shm_mb=1024, defines=EDGE) as edge:
        started: list[ChorusProcess] = []
        try:
            for _ in range(nodes):
                node = ChorusProcess(
                    {
                        "server": {"log_level": "WARNING", "trace_sip": False},
                        "cluster": {"kamailio_rpc": edge.rpc_url, "drain_timeout": 0},
                        "conference": {"max_rooms": 5000},
                        "rtp": {"timeout": 600},
                    }
                )
                started.append(node.start())
            under_test = ClusterUnderTest(edge, started)
            deadline = time.monotonic() + 20
            while not under_test.registered():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nodes not registered: {edge.log()[-2000:]}")
                time.sleep(0.1)
            yield under_test
        finally:
            for node in started:
                node.stop()


def target_factory(nodes: int) -> TargetFactory:
    @contextlib.contextmanager
    def factory() -> Iterator[Target]:
        with cluster(nodes) as under_test:
            yield under_test.target

    return factory


def rooms_step(nodes: int, rooms: int, *, rate: float, hold: float) -> dict[str, Any]:
    """`rooms` calls, one room each, all up for `hold` s after the last; pins read meanwhile."""
    ramp = rooms / rate
    with cluster(nodes) as under_test:
        outcome: list[SippResult] = []
        sipp = threading.Thread(
            target=lambda: outcome.append(
                run_sipp(
                    SCENARIO,
                    under_test.edge.sip_address,
                    calls=rooms,
                    rate=rate,
                    service="bench-room",
                    pause_ms=int((ramp + hold) * 1000),
                    max_concurrent=rooms + 10,
                    timeout=ramp * 2 + hold + 60,
                )
            )
        )
        sipp.start()
        time.sleep(ramp + 1.0)
        trees = {name: process_tree(pid) for name, pid in under_test.target.processes.items()}
        before = {name: cpu_seconds(tree) for name, tree in trees.items()}
        started = time.monotonic()
        peak = 0
        while time.monotonic() - started < hold - 1.5:
            peak = max(peak, under_test.pin_count())
            time.sleep(0.5)
        window = time.monotonic() - started
        share = {
            name: round((cpu_seconds(tree) - before[name]) / window, 2)
            for name, tree in trees.items()
        }
        load = load_average()
        sipp.join()
    result = outcome[0] if outcome else None
    stats = result.stats if result else None
    successful = stats.successful if stats else 0
    carried = bool(result and result.ok and successful == rooms and peak == rooms)
    return {
        "nodes": nodes,
        "rooms": rooms,
        "successful": successful,
        "failed": stats.failed if stats else rooms,
        "peak_pins": peak,
        "carried": carried,
        "cpu_share_of_one_core_during_hold": share,
        "load_average": load,
    }


def rooms_carried(
    nodes: int,
    *,
    start: int,
    cap: int,
    rate: float,
    hold: float,
    bisect: int,
    log: Callable[[str], None],
) -> tuple[int, list[dict[str, Any]]]:
    """Double from `start` until a step fails (or `cap`), then `bisect` steps in between."""
    steps: list[dict[str, Any]] = []

    def carried(rooms: int) -> bool:
        step = rooms_step(nodes, rooms, rate=rate, hold=hold)
        steps.append(step)
        log(json.dumps(step))
        return bool(step["carried"])

    best, failed, rooms = 0, None, start
    while rooms <= cap:
        if not carried(rooms):
            failed = rooms
            break
        best = rooms
        rooms *= 2
    for _ in range(bisect if failed is not None else 0):
        middle = (best + failed) // 2 if failed is not None else best
        if middle in (best, failed):
            break
        if carried(middle):
            best = middle
        else:
            failed = middle
    return best, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per rate step")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--rooms-from", type=int, default=100)
    parser.add_argument("--rooms-cap", type=int, default=1600)
    parser.add_argument("--room-rate", type=float, default=100.0)
    parser.add_argument("--hold", type=float, default=8.0)
    parser.add_argument("--rooms-bisect", type=int, default=2, help="steps after the bracket")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.monotonic()
    rates: dict[int, list[float]] = {1: [], 2: []}
    rooms: dict[int, list[int]] = {1: [], 2: []}
    rate_steps: dict[int, list[Any]] = {1: [], 2: []}
    room_steps: dict[int, list[Any]] = {1: [], 2: []}
    for round_index in range(args.rounds):
        for nodes in (1, 2):
            log(f"round {round_index + 1}: {nodes} node(s), call rate")
            search = max_sustained_rate(
                target_factory(nodes),
                scenario=str(SCENARIO),
                service="bench-rate",
                start_rate=100.0,
                duration=args.duration,
                max_steps=args.max_steps,
                log=log,
            )
            rates[nodes].append(search.max_rate)
            rate_steps[nodes].append(search.to_json()["steps"])
            log(f"round {round_index + 1}: {nodes} node(s), rooms carried")
            best, steps = rooms_carried(
                nodes,
                start=args.rooms_from,
                cap=args.rooms_cap,
                rate=args.room_rate,
                hold=args.hold,
                bisect=args.rooms_bisect,
                log=log,
            )
            rooms[nodes].append(best)
            room_steps[nodes].append(steps)
    median_rate = {n: statistics.median(v) for n, v in rates.items()}
    median_rooms = {n: statistics.median(v) for n, v in rooms.items()}
    report = {
        "benchmark": "cluster_rate",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "command": " ".join(["python -m bench.cluster_rate", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "what": "Chorus nodes behind Kamailio, one room per call, pins over JSON-RPC",
        "rate_step_seconds": args.duration,
        "room_rate": args.room_rate,
        "hold_seconds": args.hold,
        "rooms_cap": args.rooms_cap,
        "calls_per_second": {"rounds": rates, "median": median_rate},
        "rooms_carried": {"rounds": rooms, "median": median_rooms},
        "two_to_one_node": {
            "calls_per_second": round(median_rate[2] / median_rate[1], 2)
            if median_rate[1]
            else None,
            "rooms_carried": round(median_rooms[2] / median_rooms[1], 2)
            if median_rooms[1]
            else None,
        },
        "rate_steps": rate_steps,
        "room_steps": room_steps,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
