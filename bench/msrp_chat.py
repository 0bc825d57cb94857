"""Echoed chat messages per second: one TLS connection, and 50 parallel sessions.

A real `chorus serve` (echo application) and a client in this process: SIP INVITE with an
m=message TCP/TLS/MSRP line, then CPIM-wrapped text messages (as Blink sends them) with at most
``--window`` unanswered echoes per session. A message counts when its echo is back; the rate is
messages over the time from the first send to the last echo. Calls are set up before the clock
starts and torn down after it stops.

    python -m bench.msrp_chat                     # median of 5 runs
    python -m bench.msrp_chat --runs 3 --messages 2000

Prints one JSON document. Client and server share this machine's two cores, so the figures
are a floor for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from typing import Any

from control.msrp import CpimAddress, CpimMessage, MessageReceived
from control.msrp.chat import ChatStream
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.session import Session
from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import SipClient, client_tls_context

SENDER = CpimAddress("sip:bench@127.0.0.1", "Bench")
ECHO = CpimAddress("sip:echo@127.0.0.1")


def chat_body(index: int) -> bytes:
    text = f"message {index}: the quick brown fox jumps over the lazy dog".encode()
    return CpimMessage.build(
        content_type="text/plain", body=text, sender=SENDER, recipients=[ECHO]
    ).serialize()


async def open_chat(
    sip: SipClient, chorus: ChorusProcess, msrp: MsrpTransport
) -> tuple[Session, ChatStream]:
    stream = ChatStream(msrp, secure=True)
    body = sdp.serialize(
        sdp.build_offer(
            origin=sdp.Origin("bench", "1", 1, "IN", "IP4", "127.0.0.1"),
            connection=sdp.Connection.for_address("127.0.0.1"),
            media=[stream.offer_media()],
        )
    )
    session, response = await sip.call(
        f"sip:echo@127.0.0.1:{chorus.sip_port}", body, chorus.sip_port
    )
    if session is None:
        raise RuntimeError(f"INVITE answered {response.status}")
    stream.answered(sdp.parse(response.body).media[0])
    await stream.wait_connected(10)
    return session, stream


async def pump(stream: ChatStream, count: int, window: int) -> None:
    """Send ``count`` messages, never more than ``window`` without their echo."""
    credit = asyncio.Semaphore(window)

    async def read() -> None:
        received = 0
        while received < count:
            event = await stream.receive()
            if isinstance(event, MessageReceived):
                received += 1
                credit.release()

    reader = asyncio.create_task(read())
    for index in range(count):
        await credit.acquire()
        await stream.send("message/cpim", chat_body(index))
    await asyncio.wait_for(reader, 120)


async def one_run(chorus: ChorusProcess, sessions: int, messages: int, window: int) -> float:
    msrp = MsrpTransport(share_connections=sessions == 1)
    msrp.ssl_client = client_tls_context()
    async with SipClient("udp") as sip:
        calls = [await open_chat(sip, chorus, msrp) for _ in range(sessions)]
        per_session = messages // sessions
        start = time.perf_counter()
        await asyncio.gather(*(pump(stream, per_session, window) for _, stream in calls))
        elapsed = time.perf_counter() - start
        await asyncio.gather(*(session.bye() for session, _ in calls))
    await msrp.stop()
    return per_session * sessions / elapsed


async def measure(runs: int, messages: int, window: int) -> dict[str, Any]:
    chorus = ChorusProcess({"server": {"log_level": "WARNING"}}).start()
    try:
        results: dict[str, Any] = {}
        for name, sessions in (("one_tls_connection", 1), ("parallel_50_sessions", 50)):
            rates = [await one_run(chorus, sessions, messages, window) for _ in range(runs)]
            results[name] = {
                "sessions": sessions,
                "connections": 1 if sessions == 1 else sessions,
                "messages_per_run": messages // sessions * sessions,
                "runs_messages_per_second": [round(r) for r in rates],
                "median_messages_per_second": round(statistics.median(rates)),
            }
        if not chorus.alive:
            raise RuntimeError("chorus died during the benchmark")
        return results
    finally:
        chorus.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=5000, help="per run, all sessions")
    parser.add_argument("--window", type=int, default=32, help="unanswered echoes per session")
    args = parser.parse_args(argv)
    results = asyncio.run(measure(args.runs, args.messages, args.window))
    document = {
        "benchmark": "msrp_chat",
        "transport": "MSRP over TLS (msrps), CPIM-wrapped text/plain, echo application",
        "window": args.window,
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        **results,
    }
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
