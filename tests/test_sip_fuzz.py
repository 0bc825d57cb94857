"""hypothesis properties of the SIP parser, framer and transports.

(a) any bytes give a Request, a Response or a SipParseError, and nothing else escapes
parse_message or StreamFramer.feed; a parsed message re-serializes to one that parses the same;
(b) generated valid requests and responses round-trip field for field;
(c) any split of a stream of several messages yields the same messages;
plus mutations (flips, inserts, deletions) of the RFC 4475 vectors, also fed to the UDP and
stream transports, out of which no exception may escape.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.config import ListenAddress
from control.sip.errors import SipParseError
from control.sip.framing import StreamFramer, build_error_response
from control.sip.headers import COMPACT_FORMS, CSeq, Via
from control.sip.message import (
    Request,
    Response,
    parse_message,
)
from control.sip.transport import Peer, SipTransportLayer, StreamConnection, _UdpProtocol
from control.sip.uri import AbsoluteUri, NameAddr, SipUri, Uri

DATA = Path(__file__).parent / "data" / "rfc4475"
VECTORS = {p.stem: p.read_bytes() for p in sorted(DATA.glob("*.dat"))}
# The vectors RFC 4475 says must be rejected (see test_sip_rfc4475.INVALID).
INVALID_VECTORS = {
    "badinv01", "clerr", "ncl", "scalar02", "scalarlg", "quotbal", "ltgtruri", "lwsruri",
    "lwsstart", "trws", "escruri", "baddate", "regbadct", "badaspec", "baddn", "badvers",
    "mismatch01", "mismatch02", "bigcode", "insuf", "multi01", "mcl01",
}  # fmt: skip

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fields(message: Request | Response) -> tuple[object, ...]:
    """Every parsed view of a message, so two parses can be compared."""
    start: tuple[object, ...]
    if isinstance(message, Request):
        start = ("request", message.method, message.uri, message.max_forwards)
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
        message.top_via,
        message.contacts,
        message.content_type,
        message.body,
        headers,
    )


def check_any_input(data: bytes) -> None:
    """The whole contract for untrusted bytes, as a datagram and as a stream."""
    try:
        message = parse_message(data)
    except SipParseError as error:
        assert 400 <= error.status <= 599
        response = build_error_response(error, to_tag="fz")
        assert response is None or response.startswith(b"SIP/2.0 ")
    else:
        assert isinstance(message, Request | Response)
        again = parse_message(message.serialize())
        assert fields(again) == fields(message)
    framer = StreamFramer()
    try:
        for start in range(0, len(data), 7):
            for raw in framer.feed(data[start : start + 7]):
                try:
                    parse_message(raw, stream=True)
                except SipParseError:
                    pass
    except SipParseError as error:
        assert 400 <= error.status <= 599
        build_error_response(error)


# --- (a) any bytes ---------------------------------------------------------------------------

SIP_PIECES = [
    b"INVITE ",
    b"OPTIONS ",
    b"SIP/2.0 ",
    b"SIP/2.0",
    b" 200 OK",
    b"sip:",
    b"sips:",
    b"tel:",
    b"user@",
    b"example.com",
    b"[::1]",
    b":5060",
    b"\r\n",
    b"\r\n\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"<",
    b">",
    b'"',
    b"\\",
    b"=",
    b"?",
    b"&",
    b"%00",
    b"\x00",
    b"\xff",
    b"\xd0\xb9",
    b"Via: SIP/2.0/UDP h;branch=z9hG4bK1",
    b"Via: ",
    b"v: ",
    b"From: ",
    b"To: ",
    b"Call-ID: ",
    b"CSeq: 1 INVITE",
    b"CSeq: ",
    b"Contact: ",
    b"Content-Length: ",
    b"l: ",
    b"Max-Forwards: ",
    b"Content-Type: ",
    b"Expires: ",
    b";tag=",
    b"0",
    b"1",
    b"9999999999999",
    b"-1",
]
sip_like = st.lists(st.one_of(st.sampled_from(SIP_PIECES), st.binary(max_size=4)), max_size=40).map(
    b"".join
)

HEAD = (
    b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
    b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
)


@FUZZ
@given(st.binary(max_size=600))
def test_any_bytes(data: bytes) -> None:
    check_any_input(data)


@FUZZ
@given(sip_like)
def test_any_sip_like_bytes(data: bytes) -> None:
    check_any_input(data)


@FUZZ
@given(sip_like)
def test_any_header_lines_after_a_valid_head(tail: bytes) -> None:
    check_any_input(HEAD + tail)
    check_any_input(HEAD + tail + b"\r\nContent-Length: 0\r\n\r\n")


# --- (b) generated messages round-trip ------------------------------------------------------

ALPHA = "abcdefghijklmnopqrstuvwxyz"
TOKEN_CHARS = ALPHA + ALPHA.upper() + "0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_CHARS, min_size=1, max_size=12)
lower_tokens = st.text(ALPHA + "0123456789-._", min_size=1, max_size=10)
methods = st.one_of(
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE"]),
    st.sampled_from(["NOTIFY", "REFER", "MESSAGE", "INFO", "PRACK", "UPDATE", "PUBLISH"]),
    tokens,
)
labels = st.text(ALPHA + "0123456789", min_size=1, max_size=8)
hostnames = st.lists(labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.lists(st.integers(0, 0xFFFF).map("{:x}".format), min_size=8, max_size=8).map(
    lambda groups: "[" + ":".join(groups) + "]"
)
hosts = st.one_of(hostnames, ipv4, ipv6, st.just("[::1]"))
ports = st.one_of(st.none(), st.integers(1, 65535))
ESCAPES = ["%40", "%20", "%3a", "%00", "%25"]
user_parts = st.lists(
    st.one_of(
        st.text(TOKEN_CHARS + "&=+$,;?/()", min_size=1, max_size=6), st.sampled_from(ESCAPES)
    ),
    min_size=1,
    max_size=4,
).map("".join)
passwords = st.one_of(st.none(), st.text(TOKEN_CHARS + "&=+$,", max_size=6))
param_values = st.one_of(st.none(), st.text(TOKEN_CHARS + "[]/:&+$", min_size=1, max_size=8))
uri_params = st.dictionaries(lower_tokens, param_values, max_size=3)
header_params = st.dictionaries(
    lower_tokens.filter(lambda name: name not in ("tag", "expires")),
    st.one_of(param_values, st.text(ALPHA + " ,;=", max_size=6).map(lambda t: f'"{t}"')),
    max_size=2,
)
uri_headers = st.dictionaries(tokens, st.text(TOKEN_CHARS, max_size=6), max_size=2)


@st.composite
def sip_uris(draw: st.DrawFn, *, with_headers: bool = True) -> SipUri:
    user = draw(st.one_of(st.none(), user_parts))
    return SipUri(
        host=draw(hosts),
        user=user,
        password=draw(passwords) if user is not None else None,
        port=draw(ports),
        scheme=draw(st.sampled_from(["sip", "sips"])),
        params=draw(uri_params),
        headers=draw(uri_headers) if with_headers else {},
    )


absolute_uris = st.builds(
    AbsoluteUri,
    st.sampled_from(["tel", "urn", "im", "http", "mailto"]),
    st.text(TOKEN_CHARS + "/:;=@+", min_size=1, max_size=15),
)
request_uris: st.SearchStrategy[Uri] = st.one_of(
    sip_uris(with_headers=False), sip_uris(with_headers=False), absolute_uris
)
# Any character a header line can carry: no CR or LF, no lone surrogate.
LINE_CHARS = st.characters(codec="utf-8", exclude_characters="\r\n")
display_names = st.one_of(
    st.none(),
    st.text(LINE_CHARS, max_size=12),
)


@st.composite
def name_addrs(draw: st.DrawFn, tag: bool) -> NameAddr:
    params = draw(header_params)
    if tag:
        params = {"tag": draw(tokens), **params}
    return NameAddr(draw(st.one_of(sip_uris(), absolute_uris)), draw(display_names), params)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params: dict[str, str | None] = {"branch": "z9hG4bK" + draw(tokens)}
    if draw(st.booleans()):
        params["rport"] = draw(st.one_of(st.none(), st.integers(1, 65535).map(str)))
    if draw(st.booleans()):
        params["received"] = draw(st.one_of(ipv4, ipv6.map(lambda h: h[1:-1])))
    transport = draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS", "WSS"]))
    return Via(transport, draw(hosts), draw(ports), params)


call_ids = st.tuples(
    st.text(TOKEN_CHARS + '()<>:\\"/[]?{}', min_size=1, max_size=20),
    st.one_of(st.just(""), hostnames.map(lambda h: "@" + h)),
).map("".join)
extra_headers = st.lists(
    st.tuples(
        tokens.map(lambda name: "X-" + name),
        st.text(LINE_CHARS, max_size=20).map(lambda value: value.strip(" \t")),
    ),
    max_size=4,
)
reasons = st.text(LINE_CHARS, max_size=20).map(lambda text: text.strip(" \t"))
case_changes = st.sampled_from(["as-is", "lower", "upper"])


class Generated:
    """A message described field by field, and its wire form."""

    def __init__(self, data: bytes, expect: dict[str, object]) -> None:
        self.data = data
        self.expect = expect

    def __repr__(self) -> str:
        return f"Generated({self.data!r})"


@st.composite
def messages(draw: st.DrawFn, *, request: bool | None = None) -> Generated:
    is_request = draw(st.booleans()) if request is None else request
    method = draw(methods)
    cseq = CSeq(draw(st.integers(0, 2**31 - 1)), method)
    via_list = draw(st.lists(vias(), min_size=1, max_size=4))
    from_ = draw(name_addrs(tag=True))
    to = draw(name_addrs(tag=not is_request))
    contacts = draw(st.lists(name_addrs(tag=False), max_size=3))
    body = draw(st.binary(max_size=200))
    call_id = draw(call_ids)
    extras = draw(extra_headers)

    def name(long: str) -> str:
        compact = [c for c, full in COMPACT_FORMS.items() if full == long]
        use_compact: bool = draw(st.booleans())
        if compact and use_compact:
            return compact[0]
        change = draw(case_changes)
        return long.lower() if change == "lower" else long.upper() if change == "upper" else long

    # Groups keep their own order (Via order is meaningful); the groups are shuffled.
    groups: list[list[tuple[str, str]]] = []
    if draw(st.booleans()):  # one Via line holding them all (RFC 3261 §7.3.1)
        groups.append([(name("Via"), ", ".join(map(str, via_list)))])
    else:
        groups.append([(name("Via"), str(v)) for v in via_list])
    groups += [
        [(name("From"), str(from_))],
        [(name("To"), str(to))],
        [(name("Call-ID"), call_id)],
        [(name("CSeq"), f"{cseq.number} {cseq.method}")],
    ]
    if contacts:
        groups.append([(name("Contact"), ", ".join(map(str, contacts)))])
    if body:
        groups.append([(name("Content-Type"), "application/octet-stream")])
    groups.append(extras)
    lines = [line for group in draw(st.permutations(groups)) for line in group]
    if is_request:
        uri = draw(request_uris)
        max_forwards = draw(st.one_of(st.none(), st.integers(0, 255)))
        if max_forwards is not None:
            lines.append(("Max-Forwards", str(max_forwards)))
        start = f"{method} {uri} SIP/2.0"
        expect: dict[str, object] = {"method": method, "uri": uri, "max_forwards": max_forwards}
    else:
        status = draw(st.integers(100, 699))
        reason = draw(reasons)
        start = f"SIP/2.0 {status} {reason}"
        expect = {"status": status, "reason": reason}
    lines.append((name("Content-Length"), str(len(body))))
    head = start + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in lines) + "\r\n"
    expect.update(
        call_id=call_id,
        cseq=cseq,
        from_=from_,
        to=to,
        vias=via_list,
        contacts=contacts,
        body=body,
    )
    return Generated(head.encode("utf-8") + body, expect)


@FUZZ
@given(messages())
def test_generated_messages_round_trip(generated: Generated) -> None:
    message = parse_message(generated.data)
    for attribute, value in generated.expect.items():
        assert getattr(message, attribute) == value, attribute
    for stream in (False, True):
        again = parse_message(message.serialize(), stream=stream)
        assert fields(again) == fields(message)
        assert again.serialize() == message.serialize()


@FUZZ
@given(messages(request=True))
def test_generated_requests_answer(generated: Generated) -> None:
    message = parse_message(generated.data)
    assert isinstance(message, Request)
    response = parse_message(message.make_response(486, to_tag="r1").serialize())
    assert isinstance(response, Response)
    assert response.vias == message.vias
    assert response.call_id == message.call_id
    assert response.cseq == message.cseq
    assert response.from_ == message.from_
    assert response.to.uri == message.to.uri
    assert response.to.tag == "r1"


# --- (c) any split of a stream ---------------------------------------------------------------

keepalives = st.sampled_from([b"", b"", b"\r\n", b"\r\n\r\n", b"\r\n\r\n\r\n"])


@FUZZ
@given(
    st.lists(st.tuples(messages(), keepalives), min_size=1, max_size=4),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_any_split_of_a_stream(parts: list[tuple[Generated, bytes]], cuts: list[int]) -> None:
    stream = b"".join(keepalive + generated.data for generated, keepalive in parts)
    expected = [generated.data for generated, _ in parts]
    whole = StreamFramer()
    assert whole.feed(stream) == expected
    points = sorted({min(cut, len(stream)) for cut in cuts} | {0, len(stream)})
    split = StreamFramer()
    out: list[bytes] = []
    for start, end in zip(points, points[1:], strict=False):
        out.extend(split.feed(stream[start:end]))
    assert out == expected
    assert split.pings == whole.pings
    assert split.buffered == 0
    for raw, (generated, _) in zip(out, parts, strict=True):
        message = parse_message(raw, stream=True)
        assert message.call_id == generated.expect["call_id"]


# --- mutations of the RFC 4475 vectors -------------------------------------------------------


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.randrange(4)
        index = rng.randrange(len(out) + 1)
        if kind == 0 and out:  # flip bits
            index = min(index, len(out) - 1)
            out[index] ^= 1 << rng.randrange(8)
        elif kind == 1:  # insert bytes, often structural ones
            piece = rng.choice([b"\r\n", b" ", b";", b",", b'"', b"<", b">", b":", b"\x00"])
            out[index:index] = piece if rng.random() < 0.7 else rng.randbytes(rng.randint(1, 3))
        elif kind == 2:  # delete a run
            del out[index : index + rng.randint(1, 8)]
        else:  # duplicate a run
            out[index:index] = out[index : index + rng.randint(1, 40)]
    return bytes(out)


@FUZZ
@given(st.sampled_from(sorted(VECTORS)), st.randoms(use_true_random=False))
def test_mutated_vectors(name: str, rng: random.Random) -> None:
    check_any_input(mutate(VECTORS[name], rng))


def mutated_corpus(count: int) -> list[bytes]:
    rng = random.Random(4475)
    names = sorted(VECTORS)
    corpus = list(VECTORS.values())
    corpus += [mutate(VECTORS[rng.choice(names)], rng) for _ in range(count)]
    return corpus


# --- the transports never let an exception out --------------------------------------------


class FakeDatagramTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: object = None) -> None:  # type: ignore[override]
        self.sent.append(bytes(data))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 5060) if name == "sockname" else default


class FakeStreamTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        self.paused = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default


async def test_transports_survive_mutated_vectors() -> None:
    delivered: list[Request | Response] = []

    def consume(message: Request | Response, peer: Peer) -> None:
        """An application touching every parsed field, as a real one would."""
        fields(message)
        delivered.append(message)

    layer = SipTransportLayer(consume)
    corpus = mutated_corpus(300)
    udp = _UdpProtocol(layer, ListenAddress("udp", "127.0.0.1", 5060))
    datagrams = FakeDatagramTransport()
    udp.connection_made(datagrams)
    for data in corpus:
        udp.datagram_received(data, ("192.0.2.1", 5060))
    for reply in datagrams.sent:
        assert reply.startswith((b"SIP/2.0 4", b"SIP/2.0 5"))
        assert b"\r\nWarning: 399 chorus " in reply
    assert any(reply.startswith(b"SIP/2.0 400 ") for reply in datagrams.sent)
    assert any(reply.startswith(b"SIP/2.0 505 ") for reply in datagrams.sent)
    # The valid vectors, unmutated, reach the application.
    assert len(delivered) >= len(VECTORS) - len(INVALID_VECTORS)
    rng = random.Random(5626)
    delivered.clear()
    closed = answered = 0
    for data in corpus:
        connection = StreamConnection(layer, "tcp")
        stream = FakeStreamTransport()
        connection.connection_made(stream)
        step = rng.randint(1, 64)
        for start in range(0, len(data), step):
            if stream.closing or stream.paused:  # a real transport delivers no more
                break
            connection.data_received(data[start : start + step])
        closed += stream.closing or stream.paused  # framing lost: closed after a grace
        connection.connection_lost(None)
        # Whatever the connection wrote back is SIP error responses, nothing else.
        replies = StreamFramer().feed(bytes(stream.written))
        answered += bool(replies)
        for reply in replies:
            assert reply.startswith((b"SIP/2.0 4", b"SIP/2.0 5")), reply[:80]
    # Framed messages went up, bad ones were answered, lost framing ended connections.
    assert delivered and answered and closed
