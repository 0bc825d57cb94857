"""REFER to a room, the pure parts (control/conference/refer.py): Refer-To parsing (method,
transfer, scheme), the refer_allow patterns and their default (the node's own hosts and the
room's domain), and the [conference] refer_* keys. The live tests (SIPp targets, a real
``chorus serve``) are tests/test_conference_refer_live.py."""

from __future__ import annotations

import pytest

from control.conference.refer import ReferPolicy, parse_refer_to, target_allowed
from control.conference.room import Room, room_id_for
from control.config import ConfigError, parse_config
from control.sip.errors import SipError
from control.sip.uri import SipUri, parse_name_addr, parse_uri


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def room_at(uri: str) -> Room:
    parsed = sip(uri)
    return Room(room_id_for(parsed), parsed, max_participants=10)


@pytest.mark.parametrize(
    ("refer_to", "method", "target"),
    [
        ("<sip:bob@example.com;method=INVITE>", "INVITE", "sip:bob@example.com"),
        ("<sip:bob@example.com;method=invite>", "INVITE", "sip:bob@example.com"),
        ("<sip:bob@example.com>", "INVITE", "sip:bob@example.com"),  # RFC 3515 §2.4.2
        ('"Bob" <sip:bob@10.0.0.1:5070;method=BYE>', "BYE", "sip:bob@10.0.0.1:5070"),
        (
            "<sip:bob@example.com;transport=tcp;method=INVITE>",
            "INVITE",
            "sip:bob@example.com;transport=tcp",
        ),
        ("<sips:bob@example.com?Subject=hi>", "INVITE", "sips:bob@example.com"),  # headers dropped
    ],
)
def test_refer_to_gives_the_method_and_the_uri_to_dial(
    refer_to: str, method: str, target: str
) -> None:
    parsed = parse_refer_to(parse_name_addr(refer_to))
    assert parsed.method == method
    assert str(parsed.uri) == target
    assert "method" not in parsed.uri.params and not parsed.uri.headers


def test_refer_to_keeps_the_display_name_and_names_the_identity() -> None:
    parsed = parse_refer_to(parse_name_addr('"Bob B" <sip:Bob@Example.COM:5070;method=INVITE>'))
    assert parsed.display_name == "Bob B"
    assert parsed.identity == "sip:Bob@example.com"  # no port or parameters
    assert str(parsed.name_addr) == '"Bob B" <sip:Bob@example.com:5070>'


@pytest.mark.parametrize(
    ("refer_to", "reason"),
    [
        ("<tel:+15551234567>", "Only SIP targets may be referred"),
        ("<sip:bob@example.com;method=SUBSCRIBE>", "Method SUBSCRIBE is not referred by a room"),
        ("<sip:bob@example.com;method=MESSAGE>", "Method MESSAGE is not referred by a room"),
        (
            "<sip:bob@example.com?Replaces=abc%3Bto-tag%3D1%3Bfrom-tag%3D2>",
            "Call transfer is not supported",
        ),
    ],
)
def test_refer_to_refused_403_with_the_reason(refer_to: str, reason: str) -> None:
    with pytest.raises(SipError) as caught:
        parse_refer_to(parse_name_addr(refer_to))
    assert (caught.value.status, caught.value.reason) == (403, reason)


@pytest.mark.parametrize(
    ("target", "patterns", "allowed"),
    [
        ("sip:bob@example.com", ["example.com"], True),
        ("sip:bob@EXAMPLE.com:5070;transport=tcp", ["example.com"], True),
        ("sip:bob@a.example.com", ["*.example.com"], True),
        ("sip:bob@example.com.evil.net", ["example.com"], False),
        ("sip:bob@example.com", ["sip:bob@example.com"], True),
        ("sip:bob@example.com", ["bob@example.com"], True),  # sip: may be left out
        ("sips:bob@example.com", ["sip:bob@example.com"], True),  # the identity is sip:
        ("sip:alice@example.com", ["sip:bob@example.com"], False),
        ("sip:+19005551234@gw.example.com", ["sip:+44*@gw.example.com"], False),
        ("sip:+442071234567@gw.example.com", ["sip:+44*@gw.example.com"], True),
        ("sip:bob@192.0.2.7", ["192.0.2.*"], True),
        ("sip:bob@[::1]:5070", ["::1"], True),
        ("sip:bob@[::1]", ["[::1]"], True),
        ("sip:bob@example.com", [], False),
        ("sip:bob@example.com", ["", " "], False),
    ],
)
def test_target_patterns(target: str, patterns: list[str], allowed: bool) -> None:
    assert target_allowed(sip(target), patterns) is allowed


def test_default_allows_only_the_nodes_hosts_and_the_rooms_domain() -> None:
    config = parse_config(
        {
            "sip": {
                "listen": ["udp:127.0.0.1:5070", "tcp:0.0.0.0:5070"],
                "advertised_address": "198.51.100.4",
            }
        }
    )
    policy = ReferPolicy.from_config(config)
    assert policy.own_hosts == ("127.0.0.1", "198.51.100.4")  # a wildcard names no host
    room = room_at("sip:team@conference.example.com")
    for ours in ("sip:bob@127.0.0.1:5090", "sip:bob@198.51.100.4", "sip:x@conference.example.com"):
        assert policy.allows(sip(ours), room), ours
    for theirs in ("sip:bob@example.com", "sip:+1900@gw.example.net", "sip:bob@0.0.0.0"):
        assert not policy.allows(sip(theirs), room), theirs


def test_refer_allow_replaces_the_default() -> None:
    config = parse_config({"conference": {"refer_allow": ["*.example.com"]}})
    policy = ReferPolicy.from_config(config)
    room = room_at("sip:team@127.0.0.1")
    assert policy.allows(sip("sip:bob@pbx.example.com"), room)
    assert not policy.allows(sip("sip:bob@127.0.0.1"), room)


def test_refer_keys_parsed_defaulted_and_validated() -> None:
    default = parse_config({}).conference
    assert (default.refer_policy, default.refer_allow) == ("moderators", ())
    assert (default.refer_timeout, default.refer_max_pending) == (60.0, 10)
    config = parse_config(
        {
            "conference": {
                "refer_policy": "participants",
                "refer_allow": ["example.com", "sip:+44*@gw.example.com"],
                "refer_timeout": 20,
                "refer_max_pending": 3,
            }
        }
    )
    policy = ReferPolicy.from_config(config)
    assert policy.who == "participants"
    assert policy.allow == ("example.com", "sip:+44*@gw.example.com")
    assert (policy.timeout, policy.max_pending) == (20.0, 3)
    for bad in (
        {"refer_policy": "anyone"},
        {"refer_allow": "example.com"},
        {"refer_allow": [1]},
        {"refer_timeout": 0},
        {"refer_max_pending": 0},
    ):
        with pytest.raises(ConfigError):
            parse_config({"conference": bad})
