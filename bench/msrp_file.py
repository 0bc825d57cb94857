"""MSRP file-transfer throughput (RFC 5547) over TLS on loopback, against a plain TLS copy.

A real `chorus serve` (echo application) and a client in this process. Each run:

- **push**: SIP INVITE with a sendonly ``m=message TCP/TLS/MSRP`` line and a=file-selector, then
  the file as one MSRP message in 256 KiB chunks. The clock runs from the first chunk until
  the 200 to the last chunk: echo holds that answer until it has written every byte to a
  temporary file, checked size and SHA-1, fsync'ed it, written its sidecar, renamed it into
  place and indexed it (RFC 4975 §7.1.1 with RFC 5547 §8.4). Every chunk's answer is counted.
- **pull**: a recvonly offer naming the file's hash; the clock runs from the MSRP connection
  being up until the whole message has arrived and been hashed as it came; the client then
  answers the held last chunk 200 (or 400 on a hash mismatch, which fails the run), as echo
  does for a push.
- **tls copy**: the same bytes through a plain asyncio TLS socket to a sink process on
  loopback (no MSRP, no disk, no hashing), 256 KiB writes; the clock runs from the first write
  until the sink says it has every byte.

Reported: MB/s (10^6 bytes per second) per direction, the median over ``--runs``, and each as a
ratio of the TLS copy median measured in the same run. Client and server share this machine's
two cores, so the figures are a floor for the server alone.

    python -m bench.msrp_file                     # 100 MB, median of 5 runs
    python -m bench.msrp_file --runs 3 --megabytes 20

Prints one JSON document (``--output FILE`` writes it there too).
"""

from __future__ import annotations

import argparse
import asyncio
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

from control.msrp.fileselector import HASH_SHA1, FileSelector
from control.msrp.filetransfer import FileSender
from control.msrp.transport import MsrpTransport
from control.sip.sdp import Direction
from tests.peers.chorus import ChorusProcess
from tests.peers.sipclient import SipClient, client_tls_context
from tests.test_echo_files import (
    FileCall,
    chunk_responses,
    place_file_call,
    pull_file,
    push_chunks,
)

CHUNK = 256 * 1024


# ---- the plain TLS copy -------------------------------------------------------------------


async def _sink(cert: str, key: str) -> None:
    """Subprocess side: read an 8-byte length and that many bytes per connection, answer ok."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(8), "big")
        left = size
        while left:
            piece = await reader.read(min(left, 1 << 20))
            if not piece:
                return
            left -= len(piece)
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context, limit=1 << 20)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def tls_copy(port: int, data: bytes) -> float:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_tls_context(), server_hostname="localhost"
    )
    view = memoryview(data)
    start = time.perf_counter()
    writer.write(len(data).to_bytes(8, "big"))
    for offset in range(0, len(data), CHUNK):
        writer.write(view[offset : offset + CHUNK])
        await writer.drain()
    assert await reader.readexactly(2) == b"ok"
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed


# ---- MSRP push and pull -------------------------------------------------------------------


async def push(
    sip: SipClient, chorus: ChorusProcess, msrp: MsrpTransport, data: bytes, sha1: bytes, tag: str
) -> float:
    selector = FileSelector(
        "bench.bin", "application/octet-stream", len(data), ((HASH_SHA1, sha1),)
    )
    call, status = await place_file_call(
        sip, chorus, msrp, selector, Direction.SENDONLY, transfer_id=f"push{tag}"
    )
    if call is None:
        raise RuntimeError(f"push refused: {status}")
    pieces = len(list(FileSender(len(data), chunk_size=CHUNK).pieces()))
    start = time.perf_counter()
    await push_chunks(call, data, "application/octet-stream", chunk_size=CHUNK)
    answers = await chunk_responses(call, pieces, timeout=120)
    elapsed = time.perf_counter() - start
    if answers != [200] * pieces:
        raise RuntimeError(f"push answered {answers[-3:]} (of {len(answers)}/{pieces} chunks)")
    await hang_up(call)
    return elapsed


async def pull(
    sip: SipClient, chorus: ChorusProcess, msrp: MsrpTransport, size: int, sha1: bytes, tag: str
) -> float:
    call, status = await place_file_call(
        sip,
        chorus,
        msrp,
        FileSelector(hashes=((HASH_SHA1, sha1),)),
        Direction.RECVONLY,
        transfer_id=f"pull{tag}",
    )
    if call is None:
        raise RuntimeError(f"pull refused: {status}")
    start = time.perf_counter()
    digest, received = await pull_file(call, sha1, timeout=120)  # answers the held chunk
    elapsed = time.perf_counter() - start
    if received != size or digest != sha1:
        raise RuntimeError("pulled file differs")
    await hang_up(call)
    return elapsed


async def hang_up(call: FileCall) -> None:
    call.channel.close()
    await call.session.bye()


# ---- the run ------------------------------------------------------------------------------


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


async def measure(runs: int, size: int) -> dict[str, Any]:
    overrides = {
        "server": {"log_level": "WARNING", "trace_sip": False},
        "files": {"max_file_bytes": size + (1 << 20)},
    }
    chorus = ChorusProcess(overrides).start()
    sink: subprocess.Popen[str] | None = None
    try:
        tls_dir = chorus.workdir / "spool" / "tls"
        cert, key = tls_dir / "chorus.crt", tls_dir / "chorus.key"  # the same certificate
        sink = subprocess.Popen(
            [sys.executable, "-m", "bench.msrp_file", "--tls-sink", str(cert), str(key)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert sink.stdout is not None
        sink_port = int(sink.stdout.readline())
        results: dict[str, list[float]] = {"push": [], "pull": [], "tls_copy": []}
        msrp = MsrpTransport()
        msrp.ssl_client = client_tls_context()
        async with SipClient("tls") as sip:
            for run in range(runs):
                data = os.urandom(size)
                sha1 = hashlib.sha1(data).digest()
                results["tls_copy"].append(mbps(size, await tls_copy(sink_port, data)))
                results["push"].append(
                    mbps(size, await push(sip, chorus, msrp, data, sha1, str(run)))
                )
                results["pull"].append(
                    mbps(size, await pull(sip, chorus, msrp, size, sha1, str(run)))
                )
                for stored in (chorus.workdir / "spool" / "files").glob(f"{sha1.hex()}.*"):
                    stored.unlink()  # keep the disk use to one file at a time
        await msrp.stop()
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait()
        chorus.stop()
        shutil.rmtree(chorus.workdir, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in results.items()}
    return {
        "benchmark": "msrp_file",
        "file_bytes": size,
        "runs": runs,
        "chunk_bytes": CHUNK,
        "push_mb_per_s": round(medians["push"], 1),
        "pull_mb_per_s": round(medians["pull"], 1),
        "tls_copy_mb_per_s": round(medians["tls_copy"], 1),
        "push_ratio_to_tls_copy": round(medians["push"] / medians["tls_copy"], 3),
        "pull_ratio_to_tls_copy": round(medians["pull"] / medians["tls_copy"], 3),
        "each_run_mb_per_s": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=100, help="file size, 10^6 bytes")
    parser.add_argument("--output", type=Path, help="also write the JSON document here")
    parser.add_argument("--tls-sink", nargs=2, metavar=("CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tls_sink:
        asyncio.run(_sink(*args.tls_sink))
        return 0
    document = asyncio.run(measure(args.runs, args.megabytes * 1_000_000))
    text = json.dumps(document, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
