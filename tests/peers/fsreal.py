"""A REAL FreeSWITCH 1.10 node, for the tests that have one: ``FREESWITCH_BIN`` names its
``freeswitch`` binary (with mod_conference, mod_sofia, mod_event_socket, mod_spandsp,
mod_opus installed where that binary loads modules from).

The node runs exactly deploy/freeswitch's config, copied to a temp dir with vars.xml's
parameters set for free loopback ports (`render`), and unprivileged (PEERS.md, FreeSWITCH
1.10.12): ``-nf -nc -np`` (foreground, no console, no SCHED_FIFO — as root it would starve a
2-core box) and every directory flag FreeSWITCH has, except ``-base``/``-mod`` (the installed
modules), pointing into the temp dir. It counts as up once ``sofia status profile chorus``
says RUNNING: the Event Socket answers before the SIP profile runs.

FreeSWITCH is not installable on this machine or in CI: without ``FREESWITCH_BIN`` the tests
that need one skip (`freeswitch_bin_fixture`, the suite's only skip that
``CHORUS_REQUIRE_PEERS=1`` leaves a skip, and only for this reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers.eslfake import operator
from tests.peers.ports import LOOPBACK, free_ports

__all__ = [
    "BIN_ENV",
    "DEPLOY",
    "SKIP_REASON",
    "RealFreeSwitch",
    "freeswitch_bin_fixture",
    "render",
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "freeswitch"
BIN_ENV = "FREESWITCH_BIN"
SKIP_REASON = f"{BIN_ENV} is not set: no FreeSWITCH 1.10 binary to run"
PROFILE = "chorus"  # deploy/freeswitch/sip_profiles/chorus.xml
# freeswitch -help, "Options to control locations of files" (1.10), but -base and -mod.
DIRECTORIES = (
    "log",
    "run",
    "db",
    "htdocs",
    "scripts",
    "temp",
    "grammar",
    "certs",
    "recordings",
    "storage",
    "cache",
    "sounds",
)
RTP_PORTS = 98  # per node: 49 legs (FreeSWITCH rounds an odd end port down)
_RANGES = itertools.count()


def render(dest: Path, **values: str) -> Path:
    """deploy/freeswitch copied to ``dest`` with vars.xml values replaced."""
    shutil.copytree(DEPLOY, dest)
    text = (dest / "vars.xml").read_text()
    for name, value in values.items():
        text, count = re.subn(rf'data="{name}=[^"]*"', f'data="{name}={value}"', text)
        assert count == 1, name
    (dest / "vars.xml").write_text(text)
    return dest


@pytest.fixture(name="freeswitch_bin")
def freeswitch_bin_fixture() -> str:
    """The FreeSWITCH binary to run; skips the test without one."""
    binary = os.environ.get(BIN_ENV)
    if not binary:
        pytest.skip(SKIP_REASON)
    return binary


@dataclass
class RealFreeSwitch:
    """One FreeSWITCH process from deploy/freeswitch, as one `[freeswitch] nodes` entry."""

    binary: str
    workdir: Path
    password: str = "chorus-real-esl"
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.sip_port, self.esl_port = free_ports(2)
        # Even, below 60000; nodes of one test run never share a range.
        self.rtp_start = 30000 + (os.getpid() + next(_RANGES)) % 300 * 100
        self.rtp_end = self.rtp_start + RTP_PORTS

    @property
    def config(self) -> dict[str, str]:
        return {
            "sip": f"{LOOPBACK}:{self.sip_port}",
            "esl": f"{LOOPBACK}:{self.esl_port}",
            "password": self.password,
        }

    @property
    def name(self) -> str:
        return f"{LOOPBACK}:{self.sip_port}"

    def argv(self) -> list[str]:
        argv = [self.binary, "-nf", "-nc", "-np", "-nonat", "-conf", str(self.workdir / "conf")]
        for flag in DIRECTORIES:
            argv += [f"-{flag}", str(self.workdir / flag)]
        return argv

    async def start(self, timeout: float = 90.0) -> RealFreeSwitch:
        """Render the config, start FreeSWITCH, return once its SIP profile runs."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        render(
            self.workdir / "conf",
            chorus_sip_ip=LOOPBACK,
            chorus_sip_port=str(self.sip_port),
            chorus_rtp_ip=LOOPBACK,
            chorus_rtp_start=str(self.rtp_start),
            chorus_rtp_end=str(self.rtp_end),
            chorus_esl_ip=LOOPBACK,
            chorus_esl_port=str(self.esl_port),
            chorus_esl_password=self.password,
            chorus_control_net=f"{LOOPBACK}/32",
        )
        for flag in DIRECTORIES:
            (self.workdir / flag).mkdir(exist_ok=True)
        with (self.workdir / "console.log").open("wb") as console:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # the first start also writes its DTLS certificates
        while loop.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"FreeSWITCH exited {self.proc.returncode}\n{self.log()}")
            with contextlib.suppress(OSError):  # refused, not yet accepted, no answer yet
                status = await asyncio.wait_for(self.api(f"sofia status profile {PROFILE}"), 5)
                if "RUNNING" in status:
                    return self
            await asyncio.sleep(0.2)
        raise AssertionError(f"FreeSWITCH did not bring profile {PROFILE} up\n{self.log()}")

    async def api(self, command: str) -> str:
        """``api <command>`` from an ESL client of our own (what ``fs_cli -x`` does)."""
        return await operator(LOOPBACK, self.esl_port, self.password, command)

    def in_rtp_range(self, port: int) -> bool:
        return self.rtp_start <= port <= self.rtp_end

    def kill(self) -> None:
        """kill -9: no SHUTDOWN event, no BYE, the Event Socket just drops."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    async def stop(self) -> None:
        """SIGTERM (a clean stop takes 5-6 s), SIGKILL if it will not go."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 20)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self, tail: int = 6000) -> str:
        texts = []
        for path in (self.workdir / "console.log", self.workdir / "log" / "freeswitch.log"):
            with contextlib.suppress(OSError):
                texts.append(f"--- {path.name} ---\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(texts)
