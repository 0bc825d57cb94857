"""Which real peers a test needs, and what happens when one is missing.

A test names its peers with ``@pytest.mark.peer("sipp", "kamailio")`` (or calls
`require_peer` inside the test). Locally a missing peer skips the test, and pytest's
``-rs`` summary lists it. In CI ``CHORUS_REQUIRE_PEERS=1`` turns the same miss into a
failure, so a green run means every real peer ran: ``make test`` installs all of them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.peers.baresip import baresip_available
from tests.peers.kamailio import kamailio_available
from tests.peers.sipp import sipp_available

REQUIRE_ENV = "CHORUS_REQUIRE_PEERS"
SIPP_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
ANSIBLE_TOOLS = ("ansible-playbook", "ansible-lint")


def _system_python_has(module: str) -> Callable[[], bool]:
    """A module of a Debian python3-* package, importable by the system Python (not the venv)."""

    @functools.cache  # one child process per session, not per test
    def check() -> bool:
        try:
            done = subprocess.run(
                ["/usr/bin/python3", "-c", f"import {module}"], capture_output=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return done.returncode == 0

    return check


def _on_path(*names: str) -> Callable[[], bool]:
    return lambda: any(shutil.which(name) is not None for name in names)


# name -> (is it here?, what installs it)
PEERS: dict[str, tuple[Callable[[], bool], str]] = {
    "sipp": (sipp_available, "sipp (Debian sip-tester)"),
    "sipp-pcap": (SIPP_PCAP.exists, f"{SIPP_PCAP} (Debian sip-tester)"),
    "kamailio": (kamailio_available, "kamailio (Debian kamailio, kamailio-tls-modules)"),
    "baresip": (baresip_available, "baresip with its audio modules (Debian baresip-core)"),
    "prosody": (_on_path("prosody"), "prosody (Debian prosody)"),
    "chromium": (_on_path("chromium", "chromium-headless-shell"), "chromium (Debian chromium)"),
    "ansible": (
        lambda: all((Path(sys.executable).parent / n).exists() for n in ANSIBLE_TOOLS),
        "ansible-playbook and ansible-lint in the venv (pip install -e '.[test]')",
    ),
    "xmllint": (_on_path("xmllint"), "xmllint (Debian libxml2-utils)"),
    "keepalived": (
        lambda: Path("/usr/sbin/keepalived").exists() or _on_path("keepalived")(),
        "keepalived (Debian keepalived)",
    ),
    "aioxmpp": (
        _system_python_has("aioxmpp"),
        "aioxmpp for /usr/bin/python3 (Debian python3-aioxmpp)",
    ),
    "aiortc": (
        lambda: importlib.util.find_spec("aiortc") is not None,
        "aiortc in the venv (pip install -e '.[test]')",
    ),
}


def peers_required() -> bool:
    """True when a missing peer must fail the test (CI) rather than skip it."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def missing_peers(*names: str) -> list[str]:
    """The named peers that are not installed here, described by what installs them."""
    unknown = [name for name in names if name not in PEERS]
    if unknown:
        raise KeyError(f"unknown peer(s) {unknown}; known: {sorted(PEERS)}")
    return [PEERS[name][1] for name in names if not PEERS[name][0]()]


def require_peer(*names: str) -> None:
    """Skip, or under CHORUS_REQUIRE_PEERS fail, when any named peer is missing."""
    missing = missing_peers(*names)
    if not missing:
        return
    reason = "not installed: " + ", ".join(missing)
    if peers_required():
        pytest.fail(f"{REQUIRE_ENV}=1 and a peer is {reason}", pytrace=False)
    pytest.skip(reason)
