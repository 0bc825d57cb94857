"""Run a real Chorus server (``chorus serve``) as a subprocess on free loopback ports."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.peers.ports import free_ports

ROOT = Path(__file__).resolve().parents[2]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


class ChorusProcess:
    """``with ChorusProcess() as chorus:`` — a server on free ports, stopped with SIGTERM."""

    def __init__(self, overrides: dict[str, dict[str, Any]] | None = None) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="chorus-test-"))
        self.sip_port, self.tls_port = free_ports(2)
        rtp_low = 20000 + (os.getpid() * 7 + self.sip_port) % 16000 // 2 * 2
        sections: dict[str, dict[str, Any]] = {
            "sip": {
                "listen": [
                    f"udp:127.0.0.1:{self.sip_port}",
                    f"tcp:127.0.0.1:{self.sip_port}",
                    f"tls:127.0.0.1:{self.tls_port}",
                ],
            },
            "rtp": {"port_range": f"{rtp_low}-{rtp_low + 3999}"},
            # Port 0: MSRP ports reach clients through SDP a=path, never up front.
            "msrp": {"listen": ["tls:127.0.0.1:0", "tcp:127.0.0.1:0"]},
            "server": {
                "spool_dir": str(self.workdir / "spool"),
                "log_level": "INFO",
                "trace_sip": str(self.workdir / "sip.trace"),
            },
        }
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        self.config_path = self.workdir / "chorus.toml"
        lines = []
        for section, values in sections.items():
            lines.append(f"[{section}]")
            lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        self.config_path.write_text("\n".join(lines) + "\n")
        self.log_path = self.workdir / "chorus.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    def start(self, timeout: float = 60.0) -> ChorusProcess:
        """Start ``chorus serve`` and wait for its ready line. ``timeout`` is a bound on a
        hung start, not a speed check: on a loaded machine a start took over 20 s. A start
        that fails kills the process, or it would outlive the test and load the machine."""
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "control.cli", "serve", "--config", str(self.config_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        ready = threading.Event()

        def watch() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                if b"chorus ready" in line:
                    ready.set()

        threading.Thread(target=watch, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=5.0)
                raise RuntimeError(f"chorus did not start:\n{self.log()}")
        return self

    def stop(self, timeout: float = 15.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.returncode = self.process.returncode
        return self.returncode

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""

    def trace(self) -> str:
        try:
            return (self.workdir / "sip.trace").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> ChorusProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
