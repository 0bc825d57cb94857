"""Run the Chorus edge proxy (deploy/kamailio/kamailio.cfg) on free loopback ports.

The config takes its addresses, ports, dispatcher list and conference domain as
preprocessor defines (`kamailio -A NAME=VALUE`, string values in double quotes), so each
test gets its own instance: SIP on one UDP+TCP port, JSON-RPC on another TCP port, the
dispatcher list and the log in a temporary directory. With `tls=EdgeTls(...)` the edge
also listens for SIP over TLS (`WITH_TLS`) on a port of its own and uses those files for
both sides: phones connecting to it, and it connecting to control nodes over TLS.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.peers.ports import LOOPBACK, free_ports

__all__ = [
    "CONFIG",
    "DEFAULT_CONF_DOMAIN",
    "EdgeTls",
    "KamailioProcess",
    "check_config",
    "define_args",
    "kamailio_available",
]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "kamailio" / "kamailio.cfg"
DEFAULT_CONF_DOMAIN = "conference.example.com"
KAMAILIO = "kamailio"


@dataclass(frozen=True, slots=True)
class EdgeTls:
    """The edge's TLS material (PEM paths): its own certificate and key, and `ca_list`,
    the certificates it trusts when it connects to a control node (checked when
    `verify` is set)."""

    certificate: Path
    private_key: Path
    ca_list: Path
    verify: bool = True

    def defines(self, port: int) -> dict[str, str | int | bool]:
        return {
            "WITH_TLS": True,
            "TLS_PORT": port,
            "TLS_CERTIFICATE": str(self.certificate),
            "TLS_PRIVATE_KEY": str(self.private_key),
            "TLS_CA_LIST": str(self.ca_list),
            "TLS_VERIFY": int(self.verify),
        }


def kamailio_available() -> bool:
    """True when the `kamailio` binary is on PATH (Debian puts it in /usr/sbin)."""
    return _binary() is not None


def _binary() -> str | None:
    found = shutil.which(KAMAILIO)
    if found is None and os.path.exists("/usr/sbin/kamailio"):
        found = "/usr/sbin/kamailio"
    return found


def define_args(defines: Mapping[str, str | int | bool]) -> list[str]:
    """Turn defines into `-A` arguments: strings are quoted, ints bare, True bare name.

    Kamailio's `-A NAME=VALUE` defines NAME as the token VALUE, so a string for a
    `modparam` or a comparison must carry its own double quotes (`-A 'X="a b"'`).
    """
    args: list[str] = []
    for name, value in defines.items():
        if value is True:
            args += ["-A", name]
        elif value is False:
            continue
        elif isinstance(value, int):
            args += ["-A", f"{name}={value}"]
        else:
            args += ["-A", f'{name}="{value}"']
    return args


def check_config(
    config: str | os.PathLike[str] = CONFIG,
    defines: Mapping[str, str | int | bool] | None = None,
    *,
    raw_defines: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run `kamailio -c` on the config; `raw_defines` are extra `-A` values as given."""
    binary = _binary()
    if binary is None:
        raise FileNotFoundError("kamailio is not installed")
    argv = [binary, "-c", "-f", str(config), *define_args(defines or {})]
    for raw in raw_defines:
        argv += ["-A", raw]
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class KamailioProcess:
    """One Kamailio edge proxy in the foreground (`-DD -E`), stopped on exit.

    `destinations` are the SIP URIs of dispatcher set `setid` (the control nodes). Ports
    default to free ones; `tls` adds a TLS listener on `tls_port`. The log (stderr) goes
    to `log_path` and stays readable after stop for debugging via `log()`.
    """

    def __init__(
        self,
        destinations: Iterable[str] = (),
        *,
        setid: int = 1,
        sip_port: int | None = None,
        rpc_port: int | None = None,
        conf_domain: str = DEFAULT_CONF_DOMAIN,
        defines: Mapping[str, str | int | bool] | None = None,
        tls: EdgeTls | None = None,
        tls_port: int | None = None,
        config: str | os.PathLike[str] = CONFIG,
        shm_mb: int = 128,
        pkg_mb: int = 16,
        children: int = 2,
        workdir: str | os.PathLike[str] | None = None,
        ready_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if sip_port is None or rpc_port is None:
            sip_free, rpc_free = free_ports(2)
            sip_port = sip_port if sip_port is not None else sip_free
            rpc_port = rpc_port if rpc_port is not None else rpc_free
        self.sip_port = sip_port
        self.rpc_port = rpc_port
        self.tls = tls
        self.tls_port = 0
        if tls is not None:
            self.tls_port = tls_port or next(
                p for p in free_ports(3) if p not in (sip_port, rpc_port)
            )
        self.setid = setid
        self.destinations = list(destinations)
        self.conf_domain = conf_domain
        self._defines: dict[str, str | int | bool] = dict(defines or {})
        self._config = Path(config)
        self._shm_mb = shm_mb
        self._pkg_mb = pkg_mb
        self._children = children
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="kamailio-", dir=workdir)
        self.rundir = Path(self._tmp.name)
        self.dispatcher_list = self.rundir / "dispatcher.list"
        self.pid_file = self.rundir / "kamailio.pid"
        self.log_path = self.rundir / "kamailio.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def sip_address(self) -> str:
        """`host:port` for SIPp and other UACs."""
        return f"{LOOPBACK}:{self.sip_port}"

    @property
    def tls_address(self) -> str:
        """`host:port` of the TLS listener (with `tls` only)."""
        if self.tls is None:
            raise RuntimeError("this Kamailio has no TLS listener")
        return f"{LOOPBACK}:{self.tls_port}"

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.rpc_port}/RPC"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def argv(self) -> list[str]:
        """The command line, with every parameter of the config set."""
        binary = _binary()
        if binary is None:
            raise FileNotFoundError("kamailio is not installed")
        defines: dict[str, str | int | bool] = {
            "SIP_PORT": self.sip_port,
            "RPC_PORT": self.rpc_port,
            "DS_SETID": self.setid,
            "DS_LIST": str(self.dispatcher_list),
            "CONF_DOMAIN": self.conf_domain,
            "CHILDREN": self._children,
            "TCP_CHILDREN": self._children,
        }
        if self.tls is not None:
            defines.update(self.tls.defines(self.tls_port))
        defines.update(self._defines)
        return [
            binary,
            "-f",
            str(self._config),
            "-DD",
            "-E",
            "-m",
            str(self._shm_mb),
            "-M",
            str(self._pkg_mb),
            "-P",
            str(self.pid_file),
            "-Y",
            str(self.rundir),
            *define_args(defines),
        ]

    def write_dispatcher_list(self) -> None:
        """Write the list file: one `setid uri flags priority` line per destination."""
        lines = [f"{self.setid} {uri} 0 0\n" for uri in self.destinations]
        self.dispatcher_list.write_text("".join(lines) or "\n")

    def start(self) -> KamailioProcess:
        """Start Kamailio and return once its JSON-RPC answers `core.version`."""
        self.write_dispatcher_list()
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log_file = log
        self._proc = subprocess.Popen(
            self.argv(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.rundir,
            start_new_session=True,
        )
        deadline = time.monotonic() + self._ready_timeout
        while True:
            if self._proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"kamailio exited at start:\n{self.log()[-4000:]}")
            if self._rpc_ready():
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kamailio not ready on {self.rpc_url}:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def _rpc_ready(self) -> bool:
        try:
            self.rpc_call("core.version")
        except (OSError, ValueError):
            return False
        return True

    def rpc_call(self, method: str, *params: object, timeout: float = 5.0) -> object:
        """A blocking JSON-RPC call (for setup code; the product uses control.kamailio)."""
        body = {"jsonrpc": "2.0", "method": method, "id": 1}
        if params:
            body["params"] = list(params)
        request = urllib.request.Request(
            self.rpc_url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply = json.loads(response.read())
        if "error" in reply:
            raise ValueError(f"{method}: {reply['error']}")
        return reply.get("result")

    def stop(self) -> int | None:
        """SIGTERM the main process; SIGKILL its process group after `stop_timeout`.

        Kamailio's main process takes its workers down with it on SIGTERM; the process
        group (a session of its own, started by us) catches any worker that lingers.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(self._stop_timeout)
                except subprocess.TimeoutExpired:
                    self._kill_group(proc.pid)
                    proc.wait()
            self._reap_group(proc.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return proc.returncode if proc is not None else None

    def _reap_group(self, pgid: int) -> None:
        deadline = time.monotonic() + self._stop_timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                return
            time.sleep(0.05)
        self._kill_group(pgid)

    @staticmethod
    def _kill_group(pgid: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    def log(self) -> str:
        """Kamailio's log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cleanup(self) -> None:
        """Remove the temporary directory (call after reading the log)."""
        self._tmp.cleanup()

    def __enter__(self) -> KamailioProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is not None:
            print(f"--- kamailio log ({self.log_path}) ---\n{self.log()[-6000:]}")
        self.cleanup()
