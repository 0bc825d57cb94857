"""ansible/: the playbook that provisions the cluster, checked and run for real.

``ansible-playbook --syntax-check`` and ``ansible-lint`` (production profile) on site.yml with
both shipped inventories; then one real run of site.yml against localhost (connection local,
no become) with an inventory that puts every path under a temporary directory
(``site_root``), every port on a free loopback port, service management off
(``site_service_manager: none``) and no system users (``site_create_users: false``): every
file renders and passes its ``validate:`` (kamailio -c, xmllint, prosodyctl check config,
chorus check-config). The rendered files are checked against deploy/ (the one source), and
Kamailio, Prosody and Chorus are started from exactly what was rendered: the command lines
are read from the installed deploy/systemd units and their Ansible drop-ins. A SIPp caller
joins a room through Kamailio and an XMPP user writes through Prosody to a SIP user (a SIPp
UAS). FreeSWITCH is rendered and validated always, started only with ``FREESWITCH_BIN``.
"""

from __future__ import annotations

import asyncio
import grp
import json
import os
import pwd
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from slixmpp import ClientXMPP

from tests.peers.chatclient import ChatClient
from tests.peers.ports import LOOPBACK
from tests.peers.prosody import client_ssl_context, self_signed_certificate
from tests.peers.sipp import SippUas, run_sipp_async, scenario_path
from tests.peers.units import UnitProcess, unit_command

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE = ROOT / "ansible"
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
PLAYBOOK = BIN / "ansible-playbook"
LINT = BIN / "ansible-lint"
FREESWITCH_BIN = os.environ.get("FREESWITCH_BIN", "")
API_TOKEN = "ansible-test-api-token-0123456789"
ESL_PASSWORD = "ansible-test-esl-password"
COMPONENT_SECRET = "ansible-test-component-secret"
VRRP_SECRET = "vrrp-tst"
# The VRRP file names a real non-loopback interface (keepalived -t refuses lo and unknown
# ones); keepalived is never started, so nothing is sent or added on it.
VRRP_INTERFACE = next((n for n in sorted(os.listdir("/sys/class/net")) if n != "lo"), "eth0")
ROOM = "ansible-room"
CHAT_ROOM = "ansible-chat"

pytestmark = pytest.mark.timeout(900)

# A SIP user that takes one MESSAGE and checks its body (the gateway's outbound leg).
UAS_MESSAGE = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="SIP user taking one MESSAGE">
  <recv request="MESSAGE" crlf="true">
    <action>
      <ereg regexp="hello from xmpp" search_in="body" check_it="true" assign_to="body"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="body"/>
</scenario>
"""


def ansible_env(home: Path) -> dict[str, str]:
    """Ansible's own state (local and remote temp, galaxy cache) under ``home``."""
    return {
        **os.environ,
        "ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_REMOTE_TEMP": str(home / "remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
    }


def run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}:\n{output[-8000:]}"
    return output


# The ports are handed out before a playbook run of a minute or more, so they come from below
# the kernel's ephemeral range (32768-60999), where no port-0 socket of another test lands.
SIGNALLING_PORTS = range(15000, 20000)
MEDIA_PORTS = range(10000, 15000)


def fixed_ports(n: int) -> list[int]:
    """``n`` distinct ports of SIGNALLING_PORTS free on UDP and TCP now."""
    found: list[int] = []
    for port in random.sample(SIGNALLING_PORTS, len(SIGNALLING_PORTS)):
        if all(bindable(port, kind) for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError("no free signalling ports")


def bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def even_range(size: int) -> tuple[int, int]:
    """An even-to-even UDP port range (RTP even, RTCP odd) in MEDIA_PORTS."""
    low = MEDIA_PORTS.start + random.randrange(0, len(MEDIA_PORTS) - size - 2) // 2 * 2
    return low, low + size


@dataclass
class Deployment:
    """What one site.yml run rendered, and the ports it was given."""

    root: Path
    home: Path
    ports: dict[str, int]
    output: str
    inventory: Path

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")


def local_site(root: Path) -> dict[str, Any]:
    """A host of the test: this machine, as this user, every path under ``root``."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    owners = {
        f"{role}_{kind}": name
        for role in ("kamailio", "freeswitch", "prosody", "chorus")
        for kind, name in (("user", user), ("group", group))
    }
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "site_root": str(root),
        "site_service_manager": "none",
        "site_create_users": False,
        "site_install_packages": False,
        **owners,
    }


def vrrp_site() -> dict[str, Any]:
    """The keepalived role's values for a test host: a documentation address (RFC 5737),
    the track script as this user (root in CI: keepalived 2.2.7's -t dies on a non-root
    script_user, ansible/roles/keepalived/defaults)."""
    return {
        "keepalived_virtual_ip": "192.0.2.10/32",
        "keepalived_interface": VRRP_INTERFACE,
        "keepalived_auth_pass": VRRP_SECRET,
        "keepalived_script_user": pwd.getpwuid(os.geteuid()).pw_name,
    }


def write_inventory(tmp: Path) -> tuple[Path, dict[str, int]]:
    names = ["kamailio_sip", "kamailio_rpc", "kamailio_tls", "chorus_sip", "chorus_tls"]
    names += ["chorus_api", "sip_user", "c2s", "s2s", "component", "fs_sip", "fs_esl"]
    ports = dict(zip(names, fixed_ports(len(names)), strict=True))
    certs = tmp / "certs"
    certs.mkdir()
    edge_cert, edge_key = self_signed_certificate(certs, "edge.localhost")
    node_cert, node_key = self_signed_certificate(certs, "node.localhost")
    xmpp_cert, xmpp_key = self_signed_certificate(certs, "xmpp.localhost")
    rtp_low, fs_high = even_range(2402)
    rtp_high, fs_low = rtp_low + 1600, rtp_low + 1602
    on = FREESWITCH_BIN != ""
    variables: dict[str, Any] = {
        **local_site(tmp / "root"),
        # Kamailio edge
        "kamailio_sip_ip": LOOPBACK,
        "kamailio_sip_port": ports["kamailio_sip"],
        "kamailio_rpc_port": ports["kamailio_rpc"],
        "kamailio_shm_mb": 64,
        "kamailio_pkg_mb": 8,
        "kamailio_children": 2,
        "kamailio_tcp_children": 2,
        "kamailio_tls": True,
        "kamailio_tls_port": ports["kamailio_tls"],
        "kamailio_tls_certificate_src": str(edge_cert),
        "kamailio_tls_key_src": str(edge_key),
        "kamailio_tls_ca_list": str(node_cert),
        # FreeSWITCH media node
        "freeswitch_bin": FREESWITCH_BIN or "/usr/bin/freeswitch",
        "freeswitch_verify_unit": on,
        "freeswitch_sip_ip": LOOPBACK,
        "freeswitch_sip_port": ports["fs_sip"],
        "freeswitch_esl_port": ports["fs_esl"],
        "freeswitch_rtp_start": fs_low,
        "freeswitch_rtp_end": fs_high,
        "freeswitch_esl_password": ESL_PASSWORD,
        # Prosody
        "prosody_run_as_root": os.geteuid() == 0,
        "prosody_xmpp_domain": "xmpp.localhost",
        "prosody_component_jid": "sip.localhost",
        "prosody_muc_domain": "conference.xmpp.localhost",
        "prosody_interface": LOOPBACK,
        "prosody_c2s_port": ports["c2s"],
        "prosody_s2s_port": ports["s2s"],
        "prosody_component_port": ports["component"],
        "prosody_log_level": "debug",
        "prosody_tls_certificate_src": str(xmpp_cert),
        "prosody_tls_key_src": str(xmpp_key),
        "prosody_component_secret": COMPONENT_SECRET,
        # Chorus control node
        "chorus_install": "none",
        "chorus_bin": str(BIN / "chorus"),
        "chorus_sip_ip": LOOPBACK,
        "chorus_sip_port": ports["chorus_sip"],
        "chorus_sip_tls_port": ports["chorus_tls"],
        "chorus_rtp_port_range": f"{rtp_low}-{rtp_high - 1}",
        "chorus_msrp_listen": ["tls:127.0.0.1:0", "tcp:127.0.0.1:0"],
        "chorus_api_listen": f"http:127.0.0.1:{ports['chorus_api']}",
        "chorus_api_token": API_TOKEN,
        "chorus_tls_certificate_src": str(node_cert),
        "chorus_tls_key_src": str(node_key),
        # The SIP user the gateway writes to sits behind this proxy (a SIPp UAS).
        "chorus_outbound_proxy": f"sip:127.0.0.1:{ports['sip_user']}",
        "chorus_audio_engine": "freeswitch" if on else "embedded",
        "chorus_drain_timeout": 5,
        "chorus_log_level": "DEBUG",
        **vrrp_site(),
        "keepalived_priority": 150,
    }
    host: dict[str, dict[str, Any]] = {"localhost": {}}
    groups = ("kamailio", "freeswitch", "prosody", "chorus")
    inventory = {
        "all": {
            "hosts": host,
            "vars": variables,
            "children": {name: {"hosts": host} for name in groups},
        }
    }
    path = tmp / "hosts.yml"
    path.write_text(json.dumps(inventory, indent=1))  # JSON is YAML
    return path, ports


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, cluster_run: BackgroundRun
) -> Iterator[Deployment]:
    # cluster_run: started first, so the two runs overlap.
    tmp = tmp_path_factory.mktemp("ansible")
    inventory, ports = write_inventory(tmp)
    home = tmp / "ansible-home"
    output = run(
        [str(PLAYBOOK), "-i", str(inventory), "site.yml"], env=ansible_env(home), timeout=900
    )
    yield Deployment(tmp / "root", home, ports, output, inventory)


@pytest.fixture(scope="module")
def second_run(deployment: Deployment) -> Iterator[BackgroundRun]:
    """The idempotence run of the same inventory on the same tree, started as soon as the
    first run is done: it goes on while the tests that only read the tree (or stop at a check
    task before any write) run; the services start only after it ended (``services``)."""
    argv = [str(PLAYBOOK), "-i", str(deployment.inventory), "site.yml"]
    yield from background(argv, deployment.home, deployment.root.parent / "second-run.log")


def recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.M)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


# Every template is validated by the real program: the run needs them all.
RENDERS = pytest.mark.peer("ansible", "kamailio", "prosody", "xmllint", "keepalived")
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"


@RENDERS
def test_every_file_renders_and_validates(
    deployment: Deployment, second_run: BackgroundRun
) -> None:
    # second_run: started here, so the idempotence run goes on while this and the next tests
    # read the tree (test_a_second_run_changes_nothing waits for it and checks its recap).
    counts = recap(deployment.output)
    assert counts["failed"] == 0 and counts["unreachable"] == 0, counts
    d = deployment
    edge = d.path("/etc/kamailio/chorus-edge.cfg")
    fs_conf = d.path("/etc/freeswitch-chorus")
    prosody = d.path("/etc/prosody/chorus.cfg.lua")
    chorus = d.path("/etc/chorus/chorus.toml")
    vrrp = d.path("/etc/keepalived/keepalived.conf")
    # Each passed its validate: in the run; checked again here with the real tools.
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    for argv in (
        [kamailio, "-c", "-f", str(edge)],
        ["xmllint", "--noout", *map(str, sorted(fs_conf.rglob("*.xml")))],
        ["prosodyctl", "--root", "--config", str(prosody), "check", "config"],
        [str(BIN / "chorus"), "check-config", str(chorus)],
        [KEEPALIVED, "--config-test", "--use-file", str(vrrp)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, f"{shlex.join(argv)}:\n{done.stdout}{done.stderr}"

    # One source: the edge config is deploy/kamailio/kamailio.cfg after the site's defines.
    text = edge.read_text()
    source = (DEPLOY / "kamailio" / "kamailio.cfg").read_text().rstrip("\n")
    assert source in text
    head = text[: text.index(source)]
    assert f"#!define SIP_PORT {d.ports['kamailio_sip']}\n" in head
    assert f"#!define RPC_PORT {d.ports['kamailio_rpc']}\n" in head
    assert "#!define WITH_TLS\n" in head
    assert f'#!define TLS_CERTIFICATE "{d.path("/etc/kamailio/tls/edge.crt")}"' in head
    dispatcher = d.path("/etc/kamailio/chorus-dispatcher.list").read_text()
    assert f"1 sip:127.0.0.1:{d.ports['chorus_sip']} 0 0" in dispatcher

    # keepalived: deploy/keepalived/keepalived.conf after the site's definitions; the track
    # script as it is; the secret file 0600; the real config test refuses a bad priority.
    text = vrrp.read_text()
    source = (DEPLOY / "keepalived" / "keepalived.conf").read_text().rstrip("\n")
    assert source in text
    head = text[: text.index(source)]
    for line in ("$PRIORITY=150", f"$AUTH_PASS={VRRP_SECRET}", "$VIRTUAL_IP=192.0.2.10/32"):
        assert f"{line}\n" in head, head
    assert f"$INTERFACE={VRRP_INTERFACE}\n" in head
    check = d.path("/etc/keepalived/chorus-kamailio-check")
    url = f"http://127.0.0.1:{d.ports['kamailio_rpc']}/RPC"
    assert f"$CHECK_SCRIPT={check} {url} 1.5\n" in head, head
    assert check.read_bytes() == (DEPLOY / "keepalived" / "chorus-kamailio-check").read_bytes()
    assert vrrp.stat().st_mode & 0o777 == 0o600
    bad = d.root.parent / "keepalived-bad.conf"
    bad.write_text(text.replace("$PRIORITY=150\n", "$PRIORITY=300\n"))
    done = subprocess.run([KEEPALIVED, "-t", "-f", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "Priority not valid" in done.stderr, done.stderr
    dropin = d.path("/etc/systemd/system/keepalived.service.d/chorus.conf").read_text()
    assert f"--use-file {vrrp} " in dropin

    # FreeSWITCH: every deploy file as it is, vars.xml with the site's values only.
    for original in sorted((DEPLOY / "freeswitch").rglob("*.xml")):
        copy = fs_conf / original.relative_to(DEPLOY / "freeswitch")
        if original.name != "vars.xml" or original.parent != DEPLOY / "freeswitch":
            assert copy.read_bytes() == original.read_bytes(), copy
    variables = (fs_conf / "vars.xml").read_text()
    assert f'data="chorus_sip_port={d.ports["fs_sip"]}"' in variables
    assert f'data="chorus_esl_password={ESL_PASSWORD}"' in variables
    assert "change-me-chorus-esl" not in variables

    # Prosody: the deploy file with every ENV_ value filled in.
    lua = prosody.read_text()
    assert "ENV_CHORUS_" not in lua
    assert f'tonumber("{d.ports["c2s"]}")' in lua and f'"{COMPONENT_SECRET}"' in lua

    # Chorus: the node joins the edge's cluster and the gateway; secrets from variables.
    toml = chorus.read_text()
    assert f'kamailio_rpc = "http://127.0.0.1:{d.ports["kamailio_rpc"]}/RPC"' in toml
    assert f'token = "{API_TOKEN}"' in toml and f'component_secret = "{COMPONENT_SECRET}"' in toml

    # Units: deploy/systemd as they are, the site's values in a drop-in; keys mode 0640.
    units = d.path("/etc/systemd/system")
    for unit in ("chorus.service", "chorus-kamailio.service", "chorus-prosody.service"):
        assert (units / unit).read_bytes() == (DEPLOY / "systemd" / unit).read_bytes()
        assert (units / f"{unit}.d" / "ansible.conf").is_file()
    # Each unit's command line, as systemd would build it, names only paths under site_root.
    for unit in sorted(units.glob("*.service")):
        pre, argv = unit_command(unit)
        for command in [*pre, argv]:
            paths = [a for a in command[1:] if a.startswith("/")]
            assert paths and all(a.startswith(f"{d.root}/") for a in paths), (unit, command)
    fs_dirs = [a for a in unit_command(units / "chorus-freeswitch.service")[1] if a.startswith("/")]
    assert all(Path(a).is_dir() for a in fs_dirs[1:]), fs_dirs
    for key in ("/etc/kamailio/tls/edge.key", "/etc/chorus/tls/chorus.key"):
        assert d.path(key).stat().st_mode & 0o777 == 0o640


# The syntax check and ansible-lint read only the playbook: they come after the first run, so
# that they run while the idempotence run (second_run) goes on.


@pytest.mark.peer("ansible")
@pytest.mark.parametrize("inventory", ["single", "cluster"])
def test_syntax_check(inventory: str, tmp_path: Path) -> None:
    hosts = f"inventories/{inventory}/hosts.yml"
    out = run([str(PLAYBOOK), "-i", hosts, "--syntax-check", "site.yml"], env=ansible_env(tmp_path))
    assert "playbook: site.yml" in out


@pytest.mark.peer("ansible")
def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    out = run(
        [str(LINT), "--offline", "--profile", "production", "--nocolor"],
        env=ansible_env(tmp_path),
    )
    assert "Passed" in out or "0 failure(s)" in out, out


@RENDERS
@pytest.mark.parametrize(
    ("secret", "task", "message"),
    [
        ("chorus_api_token", "Check the admin API token is set", "set chorus_api_token"),
        (
            "keepalived_auth_pass",
            "Check the pair's address and secret are set",
            "and keepalived_auth_pass (6 to 8",
        ),
    ],
)
def test_a_missing_secret_stops_the_run(
    deployment: Deployment, tmp_path: Path, secret: str, task: str, message: str
) -> None:
    inventory = json.loads(deployment.inventory.read_text())
    del inventory["all"]["vars"][secret]
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps(inventory))
    done = subprocess.run(
        [
            str(PLAYBOOK),
            "-i",
            str(path),
            "site.yml",
            "--start-at-task",
            task,
        ],
        cwd=ANSIBLE,
        env=ansible_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0
    assert message in done.stdout, done.stdout[-4000:]


def write_cluster_inventory(tmp_path: Path) -> Path:
    """inventories/cluster's shape, each host this machine under a root of its own."""
    hosts: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(["edge1", "edge2"]):
        hosts[name] = {"kamailio_sip_port": 25060 + i, "kamailio_rpc_port": 25070 + i}
    for i, name in enumerate(["control1", "control2"]):
        hosts[name] = {"chorus_sip_port": 26060 + 10 * i, "chorus_sip_tls_port": 0}
    for i, name in enumerate(["media1", "media2"]):
        hosts[name] = {"freeswitch_sip_port": 27080 + i, "freeswitch_esl_port": 27021 + i}
    hosts["xmpp1"] = {"prosody_c2s_port": 28222}
    for name, values in hosts.items():
        values.update(local_site(tmp_path / name), ansible_host=LOOPBACK)
    # The pair's priorities, per host as in inventories/cluster (edge1 holds the address).
    hosts["edge1"]["keepalived_priority"] = 150
    hosts["edge2"]["keepalived_priority"] = 100
    groups = {"kamailio": ["edge1", "edge2"], "chorus": ["control1", "control2"]}
    groups |= {"freeswitch": ["media1", "media2"], "prosody": ["xmpp1"]}
    variables = {
        "kamailio_rpc_ip": LOOPBACK,
        "chorus_install": "none",
        "chorus_bin": str(BIN / "chorus"),
        "chorus_api_token": API_TOKEN,
        "freeswitch_esl_password": ESL_PASSWORD,
        "freeswitch_verify_unit": False,
        "prosody_xmpp_domain": "example.com",
        "prosody_component_secret": COMPONENT_SECRET,
        "prosody_run_as_root": os.geteuid() == 0,
        **vrrp_site(),
    }
    inventory = {
        "all": {
            "hosts": hosts,
            "vars": variables,
            "children": {g: {"hosts": {h: {} for h in members}} for g, members in groups.items()},
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps(inventory, indent=1))
    return path


@dataclass
class BackgroundRun:
    """A site.yml run going on beside the others: started first, waited for where used."""

    root: Path
    process: subprocess.Popen[bytes]
    argv: list[str]
    log: Path

    def output(self) -> str:
        self.process.wait(timeout=900)
        out = self.log.read_text(errors="replace")
        assert self.process.returncode == 0, f"{shlex.join(self.argv)}:\n{out[-8000:]}"
        return out


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundRun]:
    """The cluster shape's run, rendering files only its own test reads: it goes on while
    the deployment's run does (each is one Ansible process, mostly one core's work)."""
    tmp = tmp_path_factory.mktemp("cluster")
    argv = [str(PLAYBOOK), "-i", str(write_cluster_inventory(tmp)), "site.yml"]
    yield from background(argv, tmp / "home", tmp / "ansible-playbook.log", root=tmp)


def background(
    argv: list[str], home: Path, log: Path, *, root: Path | None = None
) -> Iterator[BackgroundRun]:
    """``argv`` started now with Ansible's state under ``home``, its output in ``log`` (a
    file, not a pipe nobody reads while it runs); killed at teardown if still going."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, cwd=ANSIBLE, env=ansible_env(home), stdout=out, stderr=out)
    try:
        yield BackgroundRun(root or log.parent, process, argv, log)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


@RENDERS
def test_the_cluster_shape_renders_on_one_machine(cluster_run: BackgroundRun) -> None:
    """inventories/cluster's shape — a Kamailio pair, two control nodes, two media nodes, one
    Prosody — each host this machine under a root of its own: every file of every host renders
    and validates, and each role found the others in the inventory."""
    out = cluster_run.output()
    assert "failed=0" in out
    tmp_path = cluster_run.root

    nodes = {"1 sip:127.0.0.1:26060 0 0", "1 sip:127.0.0.1:26070 0 0"}
    for edge in ("edge1", "edge2"):
        listed = (tmp_path / edge / "etc/kamailio/chorus-dispatcher.list").read_text()
        assert nodes <= set(listed.splitlines()), listed
        assert (
            "#!define WITH_DS_PING\n"
            in (tmp_path / edge / "etc/kamailio/chorus-edge.cfg").read_text()
        )
    # One VRRP instance for the pair (same router id and secret), edge1 the higher priority;
    # each edge's track script asks its own Kamailio.
    for edge, priority, rpc_port in (("edge1", 150, 25070), ("edge2", 100, 25071)):
        vrrp = (tmp_path / edge / "etc/keepalived/keepalived.conf").read_text()
        assert f"$PRIORITY={priority}\n" in vrrp and "$VRID=51\n" in vrrp, vrrp
        assert f"$AUTH_PASS={VRRP_SECRET}\n" in vrrp and f"$ROUTER_ID={edge}\n" in vrrp
        assert f" http://127.0.0.1:{rpc_port}/RPC " in vrrp, vrrp
    for control in ("control1", "control2"):
        toml = (tmp_path / control / "etc/chorus/chorus.toml").read_text()
        assert 'engine = "freeswitch"' in toml
        for port, esl in ((27080, 27021), (27081, 27022)):
            node = f'sip = "127.0.0.1:{port}", esl = "127.0.0.1:{esl}", password = "{ESL_PASSWORD}"'
            assert "{ " + node + " }" in toml, toml
        assert 'kamailio_rpc = "http://127.0.0.1:25070/RPC"' in toml, toml
        assert 'outbound_proxy = "sip:127.0.0.1:25060"' in toml, toml
        assert 'component_jid = "sip.example.com"' in toml, toml
    for media in ("media1", "media2"):
        assert (tmp_path / media / "etc/freeswitch-chorus/vars.xml").is_file()
    assert (tmp_path / "xmpp1" / "etc/prosody/chorus.cfg.lua").is_file()


@RENDERS
def test_a_second_run_changes_nothing(second_run: BackgroundRun) -> None:
    output = second_run.output()
    counts = recap(output)
    assert counts["changed"] == 0 and counts["failed"] == 0, output[-6000:]


# --- the services, started from what Ansible rendered -----------------------------------------


@dataclass(frozen=True)
class EdgePorts:
    """The Kamailio edge as a ChatClient sees a server: its SIP port and its TLS port."""

    sip_port: int
    tls_port: int


def listening(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.5):
            return True
    except OSError:
        return False


def esl_api(port: int, password: str, command: str) -> str:
    """One ``api`` command over FreeSWITCH's Event Socket (PEERS.md: header blocks ended by a
    blank line, a body when Content-Length says so)."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as sock:
        stream = sock.makefile("rb")

        def block() -> str:
            headers: dict[str, str] = {}
            while True:
                raw = stream.readline()
                if not raw:
                    raise ConnectionError("the Event Socket closed")
                line = raw.decode(errors="replace").strip()
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip()] = value.strip()
                elif headers:
                    break
            length = int(headers.get("Content-Length", "0"))
            return json.dumps(headers) + stream.read(length).decode(errors="replace")

        block()  # auth/request
        sock.sendall(f"auth {password}\n\n".encode())
        block()
        sock.sendall(f"api {command}\n\n".encode())
        return block()


def profile_running(port: int) -> bool:
    """The Event Socket answers before the SIP profile runs: wait for the profile."""
    try:
        return "RUNNING" in esl_api(port, ESL_PASSWORD, "sofia status profile chorus")
    except OSError:
        return False


def rpc(port: int, method: str, *params: object) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/RPC", data=body.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read()).get("result")


def kamailio_up(port: int) -> bool:
    try:
        return rpc(port, "core.version") is not None
    except OSError:
        return False


@pytest.fixture
def services(deployment: Deployment, second_run: BackgroundRun) -> Iterator[dict[str, UnitProcess]]:
    # The services write under site_root (logs, spool, Prosody's data): only once the
    # idempotence run is over, so it checks the tree the first run left, as it did in series.
    second_run.process.wait(timeout=900)
    d = deployment
    units = d.path("/etc/systemd/system")
    logs = d.root.parent
    started: dict[str, UnitProcess] = {}
    names = {"kamailio": "chorus-kamailio", "prosody": "chorus-prosody", "chorus": "chorus"}
    if FREESWITCH_BIN:
        names = {"freeswitch": "chorus-freeswitch", **names}
    try:
        for name, unit in names.items():
            service = UnitProcess(name, units / f"{unit}.service", logs / f"{name}.log")
            if name == "prosody":
                prosody_register(d, "bob", "bob-password")
            started[name] = service.start()
            if name == "kamailio":
                service.wait_ready(lambda: kamailio_up(d.ports["kamailio_rpc"]))
            elif name == "prosody":
                service.wait_ready(
                    lambda: listening(d.ports["c2s"]) and listening(d.ports["component"])
                )
            elif name == "freeswitch":
                service.wait_ready(lambda: profile_running(d.ports["fs_esl"]), timeout=90)
            else:
                service.wait_ready(lambda s=service: "chorus ready" in s.log())
        yield started
    finally:
        for service in reversed(list(started.values())):
            service.stop()


def prosody_register(d: Deployment, user: str, password: str) -> None:
    config = d.path("/etc/prosody/chorus.cfg.lua")
    argv = ["prosodyctl", "--config", str(config), "register", user, "xmpp.localhost", password]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


async def rooms(d: Deployment) -> list[str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "chorus"),
        "rooms",
        "--config",
        str(d.path("/etc/chorus/chorus.toml")),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return []
    data = json.loads(out)
    listed = data.get("rooms", data) if isinstance(data, dict) else data
    return [str(room.get("room") or room.get("id") or room) for room in listed]


@RENDERS
@pytest.mark.peer("sipp")
async def test_a_call_through_kamailio_and_a_message_through_prosody(
    deployment: Deployment, services: dict[str, UnitProcess]
) -> None:
    d = deployment
    # The node registered itself with the edge over the JSON-RPC the role set up.
    node = f"sip:127.0.0.1:{d.ports['chorus_sip']}"
    deadline = time.monotonic() + 30
    while node not in json.dumps(rpc(d.ports["kamailio_rpc"], "dispatcher.list")):
        assert time.monotonic() < deadline, services["chorus"].log()[-4000:]
        await asyncio.sleep(0.2)

    # A SIPp caller joins a room through the edge; while it is in, the room is live on the
    # node (admin API, with the token Ansible set) and pinned to it in Kamailio.
    call = asyncio.create_task(
        run_sipp_async(
            scenario_path("uac_echo.xml"),
            f"127.0.0.1:{d.ports['kamailio_sip']}",
            service=ROOM,
            pause_ms=4000,
            timeout=60,
        )
    )
    seen: list[str] = []
    pins = ""
    while not call.done() and not (seen and ROOM in pins):
        seen = [r for r in await rooms(d) if ROOM in r]
        pins = json.dumps(rpc(d.ports["kamailio_rpc"], "htable.dump", "rooms"))
        await asyncio.sleep(0.3)
    result = await call
    assert result.ok, result.describe() + services["kamailio"].log()[-3000:]
    assert seen, f"room never listed by the admin API:\n{services['chorus'].log()[-4000:]}"
    assert node in pins, pins

    # keepalived's track script, as rendered, finds this Kamailio alive, and a dead one not.
    check = str(d.path("/etc/keepalived/chorus-kamailio-check"))
    alive = subprocess.run([check, f"http://127.0.0.1:{d.ports['kamailio_rpc']}/RPC"])
    assert alive.returncode == 0
    dead = subprocess.run([check, f"http://127.0.0.1:{fixed_ports(1)[0]}/RPC"], capture_output=True)
    assert dead.returncode == 1, dead

    # Two people chat in a room over MSRP, joined through the edge: alice over UDP, bob over
    # SIP TLS to the edge (the certificate Ansible placed) and MSRP over TCP.
    edge = EdgePorts(d.ports["kamailio_sip"], d.ports["kamailio_tls"])
    async with (
        ChatClient("alice", "Alice") as alice,
        ChatClient("bob", "Bob", sip_transport="tls") as bob,
    ):
        talker = await alice.join(edge, CHAT_ROOM, secure=True)
        listener = await bob.join(edge, CHAT_ROOM, secure=False)
        sent = await talker.say("hello over msrp")
        assert await talker.status_of(sent) == 200
        heard = await listener.wait_text("hello over msrp")
        assert heard.sender_key == ("alice", "127.0.0.1")

    # An XMPP user writes to a SIP user through Prosody and the Chorus component; the
    # MESSAGE leaves through the node's outbound proxy, where the SIP user (SIPp, which exits
    # after one MESSAGE whose body it checked) takes it.
    uas_scenario = d.root.parent / "uas_message.xml"
    uas_scenario.write_text(UAS_MESSAGE)
    errors: list[Any] = []
    with SippUas(uas_scenario, port=d.ports["sip_user"], extra_args=["-m", "1"]) as uas:
        client = await xmpp_client(d)
        try:
            client.add_event_handler("message_error", errors.append)
            client.send_message(mto="alice@sip.localhost", mbody="hello from xmpp", mtype="chat")
            deadline = time.monotonic() + 30
            while (
                not bindable(d.ports["sip_user"], socket.SOCK_DGRAM) and time.monotonic() < deadline
            ):
                await asyncio.sleep(0.2)
        finally:
            client.disconnect()
        answered = await uas.astop()
    assert answered.ok and answered.stats is not None, answered.describe()
    assert answered.stats.successful == 1, answered.describe() + services["chorus"].log()[-4000:]
    assert not errors, errors
    assert all(s.alive() for s in services.values()), {
        n: s.log()[-2000:] for n, s in services.items()
    }


async def xmpp_client(d: Deployment) -> ClientXMPP:
    """bob@xmpp.localhost logged in over STARTTLS to the rendered Prosody."""
    xmpp = ClientXMPP("bob@xmpp.localhost/desk", "bob-password")
    xmpp.ssl_context = client_ssl_context()
    up = asyncio.Event()
    xmpp.add_event_handler("session_start", lambda _: (xmpp.send_presence(), up.set()))
    xmpp.connect(LOOPBACK, d.ports["c2s"])
    await asyncio.wait_for(up.wait(), 30)
    return xmpp
