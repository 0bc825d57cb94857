"""MUC fan-out (issue 12): a conference room with 50 XMPP occupants and 50 SIP chat
participants; deliveries per second and CPU-seconds per 1,000 deliveries, both ways.

A real Prosody (deploy/prosody rendered for free ports, tests/peers/prosody.py) and a real
`chorus serve` whose gateway serves the MUC domain as its component; every participant in
this process: the SIP ones are tests/peers/chatclient.py clients (INVITE with MSRP chat over
TCP, one MSRP connection each), the XMPP ones slixmpp clients of Prosody over STARTTLS that
join ``room@conference.xmpp.localhost``. Steps:

- SIP sender: one SIP participant sends ``--messages`` CPIM messages; the 49 other SIP
  participants and the 50 XMPP occupants must each receive every one (99 receivers).
- XMPP sender: one occupant sends as many groupchat messages; the 50 SIP participants and
  the 49 other occupants must each receive every one (its own reflection is not counted).
  Prosody's deployed c2s limit (10 kB/s per client, burst 2 s) paces this sender.
- Reference, in the same run, interleaved run by run: a room of 100 SIP participants, one
  SIP sender, the same messages (bench/chat_fanout.py's step over TCP).

A delivery is one message arriving at one receiver; rate = deliveries over the time from the
first send to the last arrival (polled every 10 ms). CPU: utime + stime of the chorus process
tree and, separately, of Prosody over the same window, per 1,000 deliveries. A step whose
receivers did not get every message fails the benchmark (exit 1), and so must the
self-check: a sender that is no occupant (refused ``not-acceptable``, nothing relayed).

    python -m bench.muc_fanout                    # median of 3 runs, 100 messages a step
    python -m bench.muc_fanout --runs 5 --messages 200 --xmpp 50 --sip 50

Prints one JSON document. Clients, Prosody and the server share this machine's two cores.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree as ET

from slixmpp import JID, ClientXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from bench.chat_fanout import Room, StepFailed, Tally, open_room, send_and_wait, summary, until
from bench.procstat import cpu_seconds, load_average, process_tree
from tests.peers.chorus import ChorusProcess
from tests.peers.prosody import ProsodyProcess, client_ssl_context

MUC_NS = "http://jabber.org/protocol/muc"
TEXT = "the quick brown fox jumps over the lazy dog"


@dataclass
class XmppOccupant:
    """One slixmpp client in the room; the bodies of the groupchat messages it got."""

    xmpp: ClientXMPP
    nick: str
    bodies: list[str] = field(default_factory=list)
    subject: asyncio.Event = field(default_factory=asyncio.Event)
    errors: int = 0

    def count(self, tag: str) -> int:
        return sum(1 for b in self.bodies if b.startswith(tag))


async def occupant(
    prosody: ProsodyProcess, user: str, room_jid: str, *, join: bool = True
) -> XmppOccupant:
    xmpp = ClientXMPP(f"{user}@{prosody.xmpp_domain}/bench", prosody.users[user])
    xmpp.ssl_context = client_ssl_context()
    person = XmppOccupant(xmpp, user)

    def message(stanza: Any) -> None:
        element = stanza.xml
        if element.get("type") == "error":
            person.errors += 1
        if element.find("{jabber:client}subject") is not None:
            person.subject.set()
        body = element.findtext("{jabber:client}body")
        own = (element.get("from") or "").endswith(f"/{user}")
        if body is not None and element.get("type") == "groupchat" and not own:
            person.bodies.append(body)

    xmpp.register_handler(Callback("bench", MatchXPath("{jabber:client}message"), message))
    up = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: up.set())
    xmpp.connect("127.0.0.1", prosody.c2s_port)
    await asyncio.wait_for(up.wait(), 60)
    if join:
        presence = xmpp.make_presence(pto=f"{room_jid}/{user}")
        ET.SubElement(presence.xml, f"{{{MUC_NS}}}x")
        presence.send()
        await asyncio.wait_for(person.subject.wait(), 60)  # the end of the join (§7.2.16)
    return person


@dataclass
class MucRoom:
    room_jid: str
    sip: Room  # sessions[0] is the SIP sender
    xmpp: list[XmppOccupant]  # [0] is the XMPP sender


def _usage(chorus: ChorusProcess, prosody: ProsodyProcess) -> tuple[float, float]:
    server = process_tree(chorus.process.pid if chorus.process else 0)
    return cpu_seconds(server), cpu_seconds([prosody.pid or 0])


async def _step(
    chorus: ChorusProcess,
    prosody: ProsodyProcess,
    send: Any,
    done: Any,
    deliveries: int,
    timeout: float = 600,
) -> dict[str, float]:
    before = _usage(chorus, prosody)
    start = time.perf_counter()
    await send()
    finished = await until(done, timeout=timeout)
    elapsed = time.perf_counter() - start
    if not finished:
        raise StepFailed("not every receiver got every message")
    server, xmpp = (a - b for a, b in zip(_usage(chorus, prosody), before, strict=True))
    return {
        "deliveries": deliveries,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": deliveries / elapsed,
        "cpu_seconds_per_1000_deliveries": server / deliveries * 1000,
        "prosody_cpu_seconds_per_1000_deliveries": xmpp / deliveries * 1000,
        "load_1min": load_average()[0],
    }


async def sip_sends(
    chorus: ChorusProcess, prosody: ProsodyProcess, room: MucRoom, tag: str, messages: int
) -> dict[str, float]:
    tally = Tally(room.sip.receivers, f"{tag} ")

    async def send() -> None:
        for index in range(messages):
            await room.sip.sender.send_raw(room.sip.sender.cpim(f"{tag} {index}: {TEXT}"))

    def done() -> bool:
        sip = min(tally.update()) >= messages
        return sip and all(o.count(f"{tag} ") >= messages for o in room.xmpp)

    receivers = len(room.sip.receivers) + len(room.xmpp)
    return await _step(chorus, prosody, send, done, messages * receivers)


async def xmpp_sends(
    chorus: ChorusProcess, prosody: ProsodyProcess, room: MucRoom, tag: str, messages: int
) -> dict[str, float]:
    sender, others = room.xmpp[0], room.xmpp[1:]
    tally = Tally(room.sip.sessions, f"{tag} ")

    async def send() -> None:
        for index in range(messages):
            sender.xmpp.send_message(
                mto=JID(room.room_jid), mbody=f"{tag} {index}: {TEXT}", mtype="groupchat"
            )
            await asyncio.sleep(0)

    def done() -> bool:
        sip = min(tally.update()) >= messages
        return sip and all(o.count(f"{tag} ") >= messages for o in others)

    receivers = len(room.sip.sessions) + len(others)
    return await _step(chorus, prosody, send, done, messages * receivers)


async def open_muc_room(
    stack: contextlib.AsyncExitStack,
    chorus: ChorusProcess,
    prosody: ProsodyProcess,
    name: str,
    sip: int,
    xmpp: int,
) -> MucRoom:
    room = await open_room(stack, chorus, name, sip, secure=False)
    room_jid = f"{name}@{prosody.muc_domain}"
    occupants = []
    for index in range(xmpp):
        person = await occupant(prosody, f"x{index}", room_jid)
        stack.callback(person.xmpp.disconnect)
        occupants.append(person)
    muc = MucRoom(room_jid, room, occupants)
    await sip_sends(chorus, prosody, muc, f"{name}-warm-up", 1)  # every path is up
    return muc


async def self_check(chorus: ChorusProcess, prosody: ProsodyProcess) -> bool:
    """A sender that is no occupant is refused: the step must fail."""
    async with contextlib.AsyncExitStack() as stack:
        room = await open_muc_room(stack, chorus, prosody, "selfcheck", 2, 1)
        outsider = await occupant(prosody, "outsider", room.room_jid, join=False)
        stack.callback(outsider.xmpp.disconnect)
        fake = MucRoom(room.room_jid, room.sip, [outsider, *room.xmpp])
        try:
            await asyncio.wait_for(xmpp_sends(chorus, prosody, fake, "nobody", 5), 20)
        except (StepFailed, TimeoutError):
            return outsider.errors >= 1
    return False


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    users = {f"x{i}": f"x{i}-password" for i in range(args.xmpp)} | {"outsider": "o-password"}
    prosody = ProsodyProcess(users=users)
    prosody.env["CHORUS_PROSODY_LOG_LEVEL"] = "warn"
    prosody.start()
    size = args.sip + args.xmpp
    overrides = {
        "conference": {
            "chat_rate": 1_000_000.0,
            "chat_burst": 1_000_000,
            "history_messages": 0,
            "max_participants": size + 10,
        },
        "server": {"log_level": "WARNING"},
        "xmpp": {
            "component_jid": prosody.component_jid,
            "component_secret": prosody.component_secret,
            "server": f"127.0.0.1:{prosody.component_port}",
            "xmpp_domains": [prosody.xmpp_domain],
            "muc_domain": prosody.muc_domain,
            "muc_secret": prosody.muc_secret,
            "conference_domain": "127.0.0.1",
        },
    }
    chorus = ChorusProcess(overrides).start()
    try:
        results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
        await asyncio.sleep(2)  # the MUC component's first connection
        results["self_check_no_input_step_failed"] = await self_check(chorus, prosody)
        if not results["self_check_no_input_step_failed"]:
            raise StepFailed("the self-check step (nothing relayed) did not fail")
        measured: dict[str, list[dict[str, float]]] = {"sip": [], "xmpp": [], "reference": []}
        async with contextlib.AsyncExitStack() as stack:
            muc = await open_muc_room(stack, chorus, prosody, "muc", args.sip, args.xmpp)
            reference = await open_room(stack, chorus, "reference", size, secure=False)
            for run in range(args.runs):
                measured["sip"].append(
                    await sip_sends(chorus, prosody, muc, f"sip-run{run}", args.messages)
                )
                measured["xmpp"].append(
                    await xmpp_sends(chorus, prosody, muc, f"xmpp-run{run}", args.messages)
                )
                reference_run = await send_and_wait_run(chorus, prosody, reference, run, args)
                measured["reference"].append(reference_run)
        if not chorus.alive:
            raise RuntimeError("chorus died during the benchmark")
        out = {label: summary(runs) for label, runs in measured.items()}
        for label in ("sip", "xmpp"):
            out[label]["median_prosody_cpu_seconds_per_1000_deliveries"] = round(
                statistics.median(
                    r["prosody_cpu_seconds_per_1000_deliveries"] for r in measured[label]
                ),
                3,
            )
        reference_rate = out["reference"]["median_deliveries_per_second"]
        results |= {
            "room": {"sip_participants": args.sip, "xmpp_occupants": args.xmpp},
            "messages_per_step": args.messages,
            "sip_sender": out["sip"],
            "xmpp_sender": out["xmpp"],
            "reference_sip_only_room": out["reference"],
            "ratio_sip_sender_to_reference": round(
                out["sip"]["median_deliveries_per_second"] / reference_rate, 3
            ),
            "ratio_xmpp_sender_to_reference": round(
                out["xmpp"]["median_deliveries_per_second"] / reference_rate, 3
            ),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        return results
    finally:
        chorus.stop()
        prosody.cleanup()


async def send_and_wait_run(
    chorus: ChorusProcess, prosody: ProsodyProcess, room: Room, run: int, args: argparse.Namespace
) -> dict[str, float]:
    """The reference: the all-SIP room's sender, the same messages (chat_fanout's step)."""
    before = _usage(chorus, prosody)
    elapsed = await send_and_wait(room, f"ref-run{run}", args.messages, timeout=600)
    server = _usage(chorus, prosody)[0] - before[0]
    deliveries = args.messages * len(room.receivers)
    return {
        "deliveries": deliveries,
        "seconds": round(elapsed, 3),
        "deliveries_per_second": deliveries / elapsed,
        "cpu_seconds_per_1000_deliveries": server / deliveries * 1000,
        "load_1min": load_average()[0],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=100, help="per step")
    parser.add_argument("--sip", type=int, default=50, help="SIP chat participants")
    parser.add_argument("--xmpp", type=int, default=50, help="XMPP occupants")
    args = parser.parse_args(argv)
    try:
        results = asyncio.run(measure(args))
    except StepFailed as exc:
        print(json.dumps({"benchmark": "muc_fanout", "failed": str(exc)}, indent=2))
        return 1
    document = {
        "benchmark": "muc_fanout",
        "transport": "MUC (XEP-0045) through Prosody and the Chorus component + MSRP over TCP",
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **results,
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
