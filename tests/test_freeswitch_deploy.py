"""deploy/freeswitch: the config a Chorus media node runs.

Checked without FreeSWITCH: every file is well-formed XML (lxml, hardened parser), every
include resolves, every ``$${var}`` is set in vars.xml, every loaded module that reads a
``.conf`` has it, the Event Socket has a non-default password and the control ACL, the SIP
profile offers G.722, Speex WB, PCMU/PCMA and Opus and takes SDES-SRTP, the conference
profile mixes at 16 kHz in 20 ms with no sounds, and the dialplan admits exactly the
conference names Chorus sends.

With ``FREESWITCH_BIN`` naming a FreeSWITCH 1.10 binary, a real node is started from this
config rendered for free ports (unprivileged, every directory in a temp dir) and the engine
drives it: a leg joins, the member is mapped, mute and kick go through (tests/peers/fsreal.py
starts it; tests/test_freeswitch_real.py has the room tests). These skip, and only without
FREESWITCH_BIN.
"""

from __future__ import annotations

import asyncio
import glob
import re
from pathlib import Path

import pytest
from lxml import etree

from control.cli import build_server
from control.config import parse_config
from control.media.engine import RoomId
from control.media.freeswitch import FreeSwitchEngine, conference_name
from tests.peers import fsreal
from tests.peers.fsnode import ALICE, ROOM, Participant, offer
from tests.peers.fsreal import DEPLOY, RealFreeSwitch, render
from tests.peers.ports import free_ports

freeswitch_bin = fsreal.freeswitch_bin_fixture  # skips without FREESWITCH_BIN
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
CONFIG_OF = {  # module -> the configuration it reads (FreeSWITCH 1.10)
    "mod_console": "console.conf",
    "mod_logfile": "logfile.conf",
    "mod_event_socket": "event_socket.conf",
    "mod_sofia": "sofia.conf",
    "mod_conference": "conference.conf",
    "mod_opus": "opus.conf",
    "mod_spandsp": "spandsp.conf",
}


def files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.xml"))


def parse(path: Path) -> etree._Element:
    return etree.parse(str(path), PARSER).getroot()


def variables() -> dict[str, str]:
    found = {}
    for element in parse(DEPLOY / "vars.xml").iter("X-PRE-PROCESS"):
        if element.get("cmd") == "set":
            name, _, value = (element.get("data") or "").partition("=")
            found[name] = value
    return found


def configuration(name: str) -> etree._Element:
    for path in (DEPLOY / "autoload_configs").glob("*.xml"):
        root = parse(path)
        if root.tag == "configuration" and root.get("name") == name:
            return root
    raise AssertionError(f"no {name} in autoload_configs")


def params(element: etree._Element) -> dict[str, str]:
    return {p.get("name"): p.get("value") for p in element.iter("param")}


def test_every_file_is_well_formed_and_every_include_resolves() -> None:
    assert len(files()) >= 12
    for path in files():
        root = parse(path)
        for include in root.iter("X-PRE-PROCESS"):
            if include.get("cmd") != "include":
                continue
            base = DEPLOY if path.parent == DEPLOY else path.parent
            matches = glob.glob(str(base / include.get("data", "")))
            assert matches, f"{path.name}: include {include.get('data')} finds nothing"


def test_every_variable_used_is_set_in_vars() -> None:
    defined = variables()
    for path in files():
        for name in re.findall(r"\$\$\{(\w+)\}", path.read_text()):
            assert name in defined, f"{path.name} uses $${{{name}}}, not set in vars.xml"


def test_every_module_loaded_has_its_configuration() -> None:
    modules = [m.get("module") for m in configuration("modules.conf").iter("load")]
    for needed in (
        "mod_sofia",
        "mod_event_socket",
        "mod_conference",
        "mod_spandsp",
        "mod_opus",
        "mod_dialplan_xml",
        "mod_dptools",
        "mod_commands",
    ):
        assert needed in modules
    for module in modules:
        if module in CONFIG_OF:
            configuration(CONFIG_OF[module])
    configuration("switch.conf")
    configuration("acl.conf")


def test_event_socket_is_bound_to_the_configured_address_behind_an_acl() -> None:
    settings = params(configuration("event_socket.conf"))
    assert settings["listen-ip"] == "$${chorus_esl_ip}"
    assert settings["listen-port"] == "$${chorus_esl_port}"
    assert settings["password"] == "$${chorus_esl_password}"
    assert variables()["chorus_esl_password"] not in ("", "ClueCon")
    assert settings["apply-inbound-acl"] == "chorus_control"
    (acl,) = [
        x for x in configuration("acl.conf").iter("list") if x.get("name") == "chorus_control"
    ]
    assert acl.get("default") == "deny"
    assert [n.get("cidr") for n in acl.iter("node")] == ["$${chorus_control_net}"]


def test_the_sip_profile_takes_the_codecs_and_srtp_and_only_control_nodes() -> None:
    profile = parse(DEPLOY / "sip_profiles" / "chorus.xml").find("profile")
    assert profile is not None and profile.get("name") == "chorus"
    settings = params(profile)
    assert (
        settings["sip-ip"] == "$${chorus_sip_ip}" and settings["sip-port"] == "$${chorus_sip_port}"
    )
    assert settings["rtp-ip"] == "$${chorus_rtp_ip}"
    assert settings["apply-inbound-acl"] == "chorus_control"
    assert settings["context"] == "chorus"
    codecs = [c.split("@")[0].lower() for c in variables()["chorus_codecs"].split(",")]
    assert codecs == ["opus", "g722", "speex", "pcmu", "pcma"]
    assert "speex@16000h" in variables()["chorus_codecs"]
    dialplan = (DEPLOY / "dialplan" / "chorus.xml").read_text()
    assert 'data="rtp_secure_media=optional"' in dialplan


def test_the_conference_profile_is_wideband_20ms_without_sounds() -> None:
    conf = configuration("conference.conf")
    (wideband,) = [p for p in conf.iter("profile") if p.get("name") == "chorus-wideband"]
    settings = params(wideband)
    assert settings["rate"] == "16000" and settings["interval"] == "20"
    assert not [name for name in settings if "sound" in name or name == "moh"]


def test_the_dialplan_admits_the_conference_names_chorus_sends() -> None:
    root = parse(DEPLOY / "dialplan" / "chorus.xml")
    (room,) = [e for e in root.iter("extension") if e.get("name") == "chorus-room"]
    conditions = room.findall("condition")
    assert conditions[0].get("field") == "${acl(${network_addr} chorus_control)}"
    # mod_sofia keeps the leg's X-Chorus-Room header as channel variable sip_h_X-Chorus-Room.
    assert conditions[1].get("field") == "${sip_h_X-Chorus-Room}"
    pattern = re.compile(conditions[1].get("expression", ""))
    for name in ("r1@conference.example.com", "Room 7@x.org", "ünïcode@host"):
        assert pattern.match(conference_name(RoomId(name))), name
    assert not pattern.match("1000") and not pattern.match("chorus-x@evil")
    actions = [a.get("data") for a in conditions[1].iter("action")]
    assert "$1@chorus-wideband" in actions


def test_render_sets_the_parameters(tmp_path: Path) -> None:
    conf = render(tmp_path / "conf", chorus_sip_port="15080", chorus_esl_password="s3cret")
    text = (conf / "vars.xml").read_text()
    assert 'data="chorus_sip_port=15080"' in text and 'data="chorus_esl_password=s3cret"' in text
    parse(conf / "vars.xml")


# --- a real FreeSWITCH, only with FREESWITCH_BIN ---------------------------------------------


@pytest.mark.timeout(120)
async def test_a_real_node_from_this_config_takes_a_leg_and_obeys_the_engine(
    freeswitch_bin: str, tmp_path: Path
) -> None:
    node = await RealFreeSwitch(freeswitch_bin, tmp_path / "fs").start()
    try:
        nodes = parse_config(
            {"audio": {"engine": "freeswitch"}, "freeswitch": {"nodes": [node.config]}}
        ).freeswitch.nodes
        (port,) = free_ports(1)
        chorus = build_server(
            parse_config(
                {
                    "sip": {"listen": [f"udp:127.0.0.1:{port}"]},
                    "msrp": {"listen": ["tcp:127.0.0.1:0"]},
                    "server": {"spool_dir": str(tmp_path / "spool")},
                }
            )
        )
        await chorus.start()
        loop = asyncio.get_running_loop()
        transport, participant = await loop.create_datagram_endpoint(
            Participant, local_addr=("127.0.0.1", 0)
        )
        engine = FreeSwitchEngine(chorus.ua, nodes)
        try:
            answer = await engine.attach(ROOM, ALICE, offer(participant.port), 0)
            assert answer.address == "127.0.0.1" and answer.accept.port != participant.port
            for _ in range(100):
                if engine.member_id(ROOM, ALICE) is not None:
                    break
                await asyncio.sleep(0.1)
            assert engine.member_id(ROOM, ALICE) is not None, "no add-member from FreeSWITCH"
            await engine.set_muted(ROOM, ALICE, True)
            listing = await node.api(f"conference {conference_name(ROOM)} list")
            assert f";{ALICE};" in listing and "speak" not in listing, listing
            assert await engine.kick(ROOM, ALICE)
        finally:
            await engine.close()
            transport.close()
            await chorus.stop()
    finally:
        await node.stop()
