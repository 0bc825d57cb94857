"""Screen-sharing fan-out: one sharer's frames pushed to 50 WebSocket viewers.

The server side runs in a child process (so its CPU is its own): Chorus's `WebServer` with a
`ScreenBoard`, and a sharer inside that process feeding the board ``--fps`` frames a second
through `ScreenSharing.receive` (what the conference will call for each MSRP frame: decode
and JPEG validation included, MSRP itself not). Frames alternate between two 1280×720
desktop-like JPEGs (tests/data/screen/desktop-1280x720.jpg, ≈90 KB, and a byte-changed copy).
The viewers are in this process: ``--viewers`` aiohttp WebSocket clients on the viewer URL
(signed token), each counting the binary frames it receives.

Reference, in the same run, interleaved run by run: a bare aiohttp WebSocket server in a
child process of its own that sends each frame to the same viewers from one loop
(`send_bytes` per viewer, no board, no tokens, no validation): the floor of what aiohttp
costs to push these bytes. "Chorus : bare" is Chorus's server CPU per delivery over it.

Window: ``--seconds`` after a 1 s warm-up; deliveries = frames received by all viewers in
the window; delivered fps = per viewer, median over viewers; server CPU = utime + stime of
the child over the window (/proc), per frame offered and per delivery.

    python -m bench.screen_fanout                 # median of 3 runs
    python -m bench.screen_fanout --runs 5 --fps 30 --viewers 50

Prints one JSON document. Viewers and server share this machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.procstat import cpu_seconds, load_average
from tests.peers.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
FRAME = ROOT / "tests" / "data" / "screen" / "desktop-1280x720.jpg"
SECRET = b"bench-screen-fanout-secret-0123456789"
ROOM, SHARER = "bench@conference.example.com", "sharer"


def _frames() -> list[bytes]:
    first = FRAME.read_bytes()
    second = bytearray(first)
    second[len(second) // 2] ^= 0x01  # inside the scan: a different picture, same markers
    return [first, bytes(second)]


# ---- the two servers (child processes) -----------------------------------------------------


async def _feed(send: Any, fps: float) -> None:
    frames = _frames()
    loop = asyncio.get_running_loop()
    start, index = loop.time(), 0
    while True:
        send(frames[index % 2])
        index += 1
        await asyncio.sleep(max(0.0, start + index / fps - loop.time()))


async def _serve_chorus(port: int, fps: float) -> None:
    from control.conference.screen import ScreenBoard, ScreenLimits, ScreenSharing
    from control.config import ListenAddress
    from control.media.engine import ParticipantId, RoomId
    from control.web import TokenSigner, WebServer

    board = ScreenBoard(ScreenLimits(idle_timeout=3600.0))
    sharing = ScreenSharing(board)
    server = WebServer(
        listen=ListenAddress("http", "127.0.0.1", port),
        signer=TokenSigner(SECRET, 3600.0),
        screens=board,
    )
    await server.start()
    sharing.receive(RoomId(ROOM), ParticipantId(SHARER), _frames()[0])
    print(server.urls.screen_page(RoomId(ROOM), ParticipantId(SHARER)), flush=True)
    await _feed(lambda jpeg: sharing.receive(RoomId(ROOM), ParticipantId(SHARER), jpeg), fps)


async def _serve_bare(port: int, fps: float) -> None:
    viewers: set[web.WebSocketResponse] = set()
    latest: list[bytes] = [_frames()[0]]
    wake = asyncio.Event()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        viewers.add(ws)
        sent: bytes | None = None
        reader = asyncio.create_task(ws.receive())
        try:
            while not reader.done():
                if latest[0] is not sent:
                    sent = latest[0]
                    await ws.send_bytes(sent)
                    continue
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
        finally:
            viewers.discard(ws)
        return ws

    def send(jpeg: bytes) -> None:
        nonlocal wake
        latest[0] = jpeg
        wake.set()
        wake = asyncio.Event()

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"http://127.0.0.1:{port}/", flush=True)
    await _feed(send, fps)


# ---- the viewers and the measurement --------------------------------------------------------


async def _measure(kind: str, viewers: int, fps: float, seconds: float) -> dict[str, Any]:
    port = free_port("tcp")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.screen_fanout",
            "--child",
            kind,
            "--port",
            str(port),
            "--fps",
            str(fps),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        page = await asyncio.to_thread(child.stdout.readline)
        if not page:
            raise RuntimeError(f"{kind} server did not start")
        path, _, query = page.strip().partition("?")
        url = f"{path}/ws?{query}" if kind == "chorus" else f"{path}ws"
        counts = [0] * viewers
        counting = [False]
        async with aiohttp.ClientSession() as session:
            sockets = [await session.ws_connect(url, max_msg_size=0) for _ in range(viewers)]

            async def read(index: int, ws: aiohttp.ClientWebSocketResponse) -> None:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.BINARY and counting[0]:
                        counts[index] += 1

            readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
            await asyncio.sleep(1.0)  # warm-up
            cpu_before, wall_before = cpu_seconds([child.pid]), time.monotonic()
            counting[0] = True
            await asyncio.sleep(seconds)
            counting[0] = False
            cpu_after, wall_after = cpu_seconds([child.pid]), time.monotonic()
            load = load_average()
            for task in readers:
                task.cancel()
            for ws in sockets:
                with contextlib.suppress(Exception):
                    await ws.close()
    finally:
        child.terminate()
        child.wait(10)
    window = wall_after - wall_before
    cpu = cpu_after - cpu_before
    deliveries = sum(counts)
    offered = fps * window
    return {
        "server": kind,
        "viewers": viewers,
        "window_s": round(window, 3),
        "deliveries": deliveries,
        "delivered_fps_per_viewer_median": round(statistics.median(counts) / window, 2),
        "delivered_fps_per_viewer_min": round(min(counts) / window, 2),
        "deliveries_per_s": round(deliveries / window, 1),
        "server_cpu_percent": round(100 * cpu / window, 1),
        "server_cpu_ms_per_frame_offered": round(1000 * cpu / offered, 3),
        "server_cpu_us_per_delivery": round(1e6 * cpu / deliveries, 1) if deliveries else None,
        "load_avg_1min": load,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"chorus": [], "bare": []}
    for _ in range(args.runs):
        for kind in ("chorus", "bare"):  # interleaved: both see the same machine load
            runs[kind].append(await _measure(kind, args.viewers, args.fps, args.seconds))
    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        summary[kind] = {
            key: statistics.median(r[key] for r in results)
            for key in (
                "delivered_fps_per_viewer_median",
                "deliveries_per_s",
                "server_cpu_percent",
                "server_cpu_ms_per_frame_offered",
                "server_cpu_us_per_delivery",
            )
        }
    summary["chorus_to_bare_cpu_per_delivery"] = round(
        summary["chorus"]["server_cpu_us_per_delivery"]
        / summary["bare"]["server_cpu_us_per_delivery"],
        2,
    )
    return {
        "benchmark": "screen_fanout",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "frame_bytes": len(_frames()[0]),
        "fps_offered": args.fps,
        "viewers": args.viewers,
        "runs": runs,
        "median": summary,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--child", choices=("chorus", "bare"))
    parser.add_argument("--port", type=int)
    args = parser.parse_args(argv)
    if args.child:
        serve = _serve_chorus if args.child == "chorus" else _serve_bare
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.port, args.fps))
        return 0
    print(json.dumps(asyncio.run(_main(args)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
