"""RFC 4475 torture messages against the SIP parser.

The vectors in tests/data/rfc4475 are the RFC's messages byte for byte as its notation defines
them (CRLF line ends, <hex> octets expanded, <allOneLine> joined; see the README there). Each is
fed whole as a datagram, with trailing octets, and one byte at a time through StreamFramer
where it has a Content-Length, as h11's reader tests do.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from control.sip.errors import SipParseError
from control.sip.framing import StreamFramer, build_error_response
from control.sip.headers import Headers
from control.sip.message import (
    Request,
    Response,
    parse_message,
)
from control.sip.uri import AbsoluteUri, NameAddr, SipUri, parse_name_addr

DATA = Path(__file__).parent / "data" / "rfc4475"

# RFC 4475 §3.1.1: syntactically valid, must parse.
VALID_SYNTAX = [
    "wsinv",
    "intmeth",
    "esc01",
    "escnull",
    "esc02",
    "lwsdisp",
    "longreq",
    "dblreq",
    "semiuri",
    "transports",
    "mpart01",
    "unreason",
    "noreason",
]
# §3.2, §3.3 and §3.4 messages that are well formed: the parser accepts them and the
# transaction or application layer answers them (416, 420, 415, 401, 483, ...).
VALID_SEMANTICS = [
    "badbranch",
    "unkscm",
    "novelsc",
    "unksm2",
    "bext01",
    "invut",
    "regaut01",
    "bcast",
    "zeromf",
    "cparam01",
    "cparam02",
    "regescrt",
    "sdp01",
    "inv2543",
]
VALID = VALID_SYNTAX + VALID_SEMANTICS

# RFC 4475 §3.1.2 and §3.3.1/§3.3.8/§3.3.9: must be rejected; the status a server answers.
INVALID = {
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": 400,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "baddate": 400,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": 400,
    "insuf": 400,
    "multi01": 400,
    "mcl01": 400,
}
# Responses: nothing can be answered to them.
INVALID_RESPONSES = {"scalarlg", "bigcode"}
# Requests whose malformed part is one of the five headers a response copies verbatim
# (RFC 3261 §8.2.6.2): the answer still goes out, but it carries the same defect.
DEFECT_COPIED = {"badinv01", "scalar02", "quotbal", "badaspec", "baddn"}
# insuf lacks From, To and Call-ID: no response can be addressed (RFC 4475 §3.3.1).
# Requests missing mandatory headers: RFC 4475 §3.3.1 wants a 400 all the same, addressed by
# the Via, with whatever of From/To/Call-ID/CSeq the request had.
INCOMPLETE = {"insuf"}


def load(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def head_and_length(data: bytes) -> tuple[int, int | None]:
    """Where the header block ends and the declared Content-Length, read independently."""
    end = data.index(b"\r\n\r\n") + 4
    for line in data[:end].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return end, int(value.strip())
    return end, None


def framed(data: bytes) -> bytes:
    end, length = head_and_length(data)
    assert length is not None
    return data[: end + length]


def feed_bytewise(data: bytes) -> tuple[list[bytes], StreamFramer]:
    framer = StreamFramer()
    out: list[bytes] = []
    for index in range(len(data)):
        out.extend(framer.feed(data[index : index + 1]))
    return out, framer


def fields(message: Request | Response) -> tuple[object, ...]:
    """Everything a consumer reads, for comparing two parses of one message."""
    start: tuple[object, ...]
    if isinstance(message, Request):
        start = ("request", message.method, message.uri)
    else:
        start = ("response", message.status, message.reason)
    headers = [(n, v) for n, v in message.headers if n != "Content-Length"]
    return (
        *start,
        message.call_id,
        message.cseq,
        message.from_,
        message.to,
        message.vias,
        message.contacts,
        message.body,
        headers,
    )


def test_every_vector_is_present() -> None:
    names = {p.stem for p in DATA.glob("*.dat")}
    assert names == set(VALID) | set(INVALID)
    for name in names:
        data = load(name)
        assert b"\r\n\r\n" in data
        # CRLF line ends throughout the header block (RFC 4475 §2).
        head = data[: data.index(b"\r\n\r\n")]
        assert b"\n" not in head.replace(b"\r\n", b"")


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_parses(name: str) -> None:
    message = parse_message(load(name))
    assert message.call_id
    assert message.vias


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_round_trips(name: str) -> None:
    message = parse_message(load(name))
    again = parse_message(message.serialize())
    assert fields(again) == fields(message)
    assert again.serialize() == message.serialize()


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_with_trailing_bytes(name: str) -> None:
    data = load(name)
    end, length = head_and_length(data)
    message = parse_message(data)
    tail = b"GARBAGE\r\n\r\nmore garbage"
    with_tail = parse_message(data + tail)
    if length is None:
        # RFC 3261 §18.3: without Content-Length the body runs to the end of the datagram.
        assert with_tail.body == message.body + tail == data[end:] + tail
        return
    # RFC 3261 §18.3: octets past Content-Length in a datagram are discarded.
    assert fields(with_tail) == fields(message)
    assert len(message.body) == length


@pytest.mark.parametrize("name", VALID)
def test_valid_vector_through_stream_framer(name: str) -> None:
    data = load(name)
    if head_and_length(data)[1] is None:
        # RFC 3261 §18.3: a stream needs Content-Length; without it the framer gives up.
        with pytest.raises(SipParseError) as info:
            feed_bytewise(data)
        assert info.value.status == 400 and info.value.is_request
        return
    whole = framed(data)
    expected = fields(parse_message(data))
    messages, framer = feed_bytewise(whole)
    assert messages == [whole]
    assert framer.buffered == 0
    assert fields(parse_message(messages[0], stream=True)) == expected
    # Whole, then followed by a second copy and keep-alive CRLFs.
    framer = StreamFramer()
    assert framer.feed(whole + b"\r\n\r\n" + whole + b"\r\n") == [whole, whole]
    assert framer.pings == 1


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vector_rejected(name: str) -> None:
    data = load(name)
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == INVALID[name]
    assert info.value.is_request == (name not in INVALID_RESPONSES)
    with pytest.raises(SipParseError):
        parse_message(data + b"\r\ntrailing octets")


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_vector_error_response(name: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_message(load(name))
    error = info.value
    response = build_error_response(error, to_tag="c4fe")
    if name in INVALID_RESPONSES:
        assert response is None
        return
    assert response is not None
    assert response.startswith(f"SIP/2.0 {INVALID[name]} ".encode())
    request_headers = Headers(error.raw_headers)
    if name in INCOMPLETE:
        for header in ("Via", "From", "To", "Call-ID", "CSeq"):
            value = request_headers.get(header)
            if value is None:
                assert f"\r\n{header}:".encode() not in response
            else:
                assert f"{header}: {value}".encode() in response or header == "To"
        return
    if name in DEFECT_COPIED:
        # The copy is verbatim, so the answer holds the request's own defect.
        for header in ("From", "Call-ID", "CSeq"):
            value = request_headers.get(header) or ""
            assert f"{header}: {value}\r\n".encode() in response
        with pytest.raises(SipParseError):
            parse_message(response)
        return
    answer = parse_message(response)
    assert isinstance(answer, Response)
    assert answer.status == INVALID[name]
    assert answer.headers.get_raw("Via") == request_headers.get_raw("Via")
    assert answer.headers.get("From") == request_headers.get("From")
    assert answer.headers.get("Call-ID") == request_headers.get("Call-ID")
    assert answer.headers.get("CSeq") == request_headers.get("CSeq")
    request_to = parse_name_addr(request_headers.get("To") or "")
    assert answer.to.uri == request_to.uri
    assert answer.to.tag == (request_to.tag or "c4fe")
    assert (answer.headers.get("Warning") or "").startswith("399 chorus ")


@pytest.mark.parametrize("name", sorted(set(INVALID) - {"clerr", "ncl", "mcl01", "multi01"}))
def test_invalid_vector_through_stream_framer(name: str) -> None:
    whole = framed(load(name))  # each of these vectors has a Content-Length
    messages, _ = feed_bytewise(whole)
    assert messages == [whole]
    with pytest.raises(SipParseError) as info:
        parse_message(messages[0], stream=True)
    assert info.value.status == INVALID[name]


def test_clerr_on_a_stream_waits_for_the_declared_body() -> None:
    # §3.1.2.2: over a stream, a Content-Length larger than what arrived is just incomplete.
    data = load("clerr")
    messages, framer = feed_bytewise(data)
    assert messages == []
    assert framer.buffered == len(data)


@pytest.mark.parametrize("name", ["ncl", "mcl01"])
def test_stream_framer_rejects_unframeable(name: str) -> None:
    # §3.1.2.3 negative and §3.3.9 duplicate Content-Length: a stream cannot be resynchronised.
    framer = StreamFramer()
    with pytest.raises(SipParseError) as info:
        for byte in load(name):
            framer.feed(bytes([byte]))
    assert info.value.status == 400
    assert info.value.is_request
    assert Headers(info.value.raw_headers).get("Call-ID")


def test_multi01_rejected_for_its_duplicates_alone() -> None:
    # §3.3.8: its l: 154 overstates the 152-octet body; with the octets supplied the request is
    # still refused, for the repeated single-valued headers.
    data = load("multi01") + b"\r\n"
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status == 400
    assert "several" in info.value.reason
    messages, _ = feed_bytewise(data)
    assert len(messages) == 1
    with pytest.raises(SipParseError, match="several"):
        parse_message(messages[0], stream=True)


# --- §3.1.1 field by field ---------------------------------------------------------------


def request(name: str) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    return message


def test_wsinv() -> None:
    m = request("wsinv")
    assert m.method == "INVITE"
    assert m.uri == SipUri("chair-dnrc.example.com", "vivekg", params={"unknownparam": None})
    assert m.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (m.cseq.number, m.cseq.method) == (9, "INVITE")
    assert m.max_forwards == 68
    assert m.to.tag == "1918181833n"
    assert m.to.uri == SipUri("chair-dnrc.example.com", "vivekg")
    assert m.from_.display_name == 'J Rosenberg \\"'
    assert m.from_.tag == "98asjd8"
    vias = m.vias
    assert [(v.transport, v.host, v.branch) for v in vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert m.headers.get("Subject") == ""
    assert m.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert m.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    route = m.headers.name_addrs("Route")
    assert route[0].uri == SipUri(
        "services.example.com",
        params={"lr": None, "unknownwith": "value", "unknown-no-value": None},
    )
    (contact,) = m.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert m.content_type is not None and m.content_type.mime == "application/sdp"
    assert len(m.body) == 150
    assert m.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_intmeth() -> None:
    m = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert m.method == method
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert m.uri.host == "example.com"
    assert m.vias[0].branch == "z9hG4bK-.!%66*_+`'~"
    assert m.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert isinstance(m.to.uri, SipUri)
    assert m.to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert m.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert m.from_.tag == "_token~1'+`*%!-."
    assert m.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert m.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert (m.cseq.number, m.cseq.method) == (139122385, method)
    assert m.max_forwards == 255
    assert m.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert m.body == b""


def test_esc01() -> None:
    m = request("esc01")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "sips%3Auser%40example.com"
    assert m.uri.unescaped_user() == "sips:user@example.com"
    assert m.uri.host == "example.net"
    assert isinstance(m.to.uri, SipUri) and m.to.uri.unescaped_user() == "user"
    assert isinstance(m.from_.uri, SipUri)
    assert m.from_.uri.unescaped_user() == "I have spaces"
    assert m.from_.tag == "938"
    assert m.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact i:
    assert m.content_type is not None and m.content_type.mime == "application/sdp"  # C:
    (contact,) = m.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.unescaped_user() == "caller"
    assert contact.uri.params == {"%6c%72": None, "n%61me": "v%61lue%25%34%31"}
    assert len(m.body) == 150


def test_escnull() -> None:
    m = request("escnull")
    assert m.method == "REGISTER"
    assert isinstance(m.to.uri, SipUri)
    assert m.to.uri.unescaped_user() == "null-\x00-null"
    users = [c.uri.unescaped_user() for c in m.contacts if isinstance(c.uri, SipUri)]
    assert users == ["\x00", "\x00\x00"]
    assert m.body == b""


def test_esc02() -> None:
    m = request("esc02")
    # The method is the token as written: %47 is not an escape in a method (RFC 4475 §3.1.1.5).
    assert m.method == "RE%47IST%45R"
    assert m.cseq.method == "RE%47IST%45R"
    assert m.to.display_name == "%Z%45"
    assert m.from_.display_name == "%Z%45"
    assert m.vias[0].branch == "z9hG4bK209%fzsnel234"
    assert m.vias[0].transport == "TCP"
    # C%6Fntact is an unknown header, not a third Contact.
    hosts = [c.uri.host for c in m.contacts if isinstance(c.uri, SipUri)]
    assert hosts == ["host1.example.com", "host3.example.com"]
    assert m.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp() -> None:
    m = request("lwsdisp")
    assert m.from_.display_name == "caller"
    assert m.from_.tag == "323"
    assert isinstance(m.from_.uri, SipUri) and m.from_.uri.user == "caller"


def test_longreq() -> None:
    m = request("longreq")
    assert m.to.display_name == "I have a user name of " + "extreme" * 10 + " proportion"
    assert isinstance(m.to.uri, SipUri)
    assert m.to.uri.port == 6000
    assert m.to.uri.params["unknownparam1"] == "very" + "long" * 20 + "value"
    assert m.to.uri.params["longparam" + "name" * 25] == "shortvalue"
    assert m.to.uri.params["very" + "long" * 25 + "parameternamewithnovalue"] is None
    assert m.from_.tag == "12" + "982" * 50 + "424"  # compact F:
    assert m.call_id == "longreq.one" + "really" * 20 + "longcallid"
    vias = m.vias
    assert len(vias) == 34
    assert [v.host for v in vias[:33]] == [f"sip{n}.example.com" for n in range(33, 0, -1)]
    assert vias[-1].params["received"] == "192.0.2.5"
    assert vias[-1].branch == "very" + "long" * 50 + "branchvalue"
    assert len(m.headers.get_raw("Via")) == 34
    assert (m.headers.get("Unknown-" + "Long" * 20 + "-Name") or "").startswith("unknown-long")
    (contact,) = m.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.user == "amazinglylongcallername" * 5
    assert len(m.body) == 150


def test_dblreq_ignores_the_second_request() -> None:
    m = request("dblreq")
    assert m.method == "REGISTER"
    assert m.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"  # compact I:
    assert m.body == b""
    assert len(m.vias) == 1 and m.vias[0].branch == "z9hG4bKkdjuw23492"
    # On a stream the same octets are two messages.
    framer = StreamFramer()
    first, second = framer.feed(load("dblreq"))
    assert parse_message(first, stream=True).call_id == m.call_id
    invite = parse_message(second, stream=True)
    assert isinstance(invite, Request) and invite.method == "INVITE"
    assert invite.to.uri == SipUri("example.com", "joe")  # compact t:
    assert framer.buffered == 0  # the 2 octets past its Content-Length are CRLF keep-alive


def test_semiuri() -> None:
    m = request("semiuri")
    assert isinstance(m.uri, SipUri)
    assert m.uri.user == "user;par=u%40example.net"
    assert m.uri.host == "example.com"
    assert m.uri.params == {}
    accept = m.headers.get("Accept") or ""
    assert [a.strip() for a in accept.split(",")] == [
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    ]
    assert m.headers.get_all("Accept")[-1] == "message/sipfrag"


def test_transports() -> None:
    m = request("transports")
    assert m.call_id == "transports.kijh4akdnaqjkwendsasfdj"
    assert [(v.transport, v.host, v.branch) for v in m.vias] == [
        ("UDP", "t1.example.com", "z9hG4bKkdjuw"),
        ("SCTP", "t2.example.com", "z9hG4bKklasjdhf"),
        ("TLS", "t3.example.com", "z9hG4bK2980unddj"),
        ("UNKNOWN", "t4.example.com", "z9hG4bKasd0f3en"),
        ("TCP", "t5.example.com", "z9hG4bK0a9idfnee"),
    ]


def test_mpart01() -> None:
    m = request("mpart01")
    assert m.method == "MESSAGE"
    assert len(m.body) == 553
    assert b"\x00" in m.body  # binary part with NULs framed by Content-Length only
    assert m.body.endswith(b"--7a9cbec02ceef655--\r\n")
    content_type = m.content_type
    assert content_type is not None
    assert content_type.mime == "multipart/mixed"
    assert content_type.params == {"boundary": "7a9cbec02ceef655"}
    assert m.vias[0].port == 5070
    assert m.vias[0].params["rport"] is None
    assert (m.headers.get("Identity") or "").startswith("r5mwreLuyDRYBi/")


def test_unreason() -> None:
    m = parse_message(load("unreason"))
    assert isinstance(m, Response)
    assert m.status == 200
    assert m.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(m.body) == 154
    assert m.to.tag == "2229"


def test_noreason() -> None:
    m = parse_message(load("noreason"))
    assert isinstance(m, Response)
    assert (m.status, m.reason) == (100, "")
    assert m.from_.tag == "39ansfi3"


# --- §3.2 to §3.4: well formed, answered above the parser --------------------------------


def test_badbranch_keeps_its_bare_magic_cookie() -> None:
    assert request("badbranch").top_via.branch == "z9hG4bK"


def test_unkscm_request_uri_allows_416() -> None:
    m = request("unkscm")
    assert m.uri == AbsoluteUri("nobodyknowsthisscheme", "totallyopaquecontent")


def test_novelsc_request_uri_allows_416() -> None:
    assert request("novelsc").uri == AbsoluteUri("soap.beep", "//192.0.2.103:3002")


def test_unksm2_header_uris() -> None:
    m = request("unksm2")
    assert m.to.uri == AbsoluteUri("isbn", "2983792873")
    assert m.from_.uri == AbsoluteUri("http", "//www.example.com")
    assert m.from_.tag == "3234233"
    assert [c.uri for c in m.contacts] == [AbsoluteUri("name", "John_Smith")]


def test_bext01_requires() -> None:
    m = request("bext01")
    assert m.headers.get_all("Require") == ["nothingSupportsThis", "nothingSupportsThisEither"]
    assert m.headers.get_all("Proxy-Require") == [
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    ]
    assert m.top_via.transport == "TLS"


def test_invut_unknown_content_type() -> None:
    m = request("invut")
    assert m.content_type is not None and m.content_type.mime == "application/unknownformat"
    assert m.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def test_regaut01_unknown_scheme_kept_raw() -> None:
    m = request("regaut01")
    assert m.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def test_bcast_response() -> None:
    m = parse_message(load("bcast"))
    assert isinstance(m, Response)
    assert [v.host for v in m.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf() -> None:
    assert request("zeromf").max_forwards == 0


def test_cparam01_parameter_belongs_to_the_header() -> None:
    (contact,) = request("cparam01").contacts
    assert contact.params == {"unknownparam": None}
    assert isinstance(contact.uri, SipUri) and contact.uri.params == {}


def test_cparam02_parameter_belongs_to_the_uri() -> None:
    (contact,) = request("cparam02").contacts
    assert contact.params == {}
    assert isinstance(contact.uri, SipUri) and contact.uri.params == {"unknownparam": None}


def test_regescrt_contact_uri_header() -> None:
    (contact,) = request("regescrt").contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}


def test_sdp01_accept() -> None:
    assert request("sdp01").headers.get("Accept") == "text/nobodyKnowsThis"


def test_inv2543() -> None:
    m = request("inv2543")
    assert m.top_via.branch is None
    assert m.max_forwards is None
    assert m.from_.tag is None
    assert m.to == NameAddr(SipUri("ss1.example.net", "+16505552222"), None, {"user": "phone"})
    assert isinstance(m.from_.uri, SipUri) and m.from_.uri.params == {"user": "phone"}
    assert m.body.startswith(b"v=0\r\n") and len(m.body) == 105
