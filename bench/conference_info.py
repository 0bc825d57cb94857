"""Conference information (RFC 4575): time from one join to the last NOTIFY body of a room with
500 subscribers, and the size of a partial document against the full one in a room of 100.

Measured on the sans-IO core the application drives (control/conference/infosubs.py, with a
real Room, ChatCore and the document renderer; SIP sessions are tests/peers/confinfo.py's
stand-ins): a participant joins, the room's RoomInfo is told, and its timer's batch is taken —
one snapshot, one partial render shared by the subscribers in step, 500 versioned bodies. The
clock stops when the 500th body exists; putting them on the wire is the UA's cost, not this.

Reference, measured in the same run, interleaved: what SylkServer does on a change, a full
document rendered for each of the 500 subscribers. The ratio is reference over ours.

Sizes: a room of 100 participants (audio + chat, nicknames, 10 files); the partial document one
join sends against the full document a new subscriber gets; ratio full over partial.

Live (unless ``--no-live``): a real `chorus serve` ([conference] info_interval 0), alice in
the room, ``--subscribers`` SIPp watchers (tests/sipp/uac_subscribe_conference.xml, all from
one address, so [sip] max_subscriptions_per_source is raised) each subscribed; then a newcomer
joins (tests/peers/chatclient.py). The figure is from the newcomer's INVITE to the last NOTIFY
naming the newcomer that a watcher received first (its join; SIPp's -trace_msg timestamps,
the same clock).
Reference in the same run, interleaved: the same with one watcher. Ratio many : one.

A step whose batch does not hold one body per subscriber naming the new participant, or
whose partial document is missing, or a live step where a watcher got no NOTIFY naming the
newcomer, fails the benchmark (exit 1).

    python -m bench.conference_info               # median of 5 runs
    python -m bench.conference_info --runs 3 --subscribers 500 --room 100

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from bench.procstat import load_average
from control.conference.chat import ChatSessionId
from control.conference.info import render_full, with_version
from control.conference.infosubs import RoomInfo
from control.streams import MediaKind
from tests.peers.chatclient import ChatClient
from tests.peers.chorus import ChorusProcess
from tests.peers.confinfo import Files, World, world
from tests.peers.sipp import run_sipp_async
from tests.peers.wait import wait_until


class StepFailed(Exception):
    """A batch without one body per subscriber, or a missing partial document."""


def _room(size: int) -> World:
    w = world()
    w.room.max_participants = max(size * 2, 100)
    for i in range(size):
        p = w.join(f"user{i}", f"User {i}", (MediaKind.AUDIO, MediaKind.CHAT))
        w.chat.core.set_nickname(ChatSessionId(f"s-{p.id}"), f"nick{i}", datetime.now(UTC))
    for i in range(10):
        w.files.append(
            Files(f"file{i}.pdf", f"{i:040x}", 1000 * i, f"User {i} <sip:user{i}@example.com>")
        )
    return w


def join_to_last_notify(subscribers: int, room: int) -> tuple[float, float]:
    """Seconds from the join to the last body (ours), and for full documents (reference)."""
    w = _room(room)
    info = RoomInfo(w.snapshot, min_interval=0.0, max_subscriptions=subscribers)
    for key in range(subscribers):
        info.subscribe(key, now=0.0)
    started = time.perf_counter()
    w.join("newcomer", "New Comer", (MediaKind.AUDIO, MediaKind.CHAT))
    info.changed(1.0)
    bodies = info.handle_timer(1.0)
    ours = time.perf_counter() - started
    if len(bodies) != subscribers or not all(b"sip:newcomer@example.com" in b for _, b in bodies):
        raise StepFailed(f"{len(bodies)} bodies for {subscribers} subscribers")
    started = time.perf_counter()
    w.join("another", "Another", (MediaKind.AUDIO, MediaKind.CHAT))
    snap = w.snapshot()
    full = [with_version(render_full(snap), 3) for _ in range(subscribers)]
    reference = time.perf_counter() - started
    if len(full) != subscribers or b"sip:another@example.com" not in full[-1]:
        raise StepFailed("reference batch incomplete")
    return ours, reference


def sizes(room: int) -> tuple[int, int]:
    w = _room(room)
    info = RoomInfo(w.snapshot, min_interval=0.0)
    full = info.subscribe("sub", now=0.0)
    w.join("newcomer", "New Comer", (MediaKind.AUDIO, MediaKind.CHAT))
    info.changed(1.0)
    batch = info.handle_timer(1.0)
    if len(batch) != 1 or b'state="partial"' not in batch[0][1]:
        raise StepFailed("no partial document after a join")
    return len(batch[0][1]), len(full)


_STAMP = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n", re.M)


def _newcomer_notifies(trace: str) -> list[tuple[float, str]]:
    """(POSIX time, Call-ID) of each NOTIFY received that names the newcomer."""
    out = []
    parts = _STAMP.split(trace)
    for stamp, block in zip(parts[1::2], parts[2::2], strict=True):
        message = block.partition("\n")[2].strip()
        if not message.startswith("NOTIFY ") or "sip:newcomer@" not in message:
            continue
        call_id = re.search(r"^Call-ID:\s*(\S+)", message, re.M | re.I)
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").astimezone()
        out.append((moment.timestamp(), call_id.group(1) if call_id else ""))
    return out


async def live_join_to_last_notify(subscribers: int) -> float:
    overrides = {
        "conference": {"info_interval": 0.0, "info_max_subscriptions": subscribers + 10},
        "sip": {"max_subscriptions_per_source": subscribers + 10},
    }
    with ChorusProcess(overrides) as chorus:
        async with (
            ChatClient("alice", "Alice") as alice_client,
            ChatClient("newcomer") as newcomer_client,
        ):
            alice = await alice_client.join(chorus, "watched", secure=False)
            watchers = asyncio.create_task(
                run_sipp_async(
                    "uac_subscribe_conference",
                    f"127.0.0.1:{chorus.sip_port}",
                    service="watched",
                    calls=subscribers,
                    rate=200,
                    max_concurrent=subscribers,
                    trace_messages=True,
                    timeout=300,
                )
            )
            last = f"conference-info subscription to watched@127.0.0.1 ({subscribers})"
            if not await wait_until(lambda: last in chorus.log(), timeout=120):
                watchers.cancel()
                raise StepFailed(f"{subscribers} watchers never all subscribed")
            started = time.time()
            newcomer = await newcomer_client.join(chorus, "watched", secure=False)
            await asyncio.sleep(2.0)  # the NOTIFYs go out; their times come from the trace
            await newcomer.leave()
            await alice.leave()
            result = await watchers
    first: dict[str, float] = {}  # per watcher, the NOTIFY of the join (a later one: the leave)
    for moment, call_id in _newcomer_notifies(result.messages):
        first.setdefault(call_id, moment)
    if len(first) < subscribers:
        raise StepFailed(f"{len(first)} of {subscribers} watchers heard of the newcomer")
    return max(first.values()) - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--room", type=int, default=100, help="participants in the sized room")
    parser.add_argument(
        "--notify-room", type=int, default=20, help="participants in the timed room"
    )
    parser.add_argument("--no-live", action="store_true", help="skip the chorus serve + SIPp step")
    args = parser.parse_args(argv)
    if args.runs < 3:
        parser.error("--runs must be at least 3 (a median of three or more)")
    ours: list[float] = []
    reference: list[float] = []
    try:
        for _ in range(args.runs):
            a, b = join_to_last_notify(args.subscribers, args.notify_room)
            ours.append(a)
            reference.append(b)
        partial, full = sizes(args.room)
        live: list[float] = []
        live_one: list[float] = []
        for _ in range(0 if args.no_live else args.runs):
            live.append(asyncio.run(live_join_to_last_notify(args.subscribers)))
            live_one.append(asyncio.run(live_join_to_last_notify(1)))
    except StepFailed as exc:
        print(json.dumps({"failed": str(exc)}))
        return 1
    med_ours, med_ref = statistics.median(ours), statistics.median(reference)
    result: dict[str, Any] = {
        "benchmark": "conference_info",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "load_average": load_average(),
        "subscribers": args.subscribers,
        "notify_room": args.notify_room,
        "join_to_last_notify_s": ours,
        "join_to_last_notify_median_s": med_ours,
        "reference_full_documents_s": reference,
        "reference_median_s": med_ref,
        "speedup_over_full_documents": med_ref / med_ours,
        "live_join_to_last_notify_s": live,
        "live_median_s": statistics.median(live) if live else None,
        "live_one_watcher_s": live_one,
        "live_one_median_s": statistics.median(live_one) if live_one else None,
        "live_ratio": statistics.median(live) / statistics.median(live_one) if live else None,
        "sized_room": args.room,
        "partial_bytes": partial,
        "full_bytes": full,
        "full_over_partial": full / partial,
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
