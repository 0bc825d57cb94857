"""MSRP chunk framing: RFC 4975 vectors parsed whole, byte by byte and with trailing bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from control.msrp import (
    ByteRange,
    ChunkData,
    ChunkEnded,
    ChunkParser,
    ChunkRejected,
    ChunkStarted,
    FailureReport,
    Flag,
    FramingLost,
    MsrpError,
    ReportStatus,
    parse_chunk,
    parse_cpim,
    parse_uri,
    serialize_request,
    serialize_response,
)
from control.msrp.events import FramingEvent
from control.msrp.message import format_nickname, parse_nickname

DATA = Path(__file__).parent / "data" / "msrp"
VECTORS = sorted(p.name for p in DATA.glob("*.msrp"))

ALICE = parse_uri("msrp://alicepc.example.com:7777/iau39soe2843z;tcp")
BOB = parse_uri("msrp://bob.example.com:8888/9di4eae923wzd;tcp")


def feed_all(parser: ChunkParser, data: bytes, step: int | None = None) -> list[FramingEvent]:
    if step is None:
        return parser.feed(data)
    out: list[FramingEvent] = []
    for i in range(0, len(data), step):
        out += parser.feed(data[i : i + step])
    return out


def test_vectors_present() -> None:
    assert len(VECTORS) >= 10


@pytest.mark.parametrize("name", VECTORS)
def test_vector_round_trips_byte_exact(name: str) -> None:
    data = (DATA / name).read_bytes()
    chunk = parse_chunk(data)
    assert chunk.serialize() == data


@pytest.mark.parametrize("name", VECTORS)
def test_vector_whole_bytewise_and_trailing(name: str) -> None:
    data = (DATA / name).read_bytes()
    whole = feed_all(ChunkParser(), data)
    assert isinstance(whole[-1], ChunkEnded)
    assert feed_all(ChunkParser(), data, step=1) == whole
    assert feed_all(ChunkParser(), data, step=7) == whole
    # Trailing bytes: the start of the next chunk yields nothing more yet.
    assert feed_all(ChunkParser(), data + b"MSRP abcd1234 SE") == whole
    # Twice in a row: the same events twice.
    assert feed_all(ChunkParser(), data + data, step=3) == whole + whole


def test_section_10_1_send_fields() -> None:
    chunk = parse_chunk((DATA / "rfc4975_s10_1_send.msrp").read_bytes())
    head = chunk.head
    assert head.is_request and head.method == "SEND" and head.transaction_id == "d93kswow"
    assert head.to_path == (BOB,) and head.from_path == (ALICE,)
    assert head.message_id == "12339sdqwer"
    assert head.byte_range == ByteRange(1, 14, 14)
    assert head.content_type == "text/plain"
    assert chunk.body == b"Hi, I'm Alice!" and chunk.flag is Flag.END


def test_section_10_reports_and_responses() -> None:
    response = parse_chunk((DATA / "rfc4975_s10_1_response.msrp").read_bytes())
    assert response.head.status == 200 and response.head.comment == "OK"
    assert response.body is None and not response.head.is_request
    no_reports = parse_chunk((DATA / "rfc4975_s10_2_no_reports.msrp").read_bytes())
    assert no_reports.head.success_report is False
    assert no_reports.head.failure_report is FailureReport.NO
    report = parse_chunk((DATA / "rfc4975_s10_3_report.msrp").read_bytes())
    assert report.head.method == "REPORT"
    assert report.head.report_status == ReportStatus(200, "OK")
    chunk1 = parse_chunk((DATA / "rfc4975_s10_4_chunk1.msrp").read_bytes())
    assert chunk1.flag is Flag.CONTINUE and chunk1.head.byte_range == ByteRange(1, 22, 44)
    nick = parse_chunk((DATA / "rfc7701_nickname.msrp").read_bytes())
    assert nick.head.method == "NICKNAME" and nick.head.nickname == "Alice the great"


def test_serializers_build_rfc_vectors() -> None:
    built = serialize_request(
        "d93kswow",
        "SEND",
        [BOB],
        [ALICE],
        [("Message-ID", "12339sdqwer"), ("Byte-Range", "1-14/14")],
        content_type="text/plain",
        body=b"Hi, I'm Alice!",
    )
    assert built == (DATA / "rfc4975_s10_1_send.msrp").read_bytes()
    response = serialize_response("d93kswow", 200, [ALICE], [BOB], "OK")
    assert response == (DATA / "rfc4975_s10_1_response.msrp").read_bytes()


def make_send(tid: str, body: bytes, flag: str = "$") -> bytes:
    return (
        (
            f"MSRP {tid} SEND\r\nTo-Path: {BOB}\r\nFrom-Path: {ALICE}\r\nMessage-ID: m1234\r\n"
            f"Content-Type: text/plain\r\n\r\n"
        ).encode()
        + body
        + f"\r\n-------{tid}{flag}\r\n".encode()
    )


@pytest.mark.parametrize(
    "body",
    [
        b"-------abcd1234",  # the end-line text without a CRLF before it
        b"x\r\n-------abcd1234!\r\nmore",  # wrong flag
        b"x\r\n-------abcd1234$ not at end of line",  # no CRLF after the flag
        b"x\r\n-------abcd12345$\r\n",  # a longer transaction id
        b"\r\n-------abcd123$\r\n",  # a shorter one
        b"",  # empty body
        b"\r\n",  # a lone CRLF
    ],
)
def test_body_with_end_line_lookalikes(body: bytes) -> None:
    data = make_send("abcd1234", body)
    for step in (None, 1, 5):
        events = feed_all(ChunkParser(), data, step)
        got = b"".join(e.data for e in events if isinstance(e, ChunkData))
        assert got == body
        assert events[-1] == ChunkEnded("abcd1234", Flag.END, len(body))


def test_large_chunk_streams_in_fixed_pieces() -> None:
    body = bytes(range(256)) * 1000  # 256000 bytes
    data = make_send("abcd1234", body, "+")
    parser = ChunkParser(body_piece_size=10000)
    whole = feed_all(parser, data)
    pieces = [e.data for e in whole if isinstance(e, ChunkData)]
    assert [len(p) for p in pieces] == [10000] * 25 + [6000]
    assert b"".join(pieces) == body
    assert feed_all(ChunkParser(body_piece_size=10000), data, step=4093) == whole
    assert whole[-1] == ChunkEnded("abcd1234", Flag.CONTINUE, len(body))


def test_malformed_header_rejected_and_resynced() -> None:
    bad = (
        f"MSRP bad12345 SEND\r\nTo-Path: {BOB}\r\nFrom-Path: {ALICE}\r\nByte-Range: x\r\n"
        "Content-Type: text/plain\r\n\r\nbody\r\n-------bad12345$\r\n"
    ).encode()
    good = make_send("good1234", b"hello")
    events = feed_all(ChunkParser(), bad + good)
    assert isinstance(events[0], ChunkRejected)
    assert events[0].transaction_id == "bad12345" and events[0].status == 400
    assert events[0].is_request and events[0].from_path == str(ALICE)
    assert isinstance(events[1], ChunkStarted) and events[1].head.transaction_id == "good1234"
    assert events[-1] == ChunkEnded("good1234", Flag.END, 5)
    assert feed_all(ChunkParser(), bad + good, step=1) == events


def test_bad_start_line_keeps_paths_for_the_answer() -> None:
    data = f"MSRP abcd1234 send\r\nTo-Path: {BOB}\r\nFrom-Path: {ALICE}\r\n-------abcd1234$\r\n"
    events = ChunkParser().feed(data.encode())
    assert len(events) == 1 and isinstance(events[0], ChunkRejected)
    assert events[0].to_path == str(BOB) and events[0].status == 400


def test_missing_paths_rejected() -> None:
    data = b"MSRP abcd1234 SEND\r\nMessage-ID: m1234\r\n-------abcd1234$\r\n"
    (event,) = ChunkParser().feed(data)
    assert isinstance(event, ChunkRejected) and event.from_path is None


def test_header_block_limit() -> None:
    data = make_send("abcd1234", b"x").replace(b"Message-ID", b"X-Pad: " + b"a" * 400 + b"\r\nM")
    events = ChunkParser(max_header_size=256).feed(data + make_send("efgh5678", b"ok"))
    assert isinstance(events[0], ChunkRejected) and events[0].reason == "header block too large"
    assert events[-1] == ChunkEnded("efgh5678", Flag.END, 2)


def test_chunk_size_limit_is_413() -> None:
    data = make_send("abcd1234", b"y" * 5000)
    events = feed_all(ChunkParser(max_chunk_size=1000, body_piece_size=100), data, step=512)
    rejected = [e for e in events if isinstance(e, ChunkRejected)]
    assert len(rejected) == 1 and rejected[0].status == 413
    assert sum(len(e.data) for e in events if isinstance(e, ChunkData)) <= 1000


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n", b"MSRP x SEND\r\n", b"MSRP \x00\x01\x02\x03 SEND\r\n", b"\r\n"],
)
def test_unreadable_framing_is_fatal(data: bytes) -> None:
    parser = ChunkParser()
    events = parser.feed(data)
    assert len(events) == 1 and isinstance(events[0], FramingLost)
    assert parser.failed
    assert parser.feed(make_send("abcd1234", b"x")) == []


def test_response_with_body_rejected_not_answered() -> None:
    data = f"MSRP abcd1234 200 OK\r\nTo-Path: {ALICE}\r\nFrom-Path: {BOB}\r\n\r\nx\r\n"
    events = ChunkParser().feed((data + "-------abcd1234$\r\n").encode())
    assert len(events) == 1 and isinstance(events[0], ChunkRejected)
    assert not events[0].is_request


def test_parse_chunk_errors() -> None:
    with pytest.raises(MsrpError):
        parse_chunk(make_send("abcd1234", b"x")[:-3])
    with pytest.raises(MsrpError):
        parse_chunk(make_send("abcd1234", b"x") * 2)


@pytest.mark.parametrize(
    "value",
    ["0-1/1", "5-3/10", "1-20/10", "a-b/c", "1-*/", "12/12"],
)
def test_bad_byte_ranges(value: str) -> None:
    from control.msrp.message import parse_byte_range

    with pytest.raises(MsrpError):
        parse_byte_range(value)


def test_byte_range_forms() -> None:
    from control.msrp.message import parse_byte_range

    assert parse_byte_range("1-*/*") == ByteRange(1, None, None)
    assert parse_byte_range("1-0/0") == ByteRange(1, 0, 0)
    assert str(ByteRange(2049, None, 8191)) == "2049-*/8191"


def test_serializer_refuses_end_line_in_body() -> None:
    with pytest.raises(ValueError):
        serialize_request(
            "abcd1234", "SEND", [BOB], [ALICE], content_type="text/plain", body=b"-------abcd1234"
        )


# ---- what real clients send (issue 8, item 5) ---------------------------------------------

SIPSIMPLE_SEND = "cpim_sipsimple_lf.msrp"
MSRPLIB_NICKNAME = "nickname_msrplib_unquoted.msrp"


def test_client_vectors_are_in_the_vector_set() -> None:
    """Both join VECTORS, so the whole / byte-by-byte / trailing-bytes / round-trip tests above
    (and the fuzz tests) run over them too."""
    assert {SIPSIMPLE_SEND, MSRPLIB_NICKNAME} <= set(VECTORS)


@pytest.mark.parametrize("step", [None, 1, 5])
def test_sipsimple_send_fields_whole_bytewise_and_trailing(step: int | None) -> None:
    data = (DATA / SIPSIMPLE_SEND).read_bytes()
    assert b"\r\n\r\nMIME-Version: 1.0\nContent-Type" in data  # the vector is what it says
    events = feed_all(ChunkParser(), data + b"MSRP next0001 SE", step)
    assert not any(isinstance(e, ChunkRejected) for e in events)
    assert isinstance(events[0], ChunkStarted) and isinstance(events[-1], ChunkEnded)
    head = events[0].head
    assert (head.method, head.transaction_id) == ("SEND", "kd93nf7sle2b")
    assert head.message_id == "6e3b1f2a9c4d5e70"
    assert head.content_type == "message/cpim"
    assert head.success_report is True and head.failure_report is FailureReport.YES
    body = b"".join(e.data for e in events if isinstance(e, ChunkData))
    assert head.byte_range == ByteRange(1, len(body), len(body))
    message = parse_cpim(body)
    assert message.content_type == 'text/plain; charset="utf8"'
    assert message.body == b"hello"
    assert message.sender is not None and message.sender.display_name == "Alice"


def test_msrplib_nickname_fields_whole_bytewise_and_trailing() -> None:
    data = (DATA / MSRPLIB_NICKNAME).read_bytes()
    assert b"Use-Nickname: alice\r\n" in data  # unquoted, as msrplib writes it
    for step in (None, 1, 3):
        events = feed_all(ChunkParser(), data + b"MSRP next0001 SE", step)
        assert len(events) == 2, events
        started, ended = events
        assert isinstance(started, ChunkStarted) and isinstance(ended, ChunkEnded)
        assert started.head.method == "NICKNAME" and started.head.nickname == "alice"


def test_msrplib_nickname_reserialized_in_the_quoted_form() -> None:
    chunk = parse_chunk((DATA / MSRPLIB_NICKNAME).read_bytes())
    assert chunk.head.nickname is not None
    ours = serialize_request(
        chunk.head.transaction_id,
        "NICKNAME",
        chunk.head.to_path,
        chunk.head.from_path,
        [("Use-Nickname", format_nickname(chunk.head.nickname))],
    )
    strict = (
        (DATA / MSRPLIB_NICKNAME)
        .read_bytes()
        .replace(b"Use-Nickname: alice\r\n", b'Use-Nickname: "alice"\r\n')
    )
    assert ours == strict
    assert parse_chunk(ours).head.nickname == "alice"


@pytest.mark.parametrize(
    ("value", "nickname"),
    [
        ('"Alice the great"', "Alice the great"),  # RFC 7701 §10 quoted-string
        ('"Al \\"the\\" great"', 'Al "the" great'),
        ("alice", "alice"),  # msrplib: bare token
        ("  alice  ", "alice"),
        ("Alice Smith", "Alice Smith"),  # msrplib writes the UTF-8 text as is
        ("Jürgen", "Jürgen"),
        ("back\\slash", "back\\slash"),  # unquoted: literal
    ],
)
def test_nickname_forms_accepted(value: str, nickname: str) -> None:
    assert parse_nickname(value) == nickname


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        '""',
        '"',
        '"alice',  # unbalanced quotes
        'alice"',
        'al"ice',
        '"al"ice"',
        '"alice" trailing',
        '"dangling\\"',
        "tab\there",  # control characters, quoted or not
        '"bell\x07"',
        "del\x7f",
    ],
)
def test_nickname_malformed_is_424(value: str) -> None:
    with pytest.raises(MsrpError) as info:
        parse_nickname(value)
    assert info.value.status == 424


def test_unquoted_nickname_chunk_not_rejected_but_malformed_still_424() -> None:
    def nickname_chunk(tid: str, value: str) -> bytes:
        return (
            f"MSRP {tid} NICKNAME\r\nTo-Path: {BOB}\r\nFrom-Path: {ALICE}\r\n"
            f"Use-Nickname: {value}\r\n-------{tid}$\r\n"
        ).encode()

    events = ChunkParser().feed(nickname_chunk("nick0001", "bob") + nickname_chunk("nick0002", '"'))
    assert isinstance(events[0], ChunkStarted) and events[0].head.nickname == "bob"
    rejected = events[-1]
    assert isinstance(rejected, ChunkRejected)
    assert (rejected.transaction_id, rejected.status) == ("nick0002", 424)


def test_format_nickname_always_quotes() -> None:
    assert format_nickname("alice") == '"alice"'
    assert format_nickname('Al "x" \\') == '"Al \\"x\\" \\\\"'
    assert parse_nickname(format_nickname('Al "x" \\')) == 'Al "x" \\'
