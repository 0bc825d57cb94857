"""Messages per second through the SIP↔XMPP gateway, and CPU per 1,000 messages.

A real Prosody (deploy/prosody's config, Debian ``prosody``) and a real ``chorus serve`` whose
gateway is Prosody's XEP-0114 component; in this process a SIP endpoint (Chorus's outbound
proxy: it answers each MESSAGE 200, and sends MESSAGEs to Chorus) and slixmpp clients of
Prosody (c2s with STARTTLS). Three steps, each ``--messages`` messages with at most
``--window`` sent and not yet received:

- ``sip_to_xmpp``: SIP MESSAGE (text/plain) → Chorus (202) → Prosody → bob's client;
- ``xmpp_to_sip``: bob's chat message → Prosody → Chorus → SIP MESSAGE to the endpoint (200);
- ``reference_xmpp_client_to_client``: bob → carol through the same Prosody, no gateway.

A message counts when it reached its recipient (every one must: a step that received fewer
fails); the rate is messages over the time from
the first send to the last arrival. CPU is utime + stime of the Chorus and Prosody process
trees over the step (bench/procstat.py), per 1,000 messages, and this process's own (the
clients: ``bench_clients``). The median of ``--runs`` runs
of each step, steps interleaved within a run; ratios are against the reference of the same
run.

The bench lifts deploy/prosody's c2s rate limit (10 kB/s, about 50 chat messages a second
from one client) in a copy of the config, for the gateway steps and the reference alike:
with it the figures would be Prosody's limit, not the path's. Log levels: Prosody warn,
Chorus WARNING, no SIP trace.

    python -m bench.xmpp_messages                 # 3 runs of 2,000 messages per step
    python -m bench.xmpp_messages --runs 5 --messages 5000 --window 64

Prints one JSON document. Clients, Chorus and Prosody share this machine's two cores (and,
here, other people's work), so the figures are a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slixmpp import ClientXMPP

from bench.procstat import cpu_seconds, load_average, process_tree
from control.sip.message import Request, parse_message
from tests.peers.chorus import ChorusProcess
from tests.peers.prosody import CONFIG, ProsodyProcess, client_ssl_context

C2S_LIMIT = re.compile(r'c2s = \{ rate = "[^"]*"; burst = "[^"]*" \};')
LIFTED = 'c2s = { rate = "100mb/s"; burst = "2s" };'
TEXT = "message {}: the quick brown fox jumps over the lazy dog"
STEP_TIMEOUT = 120.0


class SipSide(asyncio.DatagramProtocol):
    """Chorus's outbound proxy and the SIP users behind it: answers every request 200 (a
    retransmission too, counted once by Call-ID), and retransmits each MESSAGE it sent every
    ``RETRANSMIT`` s until its final response, as a UDP UA does (RFC 3261 Timer E): a
    datagram the loaded machine drops is late, not lost."""

    RETRANSMIT = 0.5

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.on_message: Callable[[], None] = lambda: None
        self.on_response: Callable[[int], None] = lambda _status: None
        self.seen: set[str] = set()  # Call-IDs of the MESSAGEs we got
        self.unanswered: dict[str, tuple[bytes, tuple[str, int], float]] = {}
        self.retransmissions = 0
        self._timer: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._timer = asyncio.get_running_loop().create_task(self._retransmit())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()

    async def _retransmit(self) -> None:
        while True:
            await asyncio.sleep(self.RETRANSMIT / 2)
            now = time.monotonic()
            for call_id, (data, addr, sent) in list(self.unanswered.items()):
                if now - sent >= self.RETRANSMIT and self.transport is not None:
                    self.transport.sendto(data, addr)
                    self.unanswered[call_id] = (data, addr, now)
                    self.retransmissions += 1

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        message = parse_message(data)
        call_id = message.headers.get("Call-ID") or ""
        if not isinstance(message, Request):
            status = message.status  # type: ignore[attr-defined]
            if status >= 200 and self.unanswered.pop(call_id, None) is not None:
                self.on_response(status)
            return
        head = ["SIP/2.0 200 OK"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            head += [f"{name}: {value}" for value in message.headers.get_all(name)]
        if "tag=" not in (message.headers.get("To") or ""):
            head[-2] += ";tag=b1"
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)
        if message.method == "MESSAGE" and call_id not in self.seen:
            self.seen.add(call_id)
            self.on_message()

    def send_message(self, port: int, to: str, from_: str, text: str) -> None:
        assert self.transport is not None
        local = self.transport.get_extra_info("sockname")[1]
        body = text.encode()
        call_id = uuid.uuid4().hex
        lines = [
            f"MESSAGE {to} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK{uuid.uuid4().hex}",
            "Max-Forwards: 70",
            f"From: <{from_}>;tag={uuid.uuid4().hex[:8]}",
            f"To: <{to}>",
            f"Call-ID: {call_id}",
            "CSeq: 1 MESSAGE",
            "Content-Type: text/plain",
            f"Content-Length: {len(body)}",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        addr = ("127.0.0.1", port)
        self.unanswered[call_id] = (data, addr, time.monotonic())
        self.transport.sendto(data, addr)


async def xmpp_client(prosody: ProsodyProcess, user: str) -> ClientXMPP:
    xmpp = ClientXMPP(f"{user}@{prosody.xmpp_domain}/bench", prosody.users[user])
    xmpp.ssl_context = client_ssl_context()
    up = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: (xmpp.send_presence(), up.set()))
    xmpp.connect("127.0.0.1", prosody.c2s_port)
    await asyncio.wait_for(up.wait(), 30)
    return xmpp


class Counter:
    """Arrivals of one step: releases the window's credit, ends the step at ``count``."""

    def __init__(self, count: int, window: int) -> None:
        self.count = count
        self.received = 0
        self.credit = asyncio.Semaphore(window)
        self.done = asyncio.Event()
        self.last = 0.0

    def arrived(self) -> None:
        self.received += 1
        self.last = time.perf_counter()
        self.credit.release()
        if self.received >= self.count:
            self.done.set()


async def step(
    name: str,
    counter: Counter,
    send: Callable[[int], None],
    pids: dict[str, int],
) -> dict[str, Any]:
    """Send ``counter.count`` messages within the window; rate and CPU of the step."""
    trees = {who: process_tree(pid) for who, pid in pids.items()}
    cpu_before = {who: cpu_seconds(tree) for who, tree in trees.items()}
    clients_before = time.process_time()  # this process: the SIP endpoint and XMPP clients
    start = time.perf_counter()
    for index in range(counter.count):
        await counter.credit.acquire()
        send(index)
    try:
        await asyncio.wait_for(counter.done.wait(), STEP_TIMEOUT)
    except TimeoutError:
        pass
    if counter.received < counter.count:
        raise RuntimeError(f"{name}: {counter.received} of {counter.count} messages received")
    elapsed = counter.last - start
    cpu = {who: cpu_seconds(tree) - cpu_before[who] for who, tree in trees.items()}
    cpu["bench_clients"] = time.process_time() - clients_before
    per_1000 = {who: round(seconds * 1000 / counter.count, 3) for who, seconds in cpu.items()}
    return {
        "messages_per_second": counter.count / elapsed,
        "cpu_seconds_per_1000": per_1000,
    }


async def one_run(
    prosody: ProsodyProcess,
    chorus: ChorusProcess,
    sip: SipSide,
    bob: ClientXMPP,
    carol: ClientXMPP,
    messages: int,
    window: int,
) -> dict[str, dict[str, Any]]:
    assert prosody.pid is not None and chorus.process is not None
    pids = {"chorus": chorus.process.pid, "prosody": prosody.pid}
    alice_sip = f"sip:alice@{prosody.component_jid}"
    bob_sip = f"sip:bob@{prosody.xmpp_domain}"
    alice_jid = f"alice@{prosody.component_jid}"
    carol_jid = f"carol@{prosody.xmpp_domain}"
    results: dict[str, dict[str, Any]] = {}

    def arrivals(client: ClientXMPP, counter: Counter) -> Callable[[], None]:
        def got(message: Any) -> None:
            if message["type"] == "chat" and message["body"]:
                counter.arrived()

        client.add_event_handler("message", got)
        return lambda: client.del_event_handler("message", got)

    # SIP -> XMPP
    counter = Counter(messages, window)
    accepted: list[int] = []
    sip.on_response = accepted.append
    detach = arrivals(bob, counter)
    retransmitted = sip.retransmissions
    try:
        results["sip_to_xmpp"] = await step(
            "sip_to_xmpp",
            counter,
            lambda i: sip.send_message(chorus.sip_port, bob_sip, alice_sip, TEXT.format(i)),
            pids,
        )
    finally:
        detach()
        if accepted.count(202) != messages:
            raise RuntimeError(f"sip_to_xmpp: {accepted.count(202)} of {messages} answered 202")
    results["sip_to_xmpp"]["sip_retransmissions"] = sip.retransmissions - retransmitted

    # XMPP -> SIP
    counter = Counter(messages, window)
    sip.on_message = counter.arrived
    results["xmpp_to_sip"] = await step(
        "xmpp_to_sip",
        counter,
        lambda i: bob.send_message(mto=alice_jid, mbody=TEXT.format(i), mtype="chat"),
        pids,
    )
    sip.on_message = lambda: None

    # reference: XMPP client -> client through the same Prosody
    counter = Counter(messages, window)
    detach = arrivals(carol, counter)
    results["reference_xmpp_client_to_client"] = await step(
        "reference",
        counter,
        lambda i: bob.send_message(mto=carol_jid, mbody=TEXT.format(i), mtype="chat"),
        pids,
    )
    detach()
    return results


async def warm_up(sip: SipSide, chorus: ChorusProcess, prosody: ProsodyProcess, bob: Any) -> None:
    """One message through the gateway before the clock: the component is connected."""
    got = asyncio.Event()
    bob.add_event_handler("message", lambda _m: got.set())
    deadline = time.monotonic() + 60
    while not got.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError(f"no message through the gateway:\n{chorus.log()}")
        sip.send_message(
            chorus.sip_port,
            f"sip:bob@{prosody.xmpp_domain}",
            f"sip:alice@{prosody.component_jid}",
            "warm-up",
        )
        try:
            await asyncio.wait_for(got.wait(), 2)
        except TimeoutError:
            continue


async def measure(runs: int, messages: int, window: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="chorus-bench-xmpp-"))
    config = workdir / "prosody.cfg.lua"
    text, lifted = C2S_LIMIT.subn(LIFTED, CONFIG.read_text())
    if lifted != 1:
        raise RuntimeError("deploy/prosody's c2s limit line not found: update bench/xmpp_messages")
    config.write_text(text)
    prosody = ProsodyProcess(users={"bob": "bob-pw", "carol": "carol-pw"}, config=config)
    prosody.env["CHORUS_PROSODY_LOG_LEVEL"] = "warn"
    prosody.start()
    loop = asyncio.get_running_loop()
    _, sip = await loop.create_datagram_endpoint(SipSide, local_addr=("127.0.0.1", 0))
    proxy_port = sip.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
    chorus = ChorusProcess(
        {
            "server": {"log_level": "WARNING", "trace_sip": False},
            "sip": {"outbound_proxy": f"sip:127.0.0.1:{proxy_port}"},
            "api": {"enabled": False},
            "xmpp": {
                "component_jid": prosody.component_jid,
                "component_secret": prosody.component_secret,
                "server": f"127.0.0.1:{prosody.component_port}",
                "xmpp_domains": [prosody.xmpp_domain],
            },
        }
    )
    clients: list[ClientXMPP] = []
    try:
        chorus.start()
        bob = await xmpp_client(prosody, "bob")
        carol = await xmpp_client(prosody, "carol")
        clients += [bob, carol]
        await warm_up(sip, chorus, prosody, bob)
        await asyncio.sleep(0.5)  # the warm-up's retries settle before the clock
        per_run = [
            await one_run(prosody, chorus, sip, bob, carol, messages, window) for _ in range(runs)
        ]
        if not chorus.alive:
            raise RuntimeError("chorus died during the benchmark")
        return summarise(per_run)
    finally:
        for xmpp in clients:
            xmpp.disconnect()
        sip.transport.close()  # type: ignore[union-attr]
        chorus.stop()
        prosody.cleanup()


def summarise(per_run: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    steps: dict[str, Any] = {}
    for name in per_run[0]:
        rates = [run[name]["messages_per_second"] for run in per_run]
        cpu = {
            who: statistics.median(run[name]["cpu_seconds_per_1000"][who] for run in per_run)
            for who in per_run[0][name]["cpu_seconds_per_1000"]
        }
        steps[name] = {
            "runs_messages_per_second": [round(r) for r in rates],
            **(
                {"runs_sip_retransmissions": [run[name]["sip_retransmissions"] for run in per_run]}
                if "sip_retransmissions" in per_run[0][name]
                else {}
            ),
            "median_messages_per_second": round(statistics.median(rates)),
            "median_cpu_seconds_per_1000": cpu,
        }
    reference = steps["reference_xmpp_client_to_client"]
    for name in ("sip_to_xmpp", "xmpp_to_sip"):
        ratios = [
            run[name]["messages_per_second"]
            / run["reference_xmpp_client_to_client"]["messages_per_second"]
            for run in per_run
        ]
        steps[name]["median_rate_ratio_to_reference"] = round(statistics.median(ratios), 3)
        spent = steps[name]["median_cpu_seconds_per_1000"]
        both = spent["chorus"] + spent["prosody"]
        steps[name]["cpu_ratio_to_reference_prosody"] = round(
            both / reference["median_cpu_seconds_per_1000"]["prosody"], 2
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=2000, help="per step and run")
    parser.add_argument("--window", type=int, default=32, help="sent and not yet received")
    args = parser.parse_args(argv)
    load_before = load_average()
    results = asyncio.run(measure(args.runs, args.messages, args.window))
    document = {
        "benchmark": "xmpp_messages",
        "path": "SIP MESSAGE <-> Chorus XEP-0114 component <-> Prosody c2s (STARTTLS) <-> slixmpp",
        "messages_per_step": args.messages,
        "window": args.window,
        "runs": args.runs,
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **results,
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
