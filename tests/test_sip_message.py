"""Unit tests of the SIP message model: headers, URIs, framing, limits, responses."""

from __future__ import annotations

import pytest

from control.sip.errors import SipError, SipParseError
from control.sip.framing import StreamFramer, build_error_response
from control.sip.headers import (
    COMPACT_FORMS,
    CSeq,
    Headers,
    Via,
    canonical_name,
    parse_content_type,
    parse_cseq,
    parse_via,
)
from control.sip.message import (
    Request,
    Response,
    parse_message,
)
from control.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    parse_name_addr,
    parse_params,
    parse_uri,
    quote_string,
    split_header_list,
)


def make(
    *extra: str,
    method: str = "OPTIONS",
    uri: str = "sip:room@chorus.example.com",
    body: bytes = b"",
    length: int | None = None,
    line_end: str = "\r\n",
) -> bytes:
    """A small valid request; ``extra`` header lines go after the mandatory ones."""
    lines = [
        f"{method} {uri} SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:room@chorus.example.com>",
        "Call-ID: c1@192.0.2.1",
        f"CSeq: 1 {method}",
        "Max-Forwards: 70",
        *extra,
        f"Content-Length: {len(body) if length is None else length}",
    ]
    return (line_end.join(lines) + line_end + line_end).encode() + body


def req(data: bytes, **kwargs: object) -> Request:
    message = parse_message(data, **kwargs)  # type: ignore[arg-type]
    assert isinstance(message, Request)
    return message


# --- header names --------------------------------------------------------------------------


@pytest.mark.parametrize("compact", sorted(COMPACT_FORMS))
def test_compact_forms_are_the_long_header(compact: str) -> None:
    headers = Headers([(compact.upper(), "x")])
    long_name = COMPACT_FORMS[compact]
    assert canonical_name(compact) == long_name
    assert headers.get(long_name) == "x"
    assert headers.get(compact) == "x"
    assert long_name.lower() in headers


def test_compact_forms_in_a_message() -> None:
    data = (
        b"INVITE sip:room@chorus.example.com SIP/2.0\r\n"
        b"v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK-1\r\n"
        b"f: Alice <sip:alice@example.com>;tag=a1\r\n"
        b"t: <sip:room@chorus.example.com>\r\n"
        b"i: c1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"m: <sip:alice@192.0.2.1>\r\n"
        b"c: application/sdp\r\n"
        b"k: timer\r\n"
        b"s: hello\r\n"
        b"l: 4\r\n\r\nv=0\n"
    )
    m = req(data)
    assert m.call_id == "c1"
    assert m.from_.display_name == "Alice"
    assert m.top_via.transport == "TCP"
    assert m.contacts[0].uri == SipUri("192.0.2.1", "alice")
    assert m.content_type is not None and m.content_type.mime == "application/sdp"
    assert m.headers.get("Supported") == "timer"
    assert m.headers.get("Subject") == "hello"
    assert m.body == b"v=0\n"
    assert b"Content-Length: 4\r\n" in m.serialize()


def test_unknown_header_names_keep_their_spelling() -> None:
    assert canonical_name("X-Weird-Thing") == "X-Weird-Thing"
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("WWW-AUTHENTICATE") == "WWW-Authenticate"


# --- folding and lists ---------------------------------------------------------------------


def test_folded_lines_are_joined_with_one_space() -> None:
    m = req(make("Subject: first\r\n   second\r\n\tthird", "Route:\r\n <sip:p1.example.com;lr>"))
    assert m.headers.get("Subject") == "first second third"
    assert m.headers.get("Route") == "<sip:p1.example.com;lr>"


def test_folded_cseq_and_via() -> None:
    m = req(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP\r\n h.example.com;branch=z9hG4bK1\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: f\r\nCSeq: 7\r\n\tOPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert m.cseq == CSeq(7, "OPTIONS")
    assert m.top_via.host == "h.example.com"


def test_comma_list_equals_repeated_headers() -> None:
    one = req(
        make(
            "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>",
            "Supported: timer, replaces",
        )
    )
    two = req(
        make(
            "Route: <sip:p1.example.com;lr>",
            "Route: <sip:p2.example.com;lr>",
            "Supported: timer",
            "Supported: replaces",
        )
    )
    assert one.headers.name_addrs("Route") == two.headers.name_addrs("Route")
    assert one.headers.get_all("Supported") == two.headers.get_all("Supported")
    assert one.headers.get_all("Supported") == ["timer", "replaces"]
    assert len(one.headers.get_raw("Route")) == 1
    assert len(two.headers.get_raw("Route")) == 2


def test_vias_in_one_line_and_many() -> None:
    m = req(
        b"OPTIONS sip:a@b SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bK1, SIP/2.0/TCP p2.example.com"
        b";branch=z9hG4bK2\r\n"
        b"v: SIP/2.0/UDP ua.example.com;branch=z9hG4bK3\r\n"
        b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: f\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert [v.branch for v in m.vias] == ["z9hG4bK1", "z9hG4bK2", "z9hG4bK3"]
    assert m.top_via.host == "p1.example.com"


def test_commas_inside_quotes_and_brackets_do_not_split() -> None:
    value = '"Doe, John" <sip:john@example.com;x=a>, <sip:a@b?subject=hi,there>, sip:c@d'
    parts = split_header_list(value)
    assert parts == [
        '"Doe, John" <sip:john@example.com;x=a>',
        "<sip:a@b?subject=hi,there>",
        "sip:c@d",
    ]
    contacts = req(make(f"Contact: {value}")).contacts
    assert contacts[0].display_name == "Doe, John"
    assert contacts[1].uri == SipUri("b", "a", headers={"subject": "hi,there"})


def test_non_list_headers_keep_their_commas() -> None:
    m = req(make("Date: Sat, 13 Nov 2010 23:29:00 GMT"))
    assert m.headers.get_all("Date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]


def test_contact_star() -> None:
    m = req(make("Contact: *", "Expires: 0", method="REGISTER"))
    assert m.contacts == []
    assert m.headers.get("Contact") == "*"


# --- quoted strings and name-addr ----------------------------------------------------------


def test_display_name_escapes() -> None:
    addr = parse_name_addr(r'"Say \"hi\" \\ bye" <sip:a@example.com>;tag=x')
    assert addr.display_name == 'Say "hi" \\ bye'
    assert addr.tag == "x"
    assert parse_name_addr(str(addr)) == addr


def test_quote_string_escapes_controls_and_drops_line_breaks() -> None:
    assert quote_string('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_string("x\x00y\x7f") == '"x\\\x00y\\\x7f"'
    assert quote_string("one\r\ntwo") == '"one  two"'
    addr = NameAddr(SipUri("example.com", "a"), "BEL:\x07")
    assert parse_name_addr(str(addr)) == addr


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@b>',
        '"display" sip:a@b',
        "Bell, Alexander <sip:a@b>",
        "<sip:a@b",
        "<sip:a@b> junk",
        "< sip:a@b >",
        "sip:a@b?subject=x",
        "",
    ],
)
def test_bad_name_addr(text: str) -> None:
    with pytest.raises(SipError):
        parse_name_addr(text)


def test_name_addr_with_uri_params_headers_and_header_params() -> None:
    addr = parse_name_addr(
        'Alice Smith <sip:alice:pw@example.com:5070;transport=TCP;lr?Subject=hi&X=1>;tag=9;q="0.5"'
    )
    assert addr.display_name == "Alice Smith"
    uri = addr.uri
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.password, uri.host, uri.port) == ("alice", "pw", "example.com", 5070)
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.transport == "tcp"
    assert uri.headers == {"Subject": "hi", "X": "1"}
    assert addr.params == {"tag": "9", "q": '"0.5"'}
    assert parse_name_addr(str(addr)) == addr


def test_addr_spec_params_belong_to_the_header() -> None:
    addr = parse_name_addr("sip:alice@example.com;tag=77;transport=udp")
    assert addr.uri == SipUri("example.com", "alice")
    assert addr.params == {"tag": "77", "transport": "udp"}


def test_with_tag_keeps_everything_else() -> None:
    addr = parse_name_addr('"Bob" <sip:bob@example.com>;x=1').with_tag("t9")
    assert str(addr) == '"Bob" <sip:bob@example.com>;x=1;tag=t9'


@pytest.mark.parametrize(
    "text",
    [";a=b c", ";a=<x>", ';a="open', ";a;;b", ";=x", ";a=b,c", ";a=\x00"],
)
def test_bad_params(text: str) -> None:
    with pytest.raises(SipError):
        parse_params(text)


def test_params_lws_and_quoted_values() -> None:
    assert parse_params(' ; Tag = 1 ; lr ; x="a;b, c"') == {"tag": "1", "lr": None, "x": '"a;b, c"'}


# --- URIs ------------------------------------------------------------------------------------


def test_sip_uri_parts_and_str() -> None:
    uri = parse_uri("SIPS:Bob@Example.COM:5061;maddr=239.255.255.1;ttl=15?to=alice%40a.com")
    assert uri == SipUri(
        "example.com",
        "Bob",
        port=5061,
        scheme="sips",
        params={"maddr": "239.255.255.1", "ttl": "15"},
        headers={"to": "alice%40a.com"},
    )
    assert str(uri) == "sips:Bob@example.com:5061;maddr=239.255.255.1;ttl=15?to=alice%40a.com"
    assert parse_uri(str(uri)) == uri


def test_user_part_ends_at_the_first_at_sign() -> None:
    # RFC 3261 §25.1: '@' never appears unescaped in userinfo; an unescaped one in a header
    # value (as some REFER senders write Replaces) stays in that value.
    uri = parse_uri("sip:bob@b.example.com?Replaces=1234@a.example.com")
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host) == ("bob", "b.example.com")
    assert uri.headers == {"Replaces": "1234@a.example.com"}
    with pytest.raises(SipError):
        parse_uri("sip:a@b,sip:c@d")


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:@host",
        "sip:a b@host",
        "sip:a@host:99999",
        "sip:a@host:0",
        "sip:a<b@host",
        'sip:a"b@host',
        "sip:a@host\x00",
        "sip:a@ho st",
        "sip:a@[::1",
        "sip:a@host:５０６０",
        "1sip:a@b",
        "nocolon",
    ],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipError):
        parse_uri(text)


def test_absolute_uris_are_kept_opaque() -> None:
    assert parse_uri("tel:+1-201-555-0123;phone-context=example.com") == AbsoluteUri(
        "tel", "+1-201-555-0123;phone-context=example.com"
    )
    assert str(parse_uri("URN:service:sos")) == "urn:service:sos"


def test_ipv6_references() -> None:
    uri = parse_uri("sip:alice@[2001:DB8::1]:5070;transport=tcp")
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port, uri.bare_host) == ("[2001:db8::1]", 5070, "2001:db8::1")
    assert str(uri) == "sip:alice@[2001:db8::1]:5070;transport=tcp"
    via = parse_via("SIP/2.0/UDP [::1]:5060;branch=z9hG4bKv6;received=2001:db8::9:1;rport=5062")
    assert (via.host, via.port, via.branch) == ("[::1]", 5060, "z9hG4bKv6")
    assert via.params["received"] == "2001:db8::9:1"  # RFC 5118 §4.5: received is unbracketed
    assert str(via) == "SIP/2.0/UDP [::1]:5060;branch=z9hG4bKv6;received=2001:db8::9:1;rport=5062"
    assert parse_via(str(via)) == via
    m = req(
        b"INVITE sip:room@[::1]:5060 SIP/2.0\r\n"
        b"Via: SIP/2.0/TCP [::1]:5070;branch=z9hG4bK6\r\n"
        b"From: <sip:a@[::1]:5070>;tag=1\r\nTo: <sip:room@[::1]>\r\nCall-ID: v6\r\n"
        b"CSeq: 1 INVITE\r\nContact: <sip:a@[::1]:5070;transport=tcp>\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert m.uri == SipUri("[::1]", "room", port=5060)
    assert m.top_via.port == 5070
    assert parse_message(m.serialize()) == m


# --- Via, CSeq, Content-Type ---------------------------------------------------------------


def test_via_lws_everywhere_it_is_allowed() -> None:
    via = parse_via("SIP / 2.0 / udp  host.example.com : 5062 ; branch = z9hG4bK7 ; rport")
    assert via == Via("UDP", "host.example.com", 5062, {"branch": "z9hG4bK7", "rport": None})


def test_via_other_protocol_is_kept() -> None:
    # RFC 3261 §25.1 protocol-name = "SIP" / token: a 505 must be able to copy it.
    assert parse_via("SIP/7.0/UDP c.example.com;branch=z9hG4bKx").protocol == "SIP/7.0"
    assert parse_via("sip/2.0/udp c.example.com").protocol == "SIP/2.0"


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP host1 host2;branch=z9hG4bK1",
        "SIP/2.0 host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host;;branch=1",
        "SIP/2.0/UDP host;branch=a b",
        "SIP/2.0/UDP host;",
        "SIP/2.0/UDP host; ;branch=1",
        "SIP/2.0/UDP host;branch=1\n",
        "SIP/2.0/UDP host:0;branch=1",
    ],
)
def test_bad_via(text: str) -> None:
    with pytest.raises(SipError):
        parse_via(text)


def test_vias_of_one_peer_share_their_sent_by_but_not_their_params() -> None:
    first = parse_via("SIP/2.0/udp  h.example.com : 5070 ;branch=z9hG4bK-1;rport")
    second = parse_via("SIP/2.0/udp  h.example.com : 5070 ;branch=z9hG4bK-2")
    assert (first.transport, first.host, first.port) == ("UDP", "h.example.com", 5070)
    assert (second.transport, second.host, second.port) == ("UDP", "h.example.com", 5070)
    assert first.params == {"branch": "z9hG4bK-1", "rport": None}
    assert second.params == {"branch": "z9hG4bK-2"}


def test_cseq_bounds() -> None:
    assert parse_cseq(" 2147483647  INVITE ") == CSeq(2**31 - 1, "INVITE")
    for text in ("2147483648 INVITE", "1", "x INVITE", "-1 INVITE", "١ INVITE", "1 IN VITE"):
        with pytest.raises(SipError):
            parse_cseq(text)


def test_content_type() -> None:
    ct = parse_content_type('Multipart/Mixed ; boundary="a b"')
    assert (ct.mime, ct.params) == ("multipart/mixed", {"boundary": '"a b"'})
    for text in ("text", "/plain", "te xt/plain", "text/"):
        with pytest.raises(SipError):
            parse_content_type(text)


# --- whole messages --------------------------------------------------------------------------


def test_leading_crlfs_and_lf_line_ends_are_tolerated() -> None:
    crlf = req(make(body=b"hello"))
    lf = req(b"\r\n\r\n" + make(body=b"hello", line_end="\n"))
    assert lf.call_id == crlf.call_id and lf.body == b"hello"


def test_lf_head_with_crlf_crlf_in_body() -> None:
    # The first empty line ends the headers, whatever line ending it uses.
    body = b"a\r\n\r\nb"
    assert req(make(body=body, line_end="\n")).body == body


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (make(method="INVITE").replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK"), 400),
        (make().replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), 505),
        (make().replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400),
        (make().replace(b"Call-ID: c1@192.0.2.1\r\n", b""), 400),
        (make().replace(b"Call-ID: c1@192.0.2.1", b"Call-ID: c1\r\nCall-ID: c2"), 400),
        (make("Expires: 4294967296"), 400),
        (make("Contact: <sip:a@b>;expires=99999999999999"), 400),
        (make("Warning: 30 agent text"), 400),
        (make("Content-Type: text"), 400),
        (make("Bad Header: x"), 400),
        (make("NoColon"), 400),
        (make("Route: sip:p1;lr, <sip:p2"), 400),
        (make("Via: SIP/2.0/UDP h;rport=70000"), 400),
        (make(length=5), 400),
        (make().replace(b"Content-Length: 0", b"Content-Length: \xd9\xa3"), 400),
        (make().replace(b"Content-Length: 0", b"Content-Length: " + b"9" * 5000), 413),
        (b"SIP/2.0 99 Too Low\r\n\r\n", 400),
        (b"SIP/2.0 \xd9\xa2\xd9\xa0\xd9\xa0 OK\r\n\r\n", 400),
        (b"", 400),
        (b"\r\n\r\n", 400),
        (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h", 400),
    ],
)
def test_rejected(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == status


def test_response_model() -> None:
    data = (
        b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r\r\nCSeq: 4 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    m = parse_message(data)
    assert isinstance(m, Response)
    assert (m.status, m.reason, m.to.tag) == (180, "Ringing", "2")
    assert m.serialize() == data


def test_serialize_parse_round_trip() -> None:
    headers = Headers()
    headers.add("Via", "SIP/2.0/TCP 192.0.2.7:5070;branch=z9hG4bK-rt;rport")
    headers.add("From", '"Ålice \\"A\\"" <sip:alice@example.com>;tag=x1')
    headers.add("To", "<sip:room@chorus.example.com>")
    headers.add("Call-ID", "rt@192.0.2.7")
    headers.add("CSeq", "12 INVITE")
    headers.add("Contact", '<sip:alice@192.0.2.7:5070;transport=tcp>;+sip.instance="<x>"')
    headers.add("Content-Type", "application/sdp")
    body = "v=0\r\ns=é\r\n".encode()
    request = Request(
        headers=headers,
        body=body,
        method="INVITE",
        uri=SipUri("chorus.example.com", "room", params={"transport": "tcp"}),
    )
    data = request.serialize()
    assert data.endswith(b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    again = req(data)
    assert again.method == "INVITE" and again.uri == request.uri and again.body == body
    assert again.from_.display_name == 'Ålice "A"'
    expected = Headers(list(headers))
    expected.add("Content-Length", str(len(body)))
    assert again.headers == expected
    assert req(again.serialize(), stream=True) == again


# --- make_response -------------------------------------------------------------------------


def invite() -> Request:
    return req(
        b"INVITE sip:room@chorus.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK-p, SIP/2.0/UDP 192.0.2.1"
        b";branch=z9hG4bK-u;received=192.0.2.9\r\n"
        b"Via: SIP/2.0/TCP first.example.com;branch=z9hG4bK-f\r\n"
        b"Record-Route: <sip:proxy.example.com;lr>\r\n"
        b"Record-Route: <sip:edge.example.com;lr>\r\n"
        b"From:   Alice <sip:alice@example.com> ;tag=a1\r\n"
        b"To: <sip:room@chorus.example.com>\r\n"
        b"Call-ID: mr@192.0.2.1\r\nCSeq:  5  INVITE\r\nTimestamp: 54.2\r\n"
        b"Contact: <sip:alice@192.0.2.1>\r\nContent-Length: 0\r\n\r\n"
    )


def test_make_response_copies_per_rfc3261() -> None:
    request = invite()
    ok = request.make_response(200, to_tag="r1", body=b"v=0\r\n", content_type="application/sdp")
    assert ok.headers.get_raw("Via") == request.headers.get_raw("Via")
    assert ok.headers.get("From") == "Alice <sip:alice@example.com> ;tag=a1"
    assert ok.headers.get("Call-ID") == "mr@192.0.2.1"
    assert ok.headers.get("CSeq") == "5  INVITE"
    assert ok.to.tag == "r1" and ok.to.uri == request.to.uri
    assert ok.headers.get_raw("Record-Route") == [
        "<sip:proxy.example.com;lr>",
        "<sip:edge.example.com;lr>",
    ]
    assert "Timestamp" not in ok.headers
    assert ok.reason == "OK"
    again = parse_message(ok.serialize())
    assert isinstance(again, Response) and again.body == b"v=0\r\n"
    assert again.content_type is not None and again.content_type.mime == "application/sdp"
    assert [v.branch for v in again.vias] == ["z9hG4bK-p", "z9hG4bK-u", "z9hG4bK-f"]


def test_make_response_trying_has_no_tag_and_copies_timestamp() -> None:
    trying = invite().make_response(100, to_tag="r1")
    assert trying.to.tag is None
    assert trying.headers.get("Timestamp") == "54.2"
    assert "Record-Route" not in trying.headers


def test_make_response_error_has_no_record_route() -> None:
    busy = invite().make_response(486, to_tag="r1")
    assert "Record-Route" not in busy.headers
    assert busy.reason == "Busy Here"
    assert invite().make_response(499).reason == "Bad Request"  # class fallback


def test_make_response_keeps_an_existing_to_tag() -> None:
    data = make().replace(b"To: <sip:room@chorus.example.com>", b"To: <sip:r@c>;tag=old")
    request = req(data)
    assert request.make_response(200, to_tag="new").to.tag == "old"


def test_make_response_non_dialog_method_has_no_record_route() -> None:
    request = req(make("Record-Route: <sip:p;lr>"))
    assert "Record-Route" not in request.make_response(200, to_tag="t").headers


# --- limits ------------------------------------------------------------------------------------


def test_header_block_too_large_is_513_and_answerable() -> None:
    data = make("X-Pad: " + "p" * 2000)
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_header_bytes=1000)
    assert info.value.status == 513
    response = build_error_response(info.value)
    assert response is not None and response.startswith(b"SIP/2.0 513 Message Too Large\r\n")
    assert parse_message(data).headers.get("X-Pad") == "p" * 2000


def test_body_too_large_is_413_and_answerable() -> None:
    data = make(body=b"x" * 101)
    with pytest.raises(SipParseError) as info:
        parse_message(data, max_body_bytes=100)
    assert info.value.status == 413
    response = build_error_response(info.value)
    assert response is not None and response.startswith(b"SIP/2.0 413 ")
    assert len(req(data, max_body_bytes=101).body) == 101


def test_framer_limits() -> None:
    framer = StreamFramer(max_header_bytes=500, max_body_bytes=100)
    with pytest.raises(SipParseError) as info:
        framer.feed(make(length=101))
    assert info.value.status == 413
    assert info.value.is_request
    assert build_error_response(info.value) is not None
    framer = StreamFramer(max_header_bytes=500)
    with pytest.raises(SipParseError) as info:
        for _ in range(10):
            framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nX-Pad: " + b"p" * 100)
    assert info.value.status == 513
    framer = StreamFramer()
    with pytest.raises(SipParseError) as info:
        framer.feed(make().replace(b"Content-Length: 0", b"Content-Length: " + b"7" * 5000))
    assert info.value.status == 413


def test_build_error_response_sanitizes_the_warning() -> None:
    error = SipParseError(
        400,
        'bad "thing" \\ \x00\udcff',
        is_request=True,
        raw_headers=list(req(make()).headers),
    )
    response = build_error_response(error, to_tag="zz")
    assert response is not None
    answer = parse_message(response)
    assert isinstance(answer, Response)
    assert answer.headers.get("Warning") == '399 chorus "bad \\"thing\\" \\\\ ??"'
    assert answer.to.tag == "zz"


def test_build_error_response_needs_a_via() -> None:
    # With only a Via the 400 still goes out (RFC 4475 §3.3.1), carrying just that Via.
    error = SipParseError(400, "x", is_request=True, raw_headers=[("Via", "SIP/2.0/UDP h")])
    response = build_error_response(error)
    assert response is not None
    assert response.startswith(b"SIP/2.0 400 Bad Request\r\nVia: SIP/2.0/UDP h\r\n")
    assert b"\r\nCall-ID:" not in response
    no_via = SipParseError(400, "x", is_request=True, raw_headers=[("Call-ID", "c")])
    assert build_error_response(no_via) is None
    assert build_error_response(SipParseError(400, "x")) is None


# --- stream framing ----------------------------------------------------------------------------


def three_messages() -> list[bytes]:
    return [
        make(body=b"one"),
        make("Subject: two", body=b"\r\n\r\ntwo\r\n"),
        make(method="INVITE", body=b""),
    ]


def test_framer_several_messages_in_one_feed() -> None:
    messages = three_messages()
    framer = StreamFramer()
    assert framer.feed(b"".join(messages)) == messages
    assert framer.buffered == 0


def test_framer_every_split_point() -> None:
    messages = three_messages()
    stream = b"\r\n".join(messages)  # a lone CRLF between messages is a keep-alive
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        out = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert out == messages, cut
        assert framer.buffered == 0


def test_framer_keepalive_pings_whatever_the_split() -> None:
    message = make()
    stream = b"\r\n\r\n" + message + b"\r\n\r\n\r\n\r\n" + message + b"\r\n"
    for cut in range(len(stream) + 1):
        framer = StreamFramer()
        out = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert out == [message, message]
        assert framer.pings == 3, cut
    framer = StreamFramer()
    for byte in stream:
        framer.feed(bytes([byte]))
    assert framer.pings == 3


def test_framer_waits_for_the_body() -> None:
    data = make(body=b"0123456789")
    framer = StreamFramer()
    assert framer.feed(data[:-1]) == []
    assert framer.buffered == len(data) - 1
    assert framer.feed(data[-1:]) == [data]


def test_framer_ignores_folded_continuations() -> None:
    # A continuation line " l: 5" is part of Subject, not a Content-Length (RFC 3261 §7.3.1).
    data = make("Subject: a\r\n l: 5")
    assert StreamFramer().feed(data) == [data]
    assert req(data, stream=True).headers.get("Subject") == "a l: 5"


@pytest.mark.parametrize(
    "data",
    [
        make().replace(b"Content-Length: 0\r\n", b""),
        make().replace(b"Content-Length: 0", b"Content-Length: x"),
        make().replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 0"),
    ],
)
def test_framer_rejects_bad_content_length(data: bytes) -> None:
    with pytest.raises(SipParseError) as info:
        StreamFramer().feed(data)
    assert info.value.status == 400
    assert info.value.is_request


def test_stream_parse_requires_content_length() -> None:
    data = make().replace(b"Content-Length: 0\r\n", b"")
    assert req(data).body == b""
    with pytest.raises(SipParseError):
        parse_message(data, stream=True)


# --- Headers container -------------------------------------------------------------------------


def test_headers_container() -> None:
    headers = Headers([("v", "a"), ("Subject", "s"), ("via", "b")])
    headers.prepend("Via", "top")
    assert headers.get_raw("VIA") == ["top", "a", "b"]
    headers.set("Via", "only")
    assert list(headers) == [("Via", "only"), ("Subject", "s")]
    headers.remove("subject")
    assert "Subject" not in headers and len(headers) == 1
    assert headers.get("Subject", "none") == "none"
    assert 5 not in headers
    copy = headers.copy()
    assert copy == headers
    copy.add("X", "1")
    assert copy != headers
    assert headers != [("Via", "only")]


def test_list_headers_are_checked_so_later_reads_cannot_fail() -> None:
    with pytest.raises(SipParseError):
        parse_message(make('Supported: "timer'))
    assert req(make('Accept: text/plain;q="0.5, x"')).headers.get_all("Accept") == [
        'text/plain;q="0.5, x"'
    ]


def test_framer_keeps_messages_framed_before_an_error() -> None:
    good = make(body=b"one")
    framer = StreamFramer()
    assert framer.feed(good + b"GARBAGE LINE\r\n\r\n") == [good]
    assert framer.error is not None and framer.error.status == 400
    with pytest.raises(SipParseError):
        framer.feed(b"more")


# --- parsed views and the fast paths -------------------------------------------------------


def test_parsed_views_follow_changes_to_the_headers() -> None:
    request = req(make("Contact: <sip:alice@192.0.2.1>"))
    assert request.to.tag is None and request.top_via.branch == "z9hG4bK-1"
    assert request.cseq == CSeq(1, "OPTIONS") and len(request.contacts) == 1
    request.headers.set("To", "<sip:room@chorus.example.com>;tag=x")
    request.headers.set("Via", "SIP/2.0/TCP 192.0.2.2;branch=z9hG4bK-2")
    request.headers.set("CSeq", "7 OPTIONS")
    request.headers.remove("Contact")
    assert request.to.tag == "x" and request.top_via.branch == "z9hG4bK-2"
    assert request.cseq == CSeq(7, "OPTIONS") and request.contacts == []
    request.headers.add("Content-Type", "text/plain")
    assert request.content_type is not None and request.content_type.mime == "text/plain"
    request.contacts.append(NameAddr(SipUri("h")))  # a copy: the remembered list is not changed
    assert request.contacts == []


@pytest.mark.parametrize(
    "to",
    [
        "<sip:room@chorus.example.com>",
        "Room <sip:room@chorus.example.com>;x=1",
        '"Room"   <sip:room@chorus.example.com>',  # not as it prints: rebuilt from the parse
        "sip:room@chorus.example.com;x=1",
        "<sip:room@chorus.example.com>;tag",  # a tag without a value keeps its place
        "<SIP:Room@Chorus.example.com;lr>",
    ],
)
def test_a_to_tag_is_added_as_the_parsed_value_prints(to: str) -> None:
    request = req(make().replace(b"To: <sip:room@chorus.example.com>", f"To: {to}".encode()))
    ok = request.make_response(200, to_tag="t1")
    assert ok.headers.get("To") == str(parse_name_addr(to).with_tag("t1"))


@pytest.mark.parametrize(
    ("tail", "header", "body"),
    [
        (b"\r\n\r\nB", None, b"B"),
        (b"\n\nB\r\n\r\nC", None, b"B\r\n\r\nC"),
        (b"\r\nY: 2\n\r\nC", "2", b"C"),
        (b"\r\n\nB", None, b"B"),
        (b"\n\r\n\r\nB", None, b"\r\nB"),
        (b"\nY: 2\n\nB\n\nC", "2", b"B\n\nC"),
    ],
)
def test_the_head_ends_at_the_first_empty_line_whatever_its_line_ends(
    tail: bytes, header: str | None, body: bytes
) -> None:
    """RFC 3261 §7.5 tolerance: CRLF CRLF, LF LF, or a mix; the first empty line wins."""
    head = make().split(b"\r\nContent-Length")[0] + b"\r\nX: 1"
    message = req(head + tail)
    assert message.headers.get("X") == "1"
    assert message.headers.get("Y") == header
    assert message.body == body


@pytest.mark.parametrize("status", [100, 180, 200, 486])
@pytest.mark.parametrize("to_tag", [None, "t1"])
@pytest.mark.parametrize(
    "to",
    [
        "<sip:room@chorus.example.com>",
        '"Room"   <sip:room@chorus.example.com>',
        "<sip:room@chorus.example.com>;tag=old",
        "<sip:room@chorus.example.com>;tag",
    ],
)
def test_a_response_reads_as_its_bytes_parse(status: int, to_tag: str | None, to: str) -> None:
    """make_response hands the request's parses to the response: they must be what a parse
    of the response would give."""
    request = req(make().replace(b"To: <sip:room@chorus.example.com>", f"To: {to}".encode()))
    request.to  # noqa: B018 - parsed and remembered, as the stack does before answering
    response = request.make_response(status, to_tag=to_tag)
    response.headers.add("Contact", "<sip:room@192.0.2.9>")
    again = parse_message(response.serialize())
    views = ("to", "from_", "cseq", "top_via", "vias", "contacts", "call_id")
    assert [getattr(response, v) for v in views] == [getattr(again, v) for v in views]


@pytest.mark.parametrize("line", ["Via", "To", "Subject", "Via SIP/2.0/UDP h"])
def test_a_line_without_colon_is_rejected_even_when_it_is_a_known_name(line: str) -> None:
    req(make("Subject: x"))  # every name of the lines below has been seen
    with pytest.raises(SipParseError) as info:
        parse_message(make(line))
    assert info.value.status == 400 and "bad header line" in info.value.reason
