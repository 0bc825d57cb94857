"""MSRP URIs and paths (RFC 4975 §6, §6.1, §9)."""

from __future__ import annotations

import pytest

from control.msrp import DEFAULT_PORT, MsrpUri, UriError, format_path, parse_path, parse_uri


def test_parse_plain_uri() -> None:
    uri = parse_uri("msrp://bob.example.com:8888/9di4eae923wzd;tcp")
    assert uri == MsrpUri("bob.example.com", 8888, "9di4eae923wzd", "tcp")
    assert uri.scheme == "msrp"
    assert str(uri) == "msrp://bob.example.com:8888/9di4eae923wzd;tcp"


def test_parse_secure_userinfo_params() -> None:
    text = "msrps://alice@relay.example.com:2855/98cjs;tcp;foo=bar;lr"
    uri = parse_uri(text)
    assert uri.secure and uri.user == "alice" and uri.port == 2855
    assert uri.params == (("foo", "bar"), ("lr", None))
    assert uri.serialize() == text


def test_relay_uri_without_session_id() -> None:
    uri = parse_uri("msrps://relay.example.com;tcp")
    assert uri.session_id is None and uri.port is None
    assert uri.effective_port == DEFAULT_PORT


def test_ipv6_reference() -> None:
    uri = parse_uri("msrp://[2001:db8::1]:7777/abc123;tcp")
    assert uri.host == "2001:db8::1"
    assert uri.serialize() == "msrp://[2001:db8::1]:7777/abc123;tcp"
    assert uri.matches(parse_uri("msrp://[2001:DB8:0::1]:7777/abc123;TCP"))


@pytest.mark.parametrize(
    "text",
    [
        "sip://bob.example.com:8888/x;tcp",
        "msrp://bob.example.com:8888/x",  # transport is mandatory
        "msrp://bob.example.com:99999/x;tcp",
        "msrp://[not-v6]:1/x;tcp",
        "msrp://bob.example.com:8888/x;",
        "msrp://bob example.com/x;tcp",
        "",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(UriError) as info:
        parse_uri(text)
    assert info.value.status == 400


def test_matching_rules_section_6_1() -> None:
    base = parse_uri("msrp://Bob.Example.COM:2855/9di4ea;tcp")
    assert base.matches(parse_uri("msrp://bob.example.com/9di4ea;TCP"))  # default port, case
    assert base.matches(parse_uri("msrp://carol@bob.example.com:2855/9di4ea;tcp"))  # userinfo
    assert not base.matches(parse_uri("msrp://bob.example.com:2855/9DI4EA;tcp"))  # session-id
    assert not base.matches(parse_uri("msrps://bob.example.com:2855/9di4ea;tcp"))  # scheme
    assert not base.matches(parse_uri("msrp://bob.example.com:2856/9di4ea;tcp"))  # port
    assert not base.matches(parse_uri("msrp://bob.example.com:2855/9di4ea;sctp"))  # transport


def test_path_round_trip() -> None:
    text = "msrps://relayb.example.com;tcp msrps://bob.example.com:8888/9di4ea;tcp"
    path = parse_path(text)
    assert len(path) == 2 and path[1].session_id == "9di4ea"
    assert format_path(path) == text
    with pytest.raises(UriError):
        parse_path("   ")
