"""Room chat fan-out: deliveries per second in rooms of 10 and 100 chat participants over TLS,
CPU-seconds of the server per 1,000 deliveries, and history replay time for 1,000 messages.

A real `chorus serve` (conference application, [conference] chat_rate/chat_burst set out of
the way) and the participants in this process (tests/peers/chatclient.py: each one a SIP
identity with its own MSRP connection, msrps or msrp). In each room one participant sends
``--messages`` CPIM text messages; every other participant must receive every one of them
(the room relays to all but the sender). A delivery is one message arriving at one receiver;
the rate is deliveries over the time from the first SEND to the last arrival, polled every
10 ms. Server CPU (utime + stime of the chorus process and its children, /proc) over the same
window, per 1,000 deliveries. Joins, the "joined" notices and a warm-up message that every
receiver must see come before the clock starts.

Reference, measured in the same run, interleaved run by run: the same room over plain TCP
(msrp:); the ratio is TLS over TCP. History: a room with ``history_messages = 1000``, 1,000
messages sent, then a new participant joins; the time from its INVITE to its 1,000th replayed
message (each marked ``chorus.History: yes``, checked). Its reference is the same 1,000
messages delivered live to one receiver while they were sent.

A step whose receivers did not get every message fails the benchmark (exit 1): so does the
self-check step, which sends with a CPIM From that is not the sender's (refused 403, nothing
relayed) and must come out as failed.

    python -m bench.chat_fanout                   # median of 3 runs
    python -m bench.chat_fanout --runs 5 --messages 2000

Prints one JSON document. Clients and server share this machine's two cores, so the figures
are a floor for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench.procstat import cpu_seconds, load_average, process_tree
from control.msrp import CpimAddress
from tests.peers.chatclient import ChatClient, ChatSession
from tests.peers.chorus import ChorusProcess

HISTORY = 1000
POLL = 0.01  # seconds between checks of the receivers' counts


class StepFailed(Exception):
    """A step's receivers did not get what was sent."""


@dataclass
class Room:
    name: str
    secure: bool
    clients: list[ChatClient]
    sessions: list[ChatSession]

    @property
    def sender(self) -> ChatSession:
        return self.sessions[0]

    @property
    def receivers(self) -> list[ChatSession]:
        return self.sessions[1:]


async def until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL)
    return True


class Tally:
    """How many messages starting with ``tag`` each receiver has, counted incrementally
    (a poll looks only at what arrived since the previous one)."""

    def __init__(self, receivers: list[ChatSession], tag: str) -> None:
        self.receivers = receivers
        self.tag = tag
        self.seen = [len(r.received) for r in receivers]
        self.counts = [0] * len(receivers)

    def update(self) -> list[int]:
        for index, receiver in enumerate(self.receivers):
            fresh = receiver.received[self.seen[index] :]
            self.seen[index] += len(fresh)
            self.counts[index] += sum(1 for d in fresh if d.text.startswith(self.tag))
        return self.counts


async def open_room(
    stack: contextlib.AsyncExitStack, chorus: ChorusProcess, name: str, size: int, secure: bool
) -> Room:
    clients, sessions = [], []
    for index in range(size):
        client = await stack.enter_async_context(ChatClient(f"{name}-p{index}", f"P{index}"))
        clients.append(client)
        sessions.append(await client.join(chorus, name, secure=secure))
    room = Room(name, secure, clients, sessions)
    await send_and_wait(room, f"{name} warm-up", 1, timeout=120)
    return room


async def send_and_wait(
    room: Room, tag: str, messages: int, *, timeout: float, spoof: bool = False
) -> float:
    """Send ``messages`` from the room's sender; seconds until every receiver has them all."""
    sender = room.sender
    impostor = CpimAddress(f"sip:nobody-{room.name}@127.0.0.1")
    tally = Tally(room.receivers, f"{tag} ")
    start = time.perf_counter()
    for index in range(messages):
        text = f"{tag} {index}: the quick brown fox jumps over the lazy dog"
        body = sender.cpim(text, sender=impostor if spoof else None)
        await sender.send_raw(body)
    done = await until(lambda: min(tally.update()) >= messages, timeout=timeout)
    elapsed = time.perf_counter() - start
    if not done:
        got = sorted(tally.update())
        raise StepFailed(
            f"{room.name}: receivers got {got[0]}..{got[-1]} of {messages} messages '{tag}'"
        )
    return elapsed


async def fanout_run(
    chorus: ChorusProcess, room: Room, tag: str, messages: int
) -> dict[str, float]:
    pids = process_tree(chorus.process.pid if chorus.process else 0)
    cpu_before = cpu_seconds(pids)
    elapsed = await send_and_wait(room, tag, messages, timeout=300)
    cpu = cpu_seconds(process_tree(pids[0])) - cpu_before
    deliveries = messages * len(room.receivers)
    return {
        "deliveries": deliveries,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": deliveries / elapsed,
        "cpu_seconds_per_1000_deliveries": cpu / deliveries * 1000,
        "load_1min": load_average()[0],
    }


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    rates = [r["deliveries_per_second"] for r in runs]
    cpu = [r["cpu_seconds_per_1000_deliveries"] for r in runs]
    return {
        "runs_deliveries_per_second": [round(x) for x in rates],
        "median_deliveries_per_second": round(statistics.median(rates)),
        "runs_cpu_seconds_per_1000_deliveries": [round(x, 3) for x in cpu],
        "median_cpu_seconds_per_1000_deliveries": round(statistics.median(cpu), 3),
        "deliveries_per_run": int(runs[0]["deliveries"]),
        "load_1min": [r["load_1min"] for r in runs],
    }


async def fanout(
    chorus: ChorusProcess, sizes: list[int], runs: int, messages: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for size in sizes:
        per_run = max(1, messages * 9 // (size - 1))  # about the same deliveries per size
        async with contextlib.AsyncExitStack() as stack:
            tls = await open_room(stack, chorus, f"tls{size}", size, secure=True)
            tcp = await open_room(stack, chorus, f"tcp{size}", size, secure=False)
            measured: dict[str, list[dict[str, float]]] = {"tls": [], "tcp": []}
            for run in range(runs):
                for label, room in (("tls", tls), ("tcp", tcp)):
                    measured[label].append(
                        await fanout_run(chorus, room, f"{label}-run{run}", per_run)
                    )
        tls_summary, tcp_summary = summary(measured["tls"]), summary(measured["tcp"])
        results[f"room_of_{size}"] = {
            "participants": size,
            "messages_per_run": per_run,
            "tls": tls_summary,
            "tcp_reference": tcp_summary,
            "ratio_tls_to_tcp": round(
                tls_summary["median_deliveries_per_second"]
                / tcp_summary["median_deliveries_per_second"],
                3,
            ),
        }
    return results


async def history(chorus: ChorusProcess, runs: int) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as stack:
        room = await open_room(stack, chorus, "history", 2, secure=True)
        live = await send_and_wait(room, "stored", HISTORY, timeout=300)
        replays = []
        for run in range(runs):
            client = await stack.enter_async_context(ChatClient(f"joiner{run}", f"J{run}"))
            start = time.perf_counter()
            joiner = await client.join(chorus, "history", secure=True)

            def replayed(j: ChatSession = joiner) -> int:
                return sum(1 for d in j.received if d.history and d.text.startswith("stored"))

            done = await until(lambda: replayed() >= HISTORY, timeout=300)
            replays.append(time.perf_counter() - start)
            if not done:
                raise StepFailed(f"history: joiner {run} got {replayed()} of {HISTORY}")
            texts = [d.text for d in joiner.received if d.history]
            if [int(t.split()[1].rstrip(":")) for t in texts[-HISTORY:]] != list(range(HISTORY)):
                raise StepFailed("history replayed out of order")
            await joiner.leave()
    median = statistics.median(replays)
    return {
        "messages": HISTORY,
        "runs_replay_seconds": [round(x, 3) for x in replays],
        "median_replay_seconds": round(median, 3),
        "reference_live_delivery_seconds": round(live, 3),
        "ratio_replay_to_live": round(median / live, 3),
    }


async def self_check(chorus: ChorusProcess) -> bool:
    """A step whose sends are all refused (spoofed CPIM From, 403) must fail."""
    async with contextlib.AsyncExitStack() as stack:
        room = await open_room(stack, chorus, "selfcheck", 3, secure=True)
        try:
            await send_and_wait(room, "spoofed", 20, timeout=5, spoof=True)
        except StepFailed:
            return True
    return False


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {
        "conference": {
            "chat_rate": 1_000_000.0,
            "chat_burst": 1_000_000,
            "history_messages": HISTORY,
            "max_participants": max(args.sizes) + 5,
        },
        "server": {"log_level": "WARNING"},
    }
    chorus = ChorusProcess(overrides).start()
    try:
        results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
        results["self_check_no_input_step_failed"] = await self_check(chorus)
        if not results["self_check_no_input_step_failed"]:
            raise StepFailed("the self-check step (nothing relayed) did not fail")
        results["fanout"] = await fanout(chorus, args.sizes, args.runs, args.messages)
        results["history"] = await history(chorus, args.runs)
        if not chorus.alive:
            raise RuntimeError("chorus died during the benchmark")
        results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        return results
    finally:
        chorus.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--messages", type=int, default=5000, help="per run in a room of 10 (scaled by size)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    args = parser.parse_args(argv)
    try:
        results = asyncio.run(measure(args))
    except StepFailed as exc:
        print(json.dumps({"benchmark": "chat_fanout", "failed": str(exc)}, indent=2))
        return 1
    document = {
        "benchmark": "chat_fanout",
        "transport": "MSRP chat in a conference room, CPIM text/plain, one sender per room",
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **results,
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
