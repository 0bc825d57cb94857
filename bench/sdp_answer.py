"""CPU per echo call spent on SDP and the echo's media set-up, without SIP or sockets.

    python -m bench.sdp_answer [--calls 2000] [--rounds 7] [--profile]

What one echo call does with SDP, in order: parse SIPp's offer (the body of
tests/sipp/uac_echo.xml, the scenario ``bench.sip_call_rate`` runs, with the media port and
the o= session id varied per call), then ``EchoApp.incoming_invite`` with a stand-in for the
SIP call: reflector and pooled RTP/RTCP socket pair, ``SdpSession``, codec choice, the
answer built and serialised, the call accepted and ended (the pair back to the pool). The
socket pair is bound once (the pool serves every later call, as it does under load).

Figures are CPU microseconds per call (``time.process_time`` over a round of ``--calls``
calls, median of ``--rounds``), for three nested stages: ``parse`` (the offer alone),
``answer`` (parse + negotiation + serialised answer, no media set-up) and ``call`` (the
whole of ``incoming_invite``). The offers are made before the clock starts. ``--profile``
runs one round of ``call`` under cProfile and prints the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import random
import re
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from control.echo.app import EchoApp, EchoCall
from control.echo.reflector import EchoMedia, RtpReflector
from control.media.ports import PortAllocator
from control.sip import sdp
from control.sip.uri import NameAddr, SipUri

SCENARIO = Path(__file__).resolve().parent.parent / "tests" / "sipp" / "uac_echo.xml"
HOST = "127.0.0.1"


def offer_template() -> str:
    """The scenario's SDP body as SIPp sends it: lines stripped, CRLF ends, fields filled
    in but for ``{port}`` and ``{sess}``."""
    text = SCENARIO.read_text()
    match = re.search(r"\n\s*(v=0.*?)\]\]>", text, re.S)
    assert match is not None, f"no SDP body in {SCENARIO}"
    lines = [line.strip() for line in match.group(1).splitlines() if line.strip()]
    body = "\r\n".join(lines) + "\r\n"
    body = body.replace("53655765", "{sess}").replace("[media_port]", "{port}")
    for key, value in {
        "[local_ip_type]": "4",
        "[media_ip_type]": "4",
        "[local_ip]": HOST,
        "[media_ip]": HOST,
    }.items():
        body = body.replace(key, value)
    return body


def make_offers(count: int, seed: int = 7) -> list[bytes]:
    """``count`` distinct offers: an even media port and a session id per call."""
    rng = random.Random(seed)
    template = offer_template()
    return [
        template.format(port=2 * rng.randrange(5000, 32000), sess=rng.randrange(1, 2**31)).encode()
        for _ in range(count)
    ]


class _Session:
    """The part of control.sip.session.Session an echo call touches: its BYE comes in the
    next turn of the event loop (the call waits for it, as a real one does)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, call_id: str) -> None:
        self.terminated: asyncio.Future[str] = loop.create_future()
        loop.call_soon(self._terminate)
        self.dialog = SimpleNamespace(call_id=call_id)
        self.on_reinvite: Any = None

    def _terminate(self) -> None:
        self.on_reinvite = None  # as Session._terminate drops its hooks
        self.terminated.set_result("BYE")


class _Call:
    """The part of control.app.IncomingCall echo uses; ``accept`` keeps the answer."""

    local_address = HOST
    cancelled = False
    remote_identity = NameAddr(SipUri(host=HOST, user="echo-1", port=5061))
    local_identity = NameAddr(SipUri(host=HOST, user="echo", port=5060))

    def __init__(self, offer: sdp.SessionDescription, loop: asyncio.AbstractEventLoop) -> None:
        self.offer = offer
        self.loop = loop
        self.answer: bytes | None = None
        self.rejected: int | None = None

    def reject(self, status: int, reason: str | None = None) -> None:
        self.rejected = status

    def accept(self, answer: bytes, *, user: str | None = None) -> _Session:
        self.answer = answer
        return _Session(self.loop, "bench")


def make_app() -> EchoApp:
    ua = SimpleNamespace(rng=random.Random(3))
    return EchoApp(ua, PortAllocator(40000, 40999))  # type: ignore[arg-type]


async def run_parse(offers: list[bytes]) -> None:
    for body in offers:
        sdp.parse(body)


async def run_answer(app: EchoApp, offers: list[bytes]) -> None:
    """Negotiation and the serialised answer on an already open media pair (no set-up)."""
    media = EchoMedia(app.sockets, RtpReflector(1))
    await media.open(HOST)
    local, remote = _Call.local_identity, _Call.remote_identity
    for body in offers:
        offer = sdp.parse(body)
        state = sdp.SdpSession(sess_id=app.ua.rng.randrange(1, 2**31), address=HOST)
        call = EchoCall(app, media, state, local=local, remote=remote)
        answer, result = await call.negotiate(offer)
        await call.settle(result)
    media.close()


async def run_call(app: EchoApp, offers: list[bytes]) -> None:
    loop = asyncio.get_running_loop()
    for body in offers:
        call = _Call(sdp.parse(body), loop)
        await app.incoming_invite(call)  # type: ignore[arg-type]
        assert call.answer is not None, call.rejected


STAGES = ("parse", "answer", "call")


def measure(stage: str, app: EchoApp, offers: list[bytes]) -> float:
    """CPU µs per call of one round."""
    loop = asyncio.new_event_loop()
    try:
        job = {
            "parse": lambda: run_parse(offers),
            "answer": lambda: run_answer(app, offers),
            "call": lambda: run_call(app, offers),
        }[stage]
        gc.collect()
        start = time.process_time()
        loop.run_until_complete(job())
        return (time.process_time() - start) / len(offers) * 1e6
    finally:
        app.sockets.close()
        app.sockets._closed = False  # the next round binds a fresh pair on its own loop
        loop.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per stage (median)")
    parser.add_argument("--profile", action="store_true", help="cProfile one call round")
    parser.add_argument("--show", action="store_true", help="print one offer and its answer")
    args = parser.parse_args()
    offers = make_offers(args.calls)
    app = make_app()
    if args.show:
        loop = asyncio.new_event_loop()
        call = _Call(sdp.parse(offers[0]), loop)
        loop.run_until_complete(app.incoming_invite(call))  # type: ignore[arg-type]
        print(offers[0].decode(), (call.answer or b"").decode(), sep="\n")
        app.sockets.close()
        app.sockets._closed = False
        loop.close()
    if args.profile:
        profiler = cProfile.Profile()
        loop = asyncio.new_event_loop()
        profiler.enable()
        loop.run_until_complete(run_call(app, offers))
        profiler.disable()
        loop.close()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    figures: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for _ in range(args.rounds):  # interleaved: a machine slowing down hits every stage
        for stage in STAGES:
            figures[stage].append(measure(stage, app, offers))
    print(f"CPU µs per echo call ({args.calls} calls x {args.rounds} rounds, median [min-max])")
    for stage, values in figures.items():
        print(
            f"  {stage:7s} {statistics.median(values):7.1f}  [{min(values):.1f}-{max(values):.1f}]"
        )


if __name__ == "__main__":
    main()
