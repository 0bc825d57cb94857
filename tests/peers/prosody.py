"""Run a real Prosody (Debian ``prosody``) on free loopback ports, with deploy/prosody's config.

The config reads every instance-specific value from the environment (``ENV_NAME`` in
Prosody's config is ``os.getenv("NAME")``), so a test runs that same file: c2s, s2s and the
component port on free ports of 127.0.0.1, data, log and pid in a temporary directory, a
self-signed certificate for the XMPP domain (c2s requires encryption), the component's secret.
Test users are made with ``prosodyctl register`` in the temporary data dir before start.
Prosody runs in the foreground (``-F``) as root here (``run_as_root``), so the pid is the
child's (PEERS.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.peers.ports import LOOPBACK, free_port

__all__ = [
    "CONFIG",
    "ProsodyProcess",
    "check_config",
    "chorus_config",
    "client_ssl_context",
    "prosody_available",
    "self_signed_certificate",
]

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "prosody" / "prosody.cfg.lua"


def prosody_available() -> bool:
    return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None


def self_signed_certificate(directory: Path, domain: str) -> tuple[Path, Path]:
    """A self-signed PEM certificate and key for ``domain`` in ``directory`` (2 days)."""
    cert, key = directory / f"{domain}.crt", directory / f"{domain}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", f"/CN={domain}"]
        + ["-addext", f"subjectAltName=DNS:{domain}"],
        check=True,
        capture_output=True,
    )
    return cert, key


def client_ssl_context() -> ssl.SSLContext:
    """What a test client uses for STARTTLS to the test server's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_config(env: dict[str, str], config: Path = CONFIG) -> subprocess.CompletedProcess[str]:
    """``prosodyctl check config`` on ``config`` with ``env`` (the instance's variables)."""
    return subprocess.run(
        ["prosodyctl", "--config", str(config), "check", "config"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class ProsodyProcess:
    """One Prosody: ``xmpp_domain`` users, the component ``component_jid``, MUC ``muc_domain``."""

    def __init__(
        self,
        *,
        xmpp_domain: str = "xmpp.localhost",
        component_jid: str = "sip.localhost",
        muc_domain: str = "conference.xmpp.localhost",
        component_secret: str = "chorus-test-secret",
        muc_secret: str = "chorus-test-muc-secret",
        users: dict[str, str] | None = None,
        config: Path = CONFIG,
    ) -> None:
        self.config = config  # deploy/prosody's, or a variant of it (bench: limits lifted)
        self.xmpp_domain = xmpp_domain
        self.component_jid = component_jid
        self.muc_domain = muc_domain
        self.component_secret = component_secret
        self.muc_secret = muc_secret
        self.users = dict(users or {})
        self.dir = Path(tempfile.mkdtemp(prefix="chorus-prosody-"))
        self.c2s_port = free_port("tcp")
        self.s2s_port = free_port("tcp")
        self.component_port = free_port("tcp")
        cert, key = self_signed_certificate(self.dir, xmpp_domain)
        self.env = {
            "CHORUS_XMPP_DOMAIN": xmpp_domain,
            "CHORUS_COMPONENT_JID": component_jid,
            "CHORUS_MUC_DOMAIN": muc_domain,
            "CHORUS_COMPONENT_SECRET": component_secret,
            "CHORUS_MUC_SECRET": muc_secret,
            "CHORUS_XMPP_INTERFACE": LOOPBACK,
            "CHORUS_COMPONENT_INTERFACE": LOOPBACK,
            "CHORUS_C2S_PORT": str(self.c2s_port),
            "CHORUS_S2S_PORT": str(self.s2s_port),
            "CHORUS_COMPONENT_PORT": str(self.component_port),
            "CHORUS_PROSODY_RUN_AS_ROOT": "1" if os.geteuid() == 0 else "0",
            "CHORUS_PROSODY_DATA": str(self.dir / "data"),
            "CHORUS_PROSODY_LOG": str(self.dir / "prosody.log"),
            "CHORUS_PROSODY_LOG_LEVEL": "debug",
            "CHORUS_PROSODY_PIDFILE": str(self.dir / "prosody.pid"),
            "CHORUS_PROSODY_CERTS": str(self.dir),
            "CHORUS_TLS_CERT": str(cert),
            "CHORUS_TLS_KEY": str(key),
        }
        (self.dir / "data").mkdir()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def prosodyctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["prosodyctl", "--config", str(self.config), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def register(self, user: str, password: str) -> None:
        done = self.prosodyctl("register", user, self.xmpp_domain, password)
        if done.returncode != 0:
            raise RuntimeError(f"prosodyctl register {user}: {done.stdout}{done.stderr}")
        self.users[user] = password

    def start(self, *, timeout: float = 30.0) -> ProsodyProcess:
        for user, password in list(self.users.items()):
            self.register(user, password)
        log = (self.dir / "stdout.log").open("ab")
        self._proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not all(self._listening(p) for p in (self.c2s_port, self.component_port)):
            if self._proc.poll() is not None:
                raise RuntimeError(f"prosody exited {self._proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"prosody not listening after {timeout} s:\n{self.log()}")
            time.sleep(0.05)
        return self

    @staticmethod
    def _listening(port: int) -> bool:
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: the way Prosody goes away in the failure tests."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def stop(self) -> int | None:
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
        return self._proc.returncode

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "prosody.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-20000:])
        return "\n".join(parts)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ProsodyProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()


def chorus_config(
    prosody: ProsodyProcess,
    spool: Path,
    sip_port: int,
    *,
    transports: tuple[str, ...] = ("udp",),
    proxy_port: int | None = None,
    muc: bool = False,
    **xmpp: Any,
) -> dict[str, Any]:
    """The config table of a Chorus whose gateway is ``prosody``'s component: SIP on
    ``sip_port`` (each of ``transports``), out through ``proxy_port`` when given, MSRP over
    TCP on a free port, no admin API; ``muc``: also the MUC domain, as Chorus's second
    component (deploy/prosody); ``xmpp``: more ``[xmpp]`` keys."""
    sip: dict[str, Any] = {"listen": [f"{t}:{LOOPBACK}:{sip_port}" for t in transports]}
    if proxy_port is not None:
        sip["outbound_proxy"] = f"sip:{LOOPBACK}:{proxy_port}"
    gateway: dict[str, Any] = {
        "component_jid": prosody.component_jid,
        "component_secret": prosody.component_secret,
        "server": f"{LOOPBACK}:{prosody.component_port}",
        "xmpp_domains": [prosody.xmpp_domain],
    }
    if muc:
        gateway |= {"muc_domain": prosody.muc_domain, "muc_secret": prosody.muc_secret}
    return {
        "sip": sip,
        "msrp": {"listen": [f"tcp:{LOOPBACK}:0"]},
        "server": {"spool_dir": str(spool)},
        "api": {"enabled": False},
        "xmpp": gateway | xmpp,
    }
