"""Run a daemon the way systemd would from its unit file and drop-ins (without systemd).

The tests of ansible/ start Kamailio, Prosody, FreeSWITCH and Chorus from exactly what the
playbook installed: the command lines are read from the unit (deploy/systemd) and its
``<unit>.d/*.conf`` drop-ins as systemd.service(5) reads them — ``Environment=`` accumulates,
an empty ``ExecStart=`` / ``ExecStartPre=`` resets the list, ``${NAME}`` expands — and run in
a session of their own: the ``ExecStartPre`` checks first, then ``ExecStart`` in the
foreground, its output in a log file. User, sandboxing and limits are systemd's and are left
out: the tests run as themselves.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

__all__ = ["UnitProcess", "unit_command"]


def unit_command(unit: Path) -> tuple[list[list[str]], list[str]]:
    """ExecStartPre commands and ExecStart of ``unit`` with its drop-ins, as systemd reads them.

    ``Environment=`` accumulates, an empty ``ExecStart=`` / ``ExecStartPre=`` resets, and
    ``${NAME}`` is replaced by the environment's value (systemd.service(5), "Command lines").
    """
    env: dict[str, str] = {}
    pre: list[str] = []
    start: list[str] = []
    for path in [unit, *sorted(unit.parent.joinpath(unit.name + ".d").glob("*.conf"))]:
        section = ""
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line
                continue
            key, _, value = line.partition("=")
            if section != "[Service]":
                continue
            if key == "Environment":
                env.update(item.partition("=")[::2] for item in shlex.split(value))
            elif key == "ExecStartPre":
                pre = pre + [value] if value else []
            elif key == "ExecStart":
                start = [value] if value else []
    assert len(start) == 1, f"{unit}: ExecStart {start}"

    def expand(command: str) -> list[str]:
        text = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], command)
        return shlex.split(text.lstrip("-@+!"))

    return [expand(c) for c in pre], expand(start[0])


@dataclass
class UnitProcess:
    """One daemon started from its unit, in a session of its own; stopped with SIGTERM, then
    its whole process group killed."""

    name: str
    unit: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> UnitProcess:
        pre, argv = unit_command(self.unit)
        for command in pre:
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, f"{self.name}: {command}:\n{done.stdout}{done.stderr}"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
        if self._log is not None:
            self._log.close()

    def wait_ready(self, ready: Callable[[], object], timeout: float = 60.0) -> None:
        """Poll ``ready`` until true; AssertionError (with the log) if it exits or times out."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.alive(), f"{self.name} exited:\n{self.log()[-6000:]}"
            assert time.monotonic() < deadline, f"{self.name} not ready:\n{self.log()[-6000:]}"
            time.sleep(0.1)
