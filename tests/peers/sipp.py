"""Run SIPp (sip-tester 3.6) as a load-generating UAC or as a background UAS.

SIPp's exit status is 0 only when every call succeeded; the numbers behind that come from
its `-trace_stat` CSV (one row per `-fd` period plus a final row at exit), which is easier
to read reliably than the screen dump on stdout. The stdout summary is the fallback.

Everything runs on 127.0.0.1 with `-nostdin` and a bounded wall-clock timeout, so a hung
peer fails a test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import csv
import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from tests.peers.ports import LOOPBACK, free_ports

__all__ = [
    "SCENARIO_DIR",
    "SippResult",
    "SippStats",
    "SippUas",
    "Transport",
    "answer_contacts",
    "run_sipp",
    "run_sipp_async",
    "scenario_path",
    "sipp_available",
]

SCENARIO_DIR = Path(__file__).resolve().parent.parent / "sipp"

# u1: one UDP socket; t1: one TCP connection for all calls; tn: one TCP connection per call.
Transport = Literal["u1", "t1", "tn"]


def sipp_available() -> bool:
    """True when the `sipp` binary is on PATH."""
    return shutil.which("sipp") is not None


def scenario_path(scenario: str | os.PathLike[str]) -> Path:
    """Resolve a scenario: a path to an XML file, or a name in tests/sipp/ (`"uac_echo"`)."""
    path = Path(scenario)
    if path.suffix == ".xml" and path.exists():
        return path
    named = SCENARIO_DIR / (path.name if path.suffix == ".xml" else f"{path.name}.xml")
    if not named.exists():
        raise FileNotFoundError(f"no SIPp scenario {scenario!r} (looked in {SCENARIO_DIR})")
    return named


@dataclass(frozen=True, slots=True)
class SippStats:
    """Cumulative counters from SIPp's final statistics."""

    created: int
    successful: int
    failed: int
    incoming: int = 0
    outgoing: int = 0
    retransmissions: int = 0
    current: int = 0
    raw: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class SippResult:
    """What one SIPp run did: exit status, output, statistics and its error log."""

    returncode: int
    stdout: str
    stderr: str
    stats: SippStats | None
    errors: str = ""
    timed_out: bool = False
    messages: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """Every call succeeded (SIPp exits 0 only then) and none failed."""
        return (
            self.returncode == 0
            and not self.timed_out
            and (self.stats is None or self.stats.failed == 0)
        )

    def describe(self) -> str:
        """A short text for assertion messages."""
        tail = "\n".join(self.stdout.splitlines()[-40:])
        return (
            f"sipp rc={self.returncode} timed_out={self.timed_out} stats={self.stats}\n"
            f"errors:\n{self.errors[-3000:]}\nstderr:\n{self.stderr[-2000:]}\nstdout:\n{tail}"
        )


def _int(row: dict[str, str], key: str) -> int:
    value = row.get(key, "").strip()
    try:
        return int(value)
    except ValueError:
        return 0


def parse_stat_csv(text: str) -> SippStats | None:
    """Parse the last row of a `-trace_stat` CSV (semicolon separated, header first)."""
    rows = [line for line in text.splitlines() if line.strip()]
    if len(rows) < 2:
        return None
    header, last = next(csv.reader([rows[0]], delimiter=";")), None
    for line in reversed(rows[1:]):
        values = next(csv.reader([line], delimiter=";"))
        if len(values) >= len(header) - 1:
            last = values
            break
    if last is None:
        return None
    row = dict(zip(header, last, strict=False))
    return SippStats(
        created=_int(row, "TotalCallCreated"),
        successful=_int(row, "SuccessfulCall(C)"),
        failed=_int(row, "FailedCall(C)"),
        incoming=_int(row, "IncomingCall(C)"),
        outgoing=_int(row, "OutgoingCall(C)"),
        retransmissions=_int(row, "Retransmissions(C)"),
        current=_int(row, "CurrentCall"),
        raw=row,
    )


_SUMMARY = re.compile(r"^\s*(Successful call|Failed call|Total Calls created)\s*\|(.*)$", re.M)


def parse_stdout_summary(text: str) -> SippStats | None:
    """Parse the cumulative column of the statistics screen SIPp prints at exit."""
    found: dict[str, int] = {}
    for name, rest in _SUMMARY.findall(text):
        numbers = re.findall(r"\d+", rest)
        if numbers:
            found[name] = int(numbers[-1])
    if "Successful call" not in found:
        return None
    return SippStats(
        created=found.get("Total Calls created", 0),
        successful=found["Successful call"],
        failed=found.get("Failed call", 0),
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class _Command:
    argv: list[str]
    stat_file: Path
    error_file: Path
    message_file: Path | None


def _build_command(
    scenario: str | os.PathLike[str],
    target: str | None,
    workdir: Path,
    *,
    transport: Transport,
    local_port: int,
    calls: int | None,
    rate: float | None,
    service: str | None,
    pause_ms: int | None,
    max_concurrent: int | None,
    recv_timeout_ms: int | None,
    timeout: float | None,
    stat_period: int,
    extra_args: Sequence[str],
    keys: Mapping[str, str] | None = None,
    trace_messages: bool = False,
) -> _Command:
    stat_file = workdir / f"stat-{local_port}.csv"
    error_file = workdir / f"errors-{local_port}.log"
    message_file = workdir / f"messages-{local_port}.log"
    argv = [
        "sipp",
        "-nostdin",
        "-i",
        LOOPBACK,
        "-p",
        str(local_port),
        "-t",
        transport,
        "-sf",
        str(scenario_path(scenario)),
        "-trace_stat",
        "-stf",
        str(stat_file),
        "-fd",
        str(stat_period),
        "-trace_err",
        "-error_file",
        str(error_file),
    ]
    if calls is not None:
        argv += ["-m", str(calls)]
    if rate is not None:
        argv += ["-r", f"{rate:g}", "-rp", "1000"]
    if service is not None:
        argv += ["-s", service]
    if pause_ms is not None:
        argv += ["-d", str(pause_ms)]
    if max_concurrent is not None:
        argv += ["-l", str(max_concurrent)]
    if recv_timeout_ms is not None:
        argv += ["-recv_timeout", str(recv_timeout_ms)]
    if timeout is not None:
        argv += ["-timeout", f"{max(1, int(timeout))}s"]
    for key, value in (keys or {}).items():
        argv += ["-key", key, value]
    if trace_messages:
        argv += ["-trace_msg", "-message_file", str(message_file)]
    argv += list(extra_args)
    if target is not None:
        argv.append(target)
    return _Command(argv, stat_file, error_file, message_file if trace_messages else None)


def _result(
    cmd: _Command, returncode: int, stdout: str, stderr: str, *, timed_out: bool
) -> SippResult:
    stats = parse_stat_csv(_read(cmd.stat_file)) or parse_stdout_summary(stdout)
    return SippResult(
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        stats=stats,
        errors=_read(cmd.error_file),
        timed_out=timed_out,
        messages=_read(cmd.message_file) if cmd.message_file is not None else "",
    )


def run_sipp(
    scenario: str | os.PathLike[str],
    target: str,
    *,
    transport: Transport = "u1",
    calls: int = 1,
    rate: float = 10.0,
    local_port: int | None = None,
    service: str | None = None,
    pause_ms: int | None = None,
    max_concurrent: int | None = None,
    recv_timeout_ms: int = 10_000,
    keys: Mapping[str, str] | None = None,
    trace_messages: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
    workdir: str | os.PathLike[str] | None = None,
) -> SippResult:
    """Run a SIPp UAC to completion (`calls` calls at `rate` per second) and collect stats.

    `target` is `host:port`. `keys` become `-key NAME VALUE` ([NAME] in the scenario).
    With `trace_messages` every message sent and received is kept in `result.messages`
    (see `answer_contacts`). SIPp's own `-timeout` ends the run after `timeout` seconds;
    a hard kill follows a few seconds later if SIPp does not exit by itself.
    """
    port = local_port if local_port is not None else free_ports(1)[0]
    with tempfile.TemporaryDirectory(prefix="sipp-", dir=workdir) as tmp:
        cmd = _build_command(
            scenario,
            target,
            Path(tmp),
            transport=transport,
            local_port=port,
            calls=calls,
            rate=rate,
            service=service,
            pause_ms=pause_ms,
            max_concurrent=max_concurrent,
            recv_timeout_ms=recv_timeout_ms,
            timeout=timeout,
            stat_period=1,
            extra_args=extra_args,
            keys=keys,
            trace_messages=trace_messages,
        )
        try:
            done = subprocess.run(
                cmd.argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout + 10,
                check=False,
                cwd=tmp,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout if isinstance(exc.stdout, str) else ""
            err = exc.stderr if isinstance(exc.stderr, str) else ""
            return _result(cmd, -9, out, err, timed_out=True)
        return _result(cmd, done.returncode, done.stdout, done.stderr, timed_out=False)


async def run_sipp_async(
    scenario: str | os.PathLike[str],
    target: str,
    *,
    transport: Transport = "u1",
    calls: int = 1,
    rate: float = 10.0,
    local_port: int | None = None,
    service: str | None = None,
    pause_ms: int | None = None,
    max_concurrent: int | None = None,
    recv_timeout_ms: int = 10_000,
    keys: Mapping[str, str] | None = None,
    trace_messages: bool = False,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
    workdir: str | os.PathLike[str] | None = None,
) -> SippResult:
    """`run_sipp` for asyncio tests: the event loop keeps running (e.g. a Chorus server)."""
    port = local_port if local_port is not None else free_ports(1)[0]
    with tempfile.TemporaryDirectory(prefix="sipp-", dir=workdir) as tmp:
        cmd = _build_command(
            scenario,
            target,
            Path(tmp),
            transport=transport,
            local_port=port,
            calls=calls,
            rate=rate,
            service=service,
            pause_ms=pause_ms,
            max_concurrent=max_concurrent,
            recv_timeout_ms=recv_timeout_ms,
            timeout=timeout,
            stat_period=1,
            extra_args=extra_args,
            keys=keys,
            trace_messages=trace_messages,
        )
        proc = await asyncio.create_subprocess_exec(
            *cmd.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout + 10)
        except TimeoutError:
            proc.kill()
            out, err = await proc.communicate()
            return _result(
                cmd, -9, out.decode(errors="replace"), err.decode(errors="replace"), timed_out=True
            )
        assert proc.returncode is not None
        return _result(
            cmd,
            proc.returncode,
            out.decode(errors="replace"),
            err.decode(errors="replace"),
            timed_out=False,
        )


_CONTACT = re.compile(r"^(?:Contact|m)\s*:\s*(.*)$", re.M | re.I)
_CSEQ = re.compile(r"^CSeq\s*:\s*\d+\s+(\S+)", re.M | re.I)


def answer_contacts(messages: str, method: str = "INVITE") -> list[str]:
    """Contact URIs of the 2xx responses to `method` received, in order.

    Read from a `-trace_msg` log: who answered each call, e.g. which UAS behind a
    dispatcher (its Contact carries its own port).
    """
    contacts: list[str] = []
    for block in re.split(r"^-{10,}.*$", messages, flags=re.M):
        if "message received" not in block:
            continue
        start = block.find("SIP/2.0 2")
        if start < 0:
            continue
        message = block[start:]
        cseq = _CSEQ.search(message)
        contact = _CONTACT.search(message)
        if cseq and contact and cseq.group(1).upper() == method.upper():
            contacts.append(contact.group(1).strip())
    return contacts


def _port_bound(port: int, kind: Literal["udp", "tcp"]) -> bool:
    """True when someone holds `port` (our own bind attempt fails with EADDRINUSE)."""
    sock_type = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, sock_type) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
        return False


class SippUas:
    """A SIPp UAS running in the background until stopped, e.g. behind Kamailio.

    Use as a context manager or call `start()` / `stop()`. `stop()` sends SIGUSR1, which
    makes SIPp take no new calls, finish the ones in progress (including their `timewait`)
    and write a final statistics row; the result tells how many calls this UAS answered.
    """

    def __init__(
        self,
        scenario: str | os.PathLike[str] = "uas",
        *,
        transport: Transport = "u1",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        workdir: str | os.PathLike[str] | None = None,
        stop_timeout: float = 15.0,
    ) -> None:
        self.port = port if port is not None else free_ports(1)[0]
        self.transport: Transport = transport
        self._scenario = scenario
        self._extra_args = list(extra_args)
        self._workdir = workdir
        self._stop_timeout = stop_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd: _Command | None = None
        self.result: SippResult | None = None

    @property
    def address(self) -> str:
        """`host:port` of this UAS."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def sip_uri(self) -> str:
        """The SIP URI to put in a dispatcher list (with `;transport=tcp` over TCP)."""
        suffix = "" if self.transport == "u1" else ";transport=tcp"
        return f"sip:{LOOPBACK}:{self.port}{suffix}"

    def start(self, ready_timeout: float = 10.0) -> SippUas:
        """Start SIPp and return once it holds its port."""
        self._tmp = tempfile.TemporaryDirectory(prefix="sipp-uas-", dir=self._workdir)
        tmp = Path(self._tmp.name)
        self._cmd = _build_command(
            self._scenario,
            None,
            tmp,
            transport=self.transport,
            local_port=self.port,
            calls=None,
            rate=None,
            service=None,
            pause_ms=None,
            max_concurrent=None,
            recv_timeout_ms=None,
            timeout=None,
            stat_period=1,
            extra_args=self._extra_args,
        )
        self._stdout = open(tmp / "stdout.txt", "wb")  # noqa: SIM115 - closed in stop()
        self._stderr = open(tmp / "stderr.txt", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._cmd.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            cwd=tmp,
        )
        kind: Literal["udp", "tcp"] = "udp" if self.transport == "u1" else "tcp"
        deadline = time.monotonic() + ready_timeout
        while not _port_bound(self.port, kind):
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"sipp UAS exited at start:\n{self.describe()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"sipp UAS did not bind {self.address}")
            time.sleep(0.02)
        return self

    def stop(self) -> SippResult:
        """Stop gracefully (SIGUSR1), then SIGTERM, then SIGKILL; return the final stats."""
        if self.result is not None:
            return self.result
        proc, cmd, tmp = self._proc, self._cmd, self._tmp
        if proc is None or cmd is None or tmp is None:
            raise RuntimeError("SippUas was not started")
        timed_out = False
        if proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)
            try:
                proc.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._stdout.close()
        self._stderr.close()
        base = Path(tmp.name)
        self.result = _result(
            cmd,
            proc.returncode if proc.returncode is not None else -9,
            _read(base / "stdout.txt"),
            _read(base / "stderr.txt"),
            timed_out=timed_out,
        )
        tmp.cleanup()
        return self.result

    async def astop(self) -> SippResult:
        """`stop()` without blocking the event loop."""
        return await asyncio.to_thread(self.stop)

    def describe(self) -> str:
        """Output so far, for assertion messages."""
        if self.result is not None:
            return self.result.describe()
        if self._tmp is None:
            return "not started"
        base = Path(self._tmp.name)
        return _read(base / "stderr.txt")[-2000:] + _read(base / "stdout.txt")[-2000:]

    def __enter__(self) -> SippUas:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
