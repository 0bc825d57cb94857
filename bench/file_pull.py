"""Room file pulls: 10 simultaneous pullers of a 20 MB room file over TLS, against a plain
TLS copy of the same bytes to as many clients in the same run (issue 9).

A real `chorus serve` (the conference) and the clients in this process. Once, before the
runs, a file session of its own uploads the file into the room (RFC 5547 §8.2, as Blink sends
a file; every chunk answered 200 or the benchmark fails). Each run:

- **pull**: ``--pullers`` clients, each with a SIP identity and MSRP transport of its own,
  pull the file at once as real clients do: an INVITE of the room with a ``recvonly``
  ``TCP/TLS/MSRP`` m-line whose a=file-selector names only the SHA-1 (§8.4); the room answers
  ``sendonly`` and streams the file from its spool; each puller hashes the bytes as they come,
  answers the last chunk 200 and hangs up. The clock runs from the first INVITE until the
  last puller has every byte. A puller whose SHA-1 or size differs fails the run.
- **tls copy** (reference): a child process serving the same file from disk over plain
  asyncio TLS (same certificate), 256 KiB reads, to as many clients at once; each client
  hashes what it reads. No SIP, no MSRP framing, no index lookup. Same checks.

Reported: aggregate MB/s (10^6 bytes per second, pullers × size / wall time), the median over
``--runs`` for each, and pull / copy. Clients and server share this machine's two cores, so
the figures are a floor for the server alone.

    python -m bench.file_pull                    # 20 MB, 10 pullers, median of 3 runs
    python -m bench.file_pull --runs 5 --megabytes 20 --pullers 10

Prints one JSON document (``--output FILE`` writes it there too).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import shutil
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import client_tls_context
from tests.test_room_files_live import Upload, person, pull, push

CHUNK = 256 * 1024


# ---- the plain TLS copy -------------------------------------------------------------------


async def _source(cert: str, key: str, path: str) -> None:
    """Child side: send the file's size (8 bytes) and the file, read from disk, per connection."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    size = os.path.getsize(path)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(size.to_bytes(8, "big"))
        with open(path, "rb") as handle:
            while piece := handle.read(CHUNK):
                writer.write(piece)
                await writer.drain()
        await reader.read(2)  # the client says it has it all
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def tls_fetch(port: int) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls_context(), server_hostname="localhost", limit=1 << 20
    )
    size = int.from_bytes(await reader.readexactly(8), "big")
    digest = hashlib.sha1()
    left = size
    while left:
        piece = await reader.read(min(left, 1 << 20))
        if not piece:
            break
        digest.update(piece)
        left -= len(piece)
    writer.write(b"ok")
    await writer.drain()
    writer.close()
    return size - left, digest.digest()


async def tls_copy(port: int, pullers: int, size: int, sha1: bytes) -> float:
    start = time.perf_counter()
    got = await asyncio.gather(*(tls_fetch(port) for _ in range(pullers)))
    elapsed = time.perf_counter() - start
    if got != [(size, sha1)] * pullers:
        raise RuntimeError(f"a TLS copy differs: {sum(g != (size, sha1) for g in got)} clients")
    return elapsed


# ---- the MSRP pulls -----------------------------------------------------------------------


async def pulls(chorus: ChorusProcess, pullers: int, sha1: bytes, run: int) -> float:
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(person(f"r{run}p{n}", None, "tcp"))
            for n in range(pullers)
        ]
        start = time.perf_counter()
        got = await asyncio.gather(*(pull(client, chorus, sha1) for client in clients))
        elapsed = time.perf_counter() - start
    if got != [sha1] * pullers:
        raise RuntimeError(f"a pull differs: {sum(g != sha1 for g in got)} of {pullers}")
    return elapsed


# ---- the run ------------------------------------------------------------------------------


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def measure(runs: int, size: int, pullers: int) -> dict[str, Any]:
    overrides = {
        "server": {"log_level": "WARNING", "trace_sip": False},
        "rtp": {"timeout": 300.0},
    }
    chorus = ChorusProcess(overrides).start()
    source: subprocess.Popen[str] | None = None
    try:
        data = os.urandom(size)
        up = Upload(data, hashlib.sha1(data).digest(), name="bench.bin")
        async with person("uploader", "Uploader") as uploader:
            statuses = await push(uploader, chorus, up)
        if not statuses or set(statuses) != {200}:
            raise RuntimeError(f"upload answered {statuses[-3:]}")
        stored = chorus.workdir / "bench-source.bin"
        stored.write_bytes(data)
        del data
        tls_dir = chorus.workdir / "spool" / "tls"
        cert, key = tls_dir / "chorus.crt", tls_dir / "chorus.key"  # the same certificate
        source = subprocess.Popen(
            [sys.executable, "-m", "bench.file_pull", "--tls-source", str(cert), str(key)]
            + [str(stored)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert source.stdout is not None
        port = int(source.stdout.readline())
        results: dict[str, list[float]] = {"pull": [], "tls_copy": []}
        total = size * pullers
        for run in range(runs):  # interleaved, so both see the same load
            results["tls_copy"].append(mbps(total, await tls_copy(port, pullers, size, up.sha1)))
            results["pull"].append(mbps(total, await pulls(chorus, pullers, up.sha1, run)))
    finally:
        if source is not None:
            source.terminate()
            source.wait()
        chorus.stop()
        shutil.rmtree(chorus.workdir, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {
        "benchmark": "file_pull",
        "file_bytes": size,
        "pullers": pullers,
        "runs": runs,
        "pull_aggregate_mb_per_s": round(medians["pull"], 1),
        "tls_copy_aggregate_mb_per_s": round(medians["tls_copy"], 1),
        "pull_ratio_to_tls_copy": round(medians["pull"] / medians["tls_copy"], 3),
        "each_run_mb_per_s": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=20, help="file size, 10^6 bytes")
    parser.add_argument("--pullers", type=int, default=10)
    parser.add_argument("--output", type=Path, help="also write the JSON document here")
    parser.add_argument(
        "--tls-source", nargs=3, metavar=("CERT", "KEY", "FILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.tls_source:
        asyncio.run(_source(*args.tls_source))
        return 0
    if args.runs < 1 or args.pullers < 1:
        parser.error("--runs and --pullers must be at least 1")
    document = asyncio.run(measure(args.runs, args.megabytes * 1_000_000, args.pullers))
    text = json.dumps(document, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
