"""The SIP user agent's CPU per echo call without sockets: SIPp-shaped datagrams fed into
the server's transport receiver in-process, the server's replies caught in memory.

    python -m bench.ua_echo_loop --calls 4000 --concurrency 200 [--event-loop uvloop]
    python -m bench.ua_echo_loop --calls 4000 --profile /tmp/ua.pstats

Each call is INVITE (SIPp's uac_echo offer) -> 200 -> ACK -> BYE -> 200, several calls in
flight at once; the server is ``build_server`` with echo as under ``chorus serve`` (its RTP
socket pairs are real loopback sockets, from the EchoSockets pool) and ``tune_gc`` as at
start-up. What it leaves out is the kernel's share (no SIP ``sendto``/``recvfrom``) and the
load generator's: so the CPU per call here is the Python work of parse, transactions,
dialogs, sessions, SDP and echo set-up, measured with ``time.process_time`` over the calls
(the harness's own few lines per message included). ``--profile`` writes a cProfile of the
same run for ``python -m pstats``; the top functions by own time are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import pstats
import re
import sys
import tempfile
import time
from pathlib import Path

from control.cli import build_server
from control.config import ListenAddress, parse_config
from control.server import Server, loop_factory, tune_gc
from control.sip.transport import Peer, SipTransportLayer, _Receiver

SERVER_PORT = 5999  # never bound: the capture layer stands in for the socket
CLIENT = Peer("udp", "127.0.0.1", 5061)
_TO_TAG = re.compile(rb"\r\nTo: [^\r\n]*;tag=([^;\r\n]+)")
_CALL_ID = re.compile(rb"\r\nCall-ID: ([^\r\n]+)")
_STATUS = re.compile(rb"^SIP/2\.0 (\d{3})")

SDP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 8 0 9 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\na=ptime:30\r\na=sendrecv\r\n"
)


def _request(method: str, n: int, cseq: int, branch: str, to_tag: str = "") -> bytes:
    body = SDP if method == "INVITE" else ""
    to = f"<sip:echo@127.0.0.1:{SERVER_PORT}>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        f"{method} sip:echo@127.0.0.1:{SERVER_PORT} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{branch}-{n}",
        f'From: "sipp" <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag00{n}',
        f"To: {to}",
        f"Call-ID: {n}-bench@127.0.0.1",
        f"CSeq: {cseq} {method}",
        "Contact: <sip:sipp@127.0.0.1:5061;transport=UDP>",
        "Max-Forwards: 70",
    ]
    if method == "INVITE":
        lines += ["Subject: Chorus test call", "Content-Type: application/sdp"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


class CaptureLayer(SipTransportLayer):
    """The server's SIP transport: what it sends resolves the waiting call's future."""

    def __init__(self, server: Server) -> None:
        super().__init__(server.ua.handle_message)
        self.bound = [ListenAddress("udp", "127.0.0.1", SERVER_PORT)]
        self.receiver = _Receiver(self)
        self.waiting: dict[bytes, asyncio.Future[tuple[int, bytes]]] = {}
        self.sent = 0
        server.ua.transport = self

    def send(self, data: bytes, peer: Peer) -> None:
        self.sent += 1
        status = _STATUS.match(data)
        call_id = _CALL_ID.search(data)
        if status is None or call_id is None or int(status.group(1)) < 200:
            return
        future = self.waiting.pop(call_id.group(1), None)
        if future is not None and not future.done():
            future.set_result((int(status.group(1)), data))

    def feed(self, data: bytes) -> asyncio.Future[tuple[int, bytes]] | None:
        """Deliver ``data`` as a datagram from the client on the next loop turn; the future
        of the final response to it, for a request that gets one (not ACK)."""
        loop = asyncio.get_running_loop()
        future = None
        if not data.startswith(b"ACK"):
            call_id = _CALL_ID.search(data)
            assert call_id is not None
            future = self.waiting[call_id.group(1)] = loop.create_future()
        loop.call_soon(self.receiver.handle_bytes, data, CLIENT, False)
        return future


async def _call(layer: CaptureLayer, n: int) -> None:
    invited = layer.feed(_request("INVITE", n, 1, "i"))
    assert invited is not None
    status, response = await invited
    if status != 200:
        raise RuntimeError(f"call {n}: INVITE got {status}")
    tag = _TO_TAG.search(response)
    assert tag is not None
    to_tag = tag.group(1).decode()
    layer.feed(_request("ACK", n, 1, "a", to_tag))
    bye = layer.feed(_request("BYE", n, 2, "b", to_tag))
    assert bye is not None
    status, _ = await bye
    if status != 200:
        raise RuntimeError(f"call {n}: BYE got {status}")


async def run(calls: int, concurrency: int, profile: Path | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as spool:
        config = parse_config(
            {
                "sip": {"listen": [f"udp:127.0.0.1:{SERVER_PORT}"]},
                "rtp": {"port_range": "30000-31999", "native_media": False},
                "msrp": {"listen": ["tcp:127.0.0.1:0"]},
                "server": {"spool_dir": spool, "log_level": "WARNING"},
            }
        )
        server = build_server(config)
        layer = CaptureLayer(server)
        tune_gc(config.server.gc_threshold)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(n: int) -> None:
            async with semaphore:
                await _call(layer, n)

        await asyncio.gather(*(one(n) for n in range(200)))  # warm-up: caches, socket pool
        collections = sum(s["collections"] for s in gc.get_stats())
        gc_time = [0.0, 0.0]  # seconds in collections, start of the current one
        by_generation = [0.0, 0.0, 0.0]

        def timed(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                gc_time[1] = time.process_time()
            else:
                spent = time.process_time() - gc_time[1]
                gc_time[0] += spent
                by_generation[info["generation"]] += spent

        gc.callbacks.append(timed)
        profiler = cProfile.Profile() if profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await asyncio.gather(*(one(n) for n in range(1000, 1000 + calls)))
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        collections = sum(s["collections"] for s in gc.get_stats()) - collections
        gc.callbacks.remove(timed)
        heap = len(server.ua._timer_heap)
        transactions = server.ua.transaction_count
        await server.ua.close()
    if profiler is not None and profile is not None:
        profiler.dump_stats(str(profile))
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(30)
    return {
        "calls": calls,
        "concurrency": concurrency,
        "cpu_seconds": round(cpu, 3),
        "cpu_ms_per_call": round(1000 * cpu / calls, 4),
        "wall_seconds": round(wall, 3),
        "gc_collections": collections,
        "gc_cpu_seconds": round(gc_time[0], 3),
        "gc_cpu_seconds_by_generation": [round(t, 3) for t in by_generation],
        "messages_sent": layer.sent,
        "timer_heap_entries_at_end": heap,
        "transactions_at_end": transactions,
        "profiled": profile is not None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=200, help="calls in flight")
    parser.add_argument("--event-loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--profile", type=Path, help="write a cProfile here")
    args = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
        report = runner.run(run(args.calls, args.concurrency, args.profile))
    print(json.dumps({"benchmark": "ua_echo_loop", "event_loop": args.event_loop, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
