"""Configuration: defaults, every section parsed, and errors that name the key."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from control.config import Config, ConfigError, ListenAddress, load_config, parse_config


def test_defaults_serve_on_loopback() -> None:
    config = load_config(None)
    assert config == Config()
    assert {a.host for a in config.sip.listen} == {"127.0.0.1"}
    assert [a.transport for a in config.sip.listen] == ["udp", "tcp", "tls"]
    assert config.rtp.port_range == (50000, 50999)
    assert config.applications.default == "conference"
    assert config.applications.map == {"echo": "echo"}
    assert config.server.trace_sip is None


def test_full_file(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    key = tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    path = tmp_path / "chorus.toml"
    path.write_text(
        f"""
[sip]
listen = ["udp:[::1]:5070", "tcp:127.0.0.2:5071"]
advertised_address = "192.0.2.10"
outbound_proxy = "sip:127.0.0.1:5060;lr"
trusted_peers = ["10.0.0.0/8"]
t1 = 0.25
[rtp]
port_range = "40000-40100"
timeout = 10
codecs = ["PCMU"]
srtp = "mandatory"
opus_complexity = 2
[tls]
certificate = "{cert}"
private_key = "{key}"
[server]
spool_dir = "/var/spool/chorus"
log_level = "debug"
trace_sip = "/tmp/sip.trace"
[applications]
default = "echo"
map = {{ "room1@conference.example.com" = "conference", "echo" = "echo" }}
[echo]
session_limit = 30
"""
    )
    config = load_config(path)
    assert config.sip.listen == (
        ListenAddress("udp", "::1", 5070),
        ListenAddress("tcp", "127.0.0.2", 5071),
    )
    assert str(config.sip.listen[0]) == "udp:[::1]:5070"
    assert config.sip.advertised_address == "192.0.2.10"
    assert config.sip.outbound_proxy == "sip:127.0.0.1:5060;lr"
    assert config.sip.trusted_peers == (ipaddress.ip_network("10.0.0.0/8"),)
    assert config.sip.timers.t1 == 0.25
    assert config.rtp.port_range == (40000, 40100)
    assert config.rtp.timeout == 10
    assert config.rtp.codecs == ("PCMU",)
    assert config.rtp.srtp == "mandatory"
    assert config.rtp.opus_complexity == 2
    assert config.tls.certificate == cert
    assert config.tls.private_key == key
    assert config.server.spool_dir == Path("/var/spool/chorus")
    assert config.server.log_level == "DEBUG"
    assert config.server.trace_sip == Path("/tmp/sip.trace")
    assert config.applications.default == "echo"
    assert config.applications.map == {
        "room1@conference.example.com": "conference",
        "echo": "echo",
    }
    assert config.echo.session_limit == 30


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"sip": {"listen": ["udp:127.0.0.1:5060", "sctp:127.0.0.1:5060"]}}, "sip.listen[1]"),
        ({"sip": {"listen": ["udp:localhost:5060"]}}, "sip.listen[0]"),
        ({"sip": {"listen": ["udp:127.0.0.1:70000"]}}, "sip.listen[0]"),
        ({"sip": {"listen": []}}, "sip.listen"),
        ({"sip": {"listen": "udp:127.0.0.1:5060"}}, "sip.listen"),
        ({"sip": {"advertised_address": "example.com"}}, "sip.advertised_address"),
        ({"sip": {"outbound_proxy": "http://x"}}, "sip.outbound_proxy"),
        ({"sip": {"trusted_peers": ["10.0.0.0/33"]}}, "sip.trusted_peers[0]"),
        ({"sip": {"t1": -1}}, "sip.t1"),
        ({"sip": {"max_connections": True}}, "sip.max_connections"),
        ({"sip": {"bogus": 1}}, "sip.bogus"),
        ({"rtp": {"port_range": "5000"}}, "rtp.port_range"),
        ({"rtp": {"port_range": "60000-50000"}}, "rtp.port_range"),
        ({"rtp": {"codecs": ["PCMU", "AMR"]}}, "rtp.codecs[1]"),
        ({"rtp": {"srtp": "sometimes"}}, "rtp.srtp"),
        ({"rtp": {"timeout": "30"}}, "rtp.timeout"),
        ({"rtp": {"opus_complexity": 11}}, "rtp.opus_complexity"),
        ({"rtp": {"opus_complexity": -1}}, "rtp.opus_complexity"),
        (
            {"tls": {"certificate": "/nonexistent.pem", "private_key": "/nonexistent.key"}},
            "tls.certificate",
        ),
        ({"tls": {"certificate": "/x.pem"}}, "tls.certificate"),
        ({"server": {"log_level": "LOUD"}}, "server.log_level"),
        ({"server": {"trace_sip": True}}, "server.trace_sip"),
        ({"applications": {"default": "voicemail"}}, "applications.default"),
        ({"applications": {"map": {"x": "nothing"}}}, "applications.map.x"),
        ({"echo": {"session_limit": 0}}, "echo.session_limit"),
        ({"mystery": {}}, "mystery"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_bad_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip\nlisten = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_cli_refuses_to_start_with_a_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[rtp]\nport_range = "1-2"\n')
    done = subprocess.run(
        [sys.executable, "-m", "control.cli", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "rtp.port_range" in done.stderr


def test_cli_check_config(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[server]\nlog_level = "WARNING"\n')
    done = subprocess.run(
        [sys.executable, "-m", "control.cli", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout


def documented_keys(readme: str) -> set[tuple[str, str]]:
    """Keys named in the README's configuration table: rows whose first cell reads
    ``[section] key`` or ``[section] key``, ``other``, ..."""
    keys: set[tuple[str, str]] = set()
    for line in readme.splitlines():
        cell = line.split("|")[1] if line.startswith("| `[") else ""
        found = re.match(r"\s*`\[(\w+)\] (\w+)`", cell)
        if found is None:
            continue
        section = found.group(1)
        keys.add((section, found.group(2)))
        keys.update((section, name) for name in re.findall(r", `(\w+)`", cell))
    return keys


def test_readme_documents_every_key() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = documented_keys(readme)
    # Every section of Config and every key the parser reads in it (the SIP timers are read
    # as t1, t2 and t4 of [sip]).
    expected: set[tuple[str, str]] = set()
    defaults = Config()
    for section in fields(Config):
        for key in fields(getattr(defaults, section.name)):
            if key.name == "timers":
                expected.update((section.name, t) for t in ("t1", "t2", "t4"))
            else:
                expected.add((section.name, key.name))
    missing = sorted(expected - documented)
    assert not missing, f"not documented in README.md: {missing}"
