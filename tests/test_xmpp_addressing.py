"""Addressing of the XMPP gateway: RFC 7247 §5 mapping, XEP-0106 escaping, served domains,
and the ``[xmpp]`` configuration that names them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.config import ConfigError, parse_config
from control.sip.uri import SipUri, parse_uri
from control.xmpp.addressing import (
    Addressing,
    AddressRefused,
    Jid,
    escape_localpart,
    parse_jid,
    unescape_localpart,
)

ADDR = Addressing(("sip.example.com",), ("xmpp.example.org",))


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def test_plain_user_maps_both_ways() -> None:
    jid = ADDR.sip_to_jid(sip("sip:bob@xmpp.example.org"), side="xmpp")
    assert str(jid) == "bob@xmpp.example.org"
    back = ADDR.jid_to_sip(parse_jid("alice@sip.example.com"), side="sip")
    assert str(back) == "sip:alice@sip.example.com"


def test_resource_is_the_gruu_gr_parameter() -> None:
    uri = ADDR.jid_to_sip(parse_jid("bob@xmpp.example.org/phone 1"), side="xmpp")
    assert str(uri) == "sip:bob@xmpp.example.org;gr=phone%201"
    assert ADDR.sip_to_jid(uri, side="xmpp") == Jid("bob", "xmpp.example.org", "phone 1")


def test_sip_user_with_jid_forbidden_characters_is_xep0106_escaped() -> None:
    # 'd'artagnan' and a space are legal (escaped) in a SIP user, not in a JID localpart.
    jid = ADDR.sip_to_jid(sip("sip:d'art%20agnan@xmpp.example.org"), side="xmpp")
    assert jid.local == "d\\27art\\20agnan"
    back = ADDR.jid_to_sip(jid, side="xmpp")
    assert back.unescaped_user() == "d'art agnan"


def test_escaped_jid_becomes_percent_encoded_sip_user() -> None:
    uri = ADDR.jid_to_sip(parse_jid("john\\20doe\\40work@xmpp.example.org"), side="xmpp")
    assert uri.user == "john%20doe%40work"
    assert uri.unescaped_user() == "john doe@work"


def test_backslash_that_looks_like_an_escape_is_escaped() -> None:
    assert escape_localpart("a\\20b") == "a\\5c20b"
    assert unescape_localpart("a\\5c20b") == "a\\20b"
    assert escape_localpart("a\\zz") == "a\\zz"  # no escape sequence: left alone (XEP-0106)


@given(st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s))
def test_escaping_round_trips(user: str) -> None:
    escaped = escape_localpart(user)
    assert not set(escaped) & set(" \"&'/:<>@")
    assert unescape_localpart(escaped) == user


@given(st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s))
def test_sip_user_round_trips_through_a_jid(user: str) -> None:
    from urllib.parse import quote

    jid = ADDR.sip_to_jid(sip(f"sip:{quote(user, safe='')}@xmpp.example.org"), side="xmpp")
    assert ADDR.jid_to_sip(jid, side="xmpp").unescaped_user() == user


def test_domains_not_served_are_refused_both_sides() -> None:
    with pytest.raises(AddressRefused) as recipient:
        ADDR.sip_to_jid(sip("sip:bob@elsewhere.net"), side="xmpp")
    assert (recipient.value.sip_status, recipient.value.condition) == (404, "item-not-found")
    with pytest.raises(AddressRefused) as sender:
        ADDR.jid_to_sip(parse_jid("eve@elsewhere.net/x"), side="xmpp", sender=True)
    assert (sender.value.sip_status, sender.value.condition) == (403, "not-allowed")
    # A SIP domain is never served as an XMPP one.
    with pytest.raises(AddressRefused):
        ADDR.sip_to_jid(sip("sip:alice@sip.example.com"), side="xmpp")


def test_an_invites_parties_are_the_xmpp_callee_and_the_sip_caller() -> None:
    callee, caller = ADDR.call_parties(
        sip("sip:juliet@xmpp.example.org"), sip("sip:romeo@sip.example.com;gr=phone")
    )
    assert (str(callee), str(caller)) == ("juliet@xmpp.example.org", "romeo@sip.example.com/phone")
    with pytest.raises(AddressRefused) as callee_refused:  # a SIP user is no callee here
        ADDR.call_parties(sip("sip:alice@sip.example.com"), sip("sip:romeo@sip.example.com"))
    assert callee_refused.value.sip_status == 404
    for caller_uri in (parse_uri("tel:+15551234"), sip("sip:eve@elsewhere.net")):
        with pytest.raises(AddressRefused) as caller_refused:
            ADDR.call_parties(sip("sip:juliet@xmpp.example.org"), caller_uri)
        assert caller_refused.value.sip_status == 403


@pytest.mark.parametrize("text", ["@example.com", "a@", "a@b/", ""])
def test_malformed_jids_are_refused(text: str) -> None:
    with pytest.raises(AddressRefused) as refused:
        parse_jid(text)
    assert refused.value.condition == "jid-malformed"


def test_xmpp_config_defaults_sip_domains_to_the_component() -> None:
    config = parse_config(
        {
            "xmpp": {
                "component_jid": "sip.Example.com",
                "component_secret": "s3cret",
                "server": "127.0.0.1:5347",
                "xmpp_domains": ["example.org"],
                "muc_domain": "conference.example.org",
            }
        }
    ).xmpp
    assert config.enabled
    assert config.sip_domains == ("sip.example.com",)
    assert config.server == ("127.0.0.1", 5347)
    assert not parse_config({}).xmpp.enabled


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"component_jid": "sip.example.com"}, "xmpp.component_secret"),
        ({"component_jid": "bad domain", "component_secret": "x"}, "xmpp.component_jid"),
        ({"server": "localhost"}, "xmpp.server"),
        ({"sip_domains": ["a.com"], "xmpp_domains": ["a.com"]}, "xmpp.xmpp_domains"),
        ({"reconnect_max": 0.1}, "xmpp.reconnect_max"),
        ({"colour": "blue"}, "xmpp.colour"),
    ],
)
def test_xmpp_config_errors_name_the_key(table: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"xmpp": table})
    assert error.value.key == key
