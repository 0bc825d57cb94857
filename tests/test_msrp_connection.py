"""MSRP sessions on one connection: routing, reassembly, reports, limits, timers."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from control.msrp import (
    ConnectionFailed,
    FailureReport,
    Flag,
    MessageAborted,
    MessageChunkReceived,
    MessageReceived,
    MsrpConnection,
    MsrpSession,
    MsrpUsageError,
    NicknameRequested,
    ProtocolError,
    ReportReceived,
    ResponseReceived,
    TransactionTimedOut,
    parse_chunk,
    parse_uri,
)
from control.msrp.parser import ChunkParser

DATA = Path(__file__).parent / "data" / "msrp"
ALICE = parse_uri("msrp://alicepc.example.com:7777/iau39soe2843z;tcp")
BOB = parse_uri("msrp://bob.example.com:8888/9di4eae923wzd;tcp")


class FakeRandom:
    """Deterministic stand-in for os.urandom: tests can predict every id."""

    def __init__(self, seed: bytes = b"seed") -> None:
        self.seed = seed
        self.count = 0

    def __call__(self, n: int) -> bytes:
        self.count += 1
        return hashlib.sha256(self.seed + self.count.to_bytes(4, "big")).digest()[:n]


def bob_side(**session_kw: object) -> MsrpConnection:
    conn = MsrpConnection(random=FakeRandom(b"bob"))
    conn.add_session(MsrpSession(BOB, [ALICE], **session_kw))  # type: ignore[arg-type]
    return conn


def alice_side() -> MsrpConnection:
    conn = MsrpConnection(random=FakeRandom(b"alice"))
    conn.add_session(MsrpSession(ALICE, [BOB]))
    return conn


def chunks(wire: bytes) -> list[bytes]:
    """Split a wire stream into its chunks."""
    out, parser, start, pos = [], ChunkParser(), 0, 0
    for i in range(len(wire)):
        pos = i + 1
        if any(type(e).__name__ == "ChunkEnded" for e in parser.feed(wire[i : i + 1])):
            out.append(wire[start:pos])
            start = pos
    return out


def test_rfc_10_1_exchange_byte_exact() -> None:
    bob = bob_side()
    bob.receive_data((DATA / "rfc4975_s10_1_send.msrp").read_bytes(), now=0.0)
    (event,) = bob.events()
    assert event == MessageReceived(
        "9di4eae923wzd",
        "12339sdqwer",
        "text/plain",
        b"Hi, I'm Alice!",
        parse_chunk((DATA / "rfc4975_s10_1_send.msrp").read_bytes()).head.headers,
        14,
    )
    assert bob.data_to_send() == (DATA / "rfc4975_s10_1_response.msrp").read_bytes()


def test_rfc_10_2_failure_report_no_suppresses_response() -> None:
    bob = bob_side()
    bob.receive_data((DATA / "rfc4975_s10_2_no_reports.msrp").read_bytes(), now=0.0)
    (event,) = bob.events()
    assert isinstance(event, MessageReceived) and event.body.startswith(b"This conference")
    assert bob.data_to_send() == b""


def test_rfc_10_3_success_report_generated() -> None:
    bob = bob_side()
    bob.receive_data((DATA / "rfc4975_s10_3_success_report.msrp").read_bytes(), now=0.0)
    assert isinstance(bob.next_event(), MessageReceived)
    out = bob.data_to_send()
    report = parse_chunk(out)  # Failure-Report: no → only the REPORT, no 200
    assert report.head.method == "REPORT"
    expected = (DATA / "rfc4975_s10_3_report.msrp").read_bytes()
    tid = report.head.transaction_id
    assert out == expected.replace(b"dkei38sd", tid.encode())
    # Alice receives the REPORT and is told; nobody answers a REPORT.
    alice = alice_side()
    alice.receive_data(out, now=1.0)
    (got,) = alice.events()
    assert isinstance(got, ReportReceived)
    assert (got.message_id, got.status, got.byte_range.total) == ("12339sdqwer", 200, 121)
    assert alice.data_to_send() == b""


def test_rfc_10_4_two_chunks_any_order() -> None:
    one = (DATA / "rfc4975_s10_4_chunk1.msrp").read_bytes()
    two = (DATA / "rfc4975_s10_4_chunk2.msrp").read_bytes()
    for stream in (one + two, two + one):
        bob = bob_side()
        bob.receive_data(stream, now=0.0)
        (event,) = bob.events()
        assert isinstance(event, MessageReceived)
        assert event.body == b"This is the first part of the 2-part message"
        assert event.headers[3] == ("Byte-Range", "1-22/44")  # first chunk's headers
        assert bob.data_to_send().count(b" 200 OK\r\n") == 2


def test_send_message_chunks_and_back_to_back() -> None:
    alice, bob = alice_side(), bob_side()
    body = bytes(range(256)) * 40  # 10240 bytes
    wire = alice.send_message(
        [BOB],
        [ALICE],
        "msg00001",
        "application/octet-stream",
        body,
        now=0.0,
        chunk_size=4096,
        success_report=True,
    )
    parts = chunks(wire)
    assert len(parts) == 3
    heads = [parse_chunk(p) for p in parts]
    assert [str(c.head.byte_range) for c in heads] == [
        "1-4096/10240",
        "4097-8192/10240",
        "8193-10240/10240",
    ]
    assert [c.flag for c in heads] == [Flag.CONTINUE, Flag.CONTINUE, Flag.END]
    assert all(c.head.success_report for c in heads)
    tids = [c.head.transaction_id for c in heads]
    assert len(set(tids)) == 3 and all(len(t) == 16 and t.isalnum() for t in tids)
    # Deterministic with an injected random source.
    again = alice_side().send_message(
        [BOB],
        [ALICE],
        "msg00001",
        "application/octet-stream",
        body,
        now=0.0,
        chunk_size=4096,
        success_report=True,
    )
    assert again == wire
    bob.receive_data(wire, now=0.0)
    (received,) = bob.events()
    assert isinstance(received, MessageReceived) and received.body == body
    alice.receive_data(bob.data_to_send(), now=0.5)
    events = alice.events()
    assert [type(e) for e in events] == [ResponseReceived] * 3 + [ReportReceived]
    assert {e.transaction_id for e in events[:3]} == set(tids)
    assert all(e.status == 200 and e.message_id == "msg00001" for e in events[:3])
    assert alice.next_timer() is None


def test_interleaved_and_duplicate_chunks_of_two_messages() -> None:
    alice, bob = alice_side(), bob_side()
    a = chunks(
        alice.send_message(
            [BOB], [ALICE], "aaaa1111", "text/plain", b"A" * 25, now=0, chunk_size=10
        )
    )
    b = chunks(
        alice.send_message(
            [BOB], [ALICE], "bbbb2222", "text/plain", b"B" * 15, now=0, chunk_size=10
        )
    )
    stream = a[0] + b[1] + a[2] + a[2] + b[0] + a[1] + a[1]
    bob.receive_data(stream, now=0.0)
    got = [e for e in bob.events() if isinstance(e, MessageReceived)]
    assert [(e.message_id, e.body) for e in got] == [
        ("bbbb2222", b"B" * 15),
        ("aaaa1111", b"A" * 25),
    ]
    assert bob.data_to_send().count(b" 200 OK\r\n") == 7  # duplicates are answered too


def test_deliver_chunks_streams_20_mb_with_sha1() -> None:
    size = 20 * 1024 * 1024
    block = hashlib.sha256(b"file").digest() * 2048  # 64 KiB
    body = (block * (size // len(block) + 1))[:size]
    alice = alice_side()
    bob = bob_side(deliver_chunks=True, max_message_size=32 * 1024 * 1024)
    wire = alice.send_message(
        [BOB], [ALICE], "file0001", "application/octet-stream", body, now=0.0, chunk_size=256 * 1024
    )
    digest = hashlib.sha1()
    offset = 0
    for i in range(0, len(wire), 1_000_003):  # odd read sizes
        bob.receive_data(wire[i : i + 1_000_003], now=0.0)
        while (event := bob.next_event()) is not None:
            if isinstance(event, MessageChunkReceived):
                assert event.offset == offset and len(event.data) <= 64 * 1024
                assert event.total == size
                digest.update(event.data)
                offset += len(event.data)
            else:
                assert isinstance(event, MessageReceived)
                assert event.body is None and event.size == size
    assert offset == size
    assert digest.hexdigest() == hashlib.sha1(body).hexdigest()
    assert bob.session("9di4eae923wzd").messages == {}  # type: ignore[union-attr]


def test_deliver_chunks_out_of_order_and_duplicates_deliver_once() -> None:
    alice, bob = alice_side(), bob_side(deliver_chunks=True)
    parts = chunks(
        alice.send_message(
            [BOB], [ALICE], "file0002", "text/plain", b"0123456789" * 3, now=0, chunk_size=10
        )
    )
    bob.receive_data(parts[2] + parts[0] + parts[0] + parts[1], now=0.0)
    events = bob.events()
    pieces = [(e.offset, e.data) for e in events if isinstance(e, MessageChunkReceived)]
    assert pieces == [(20, b"0123456789"), (0, b"0123456789"), (10, b"0123456789")]
    assert isinstance(events[-1], MessageReceived) and events[-1].size == 30


def test_sender_abort() -> None:
    alice, bob = alice_side(), bob_side()
    first = alice.send_chunk(
        [BOB],
        [ALICE],
        "abrt0001",
        "text/plain",
        b"part one",
        now=0,
        offset=0,
        total=100,
        flag=Flag.CONTINUE,
    )
    abort = alice.send_chunk(
        [BOB], [ALICE], "abrt0001", "text/plain", b"", now=0, offset=8, total=100, flag=Flag.ABORT
    )
    bob.receive_data(first + abort, now=0.0)
    assert bob.events() == [
        MessageAborted("9di4eae923wzd", "abrt0001", "aborted by the sender", None)
    ]
    assert bob.session("9di4eae923wzd").messages == {}  # type: ignore[union-attr]


def test_unknown_session_481_and_wrong_peer_403() -> None:
    bob = bob_side()
    stranger = parse_uri("msrp://evil.example.com:6666/zzzz;tcp")
    elsewhere = parse_uri("msrp://bob.example.com:8888/nosuchsession;tcp")
    other = MsrpConnection(random=FakeRandom())
    bob.receive_data(
        other.send_message([elsewhere], [ALICE], "m0000001", "text/plain", b"x", now=0), now=0
    )
    bob.receive_data(
        other.send_message([BOB], [stranger], "m0000002", "text/plain", b"y", now=0), now=0
    )
    events = bob.events()
    assert [(type(e), e.status) for e in events] == [(ProtocolError, 481), (ProtocolError, 403)]
    answers = chunks(bob.data_to_send())
    assert [parse_chunk(a).head.status for a in answers] == [481, 403]
    assert parse_chunk(answers[1]).head.to_path == (stranger,)


def test_message_over_limit_is_413_and_aborted() -> None:
    alice = alice_side()
    bob = MsrpConnection(random=FakeRandom(), max_message_size=1000)
    bob.add_session(MsrpSession(BOB, [ALICE]))
    # Declared total over the limit: refused at the first chunk.
    bob.receive_data(
        alice.send_message(
            [BOB], [ALICE], "big00001", "text/plain", b"z" * 1500, now=0, chunk_size=500
        ),
        now=0,
    )
    events = bob.events()
    assert [e.status for e in events if isinstance(e, ProtocolError)] == [413, 413, 413]
    assert b" 413 " in bob.data_to_send()
    # Unknown total: refused when the bytes pass the limit, and the message is aborted.
    parts = [
        alice.send_chunk(
            [BOB],
            [ALICE],
            "big00002",
            "text/plain",
            b"q" * 600,
            now=0,
            offset=i * 600,
            total=None,
            flag=Flag.CONTINUE,
        )
        for i in range(2)
    ]
    bob.receive_data(b"".join(parts), now=0)
    events = bob.events()
    assert isinstance(events[-1], MessageAborted) and events[-1].status == 413


def test_too_many_concurrent_messages() -> None:
    alice = alice_side()
    bob = MsrpConnection(random=FakeRandom(), max_concurrent_messages=2)
    bob.add_session(MsrpSession(BOB, [ALICE]))
    for n in range(3):
        bob.receive_data(
            alice.send_chunk(
                [BOB],
                [ALICE],
                f"conc000{n}",
                "text/plain",
                b"x",
                now=0,
                offset=0,
                total=10,
                flag=Flag.CONTINUE,
            ),
            now=0,
        )
    (event,) = bob.events()
    assert isinstance(event, ProtocolError) and event.status == 413


def test_unaccepted_type_415_and_unknown_method_501() -> None:
    alice = alice_side()
    bob = bob_side(accept_types=["message/cpim", "text/*"])
    bob.receive_data(
        alice.send_message([BOB], [ALICE], "img00001", "image/png", b"png", now=0), now=0
    )
    bob.receive_data(
        alice.send_message([BOB], [ALICE], "txt00001", "Text/HTML; charset=utf-8", b"<p/>", now=0),
        now=0,
    )
    bob.receive_data(
        f"MSRP abcd9999 FROB\r\nTo-Path: {BOB}\r\nFrom-Path: {ALICE}\r\n"
        "-------abcd9999$\r\n".encode(),
        now=0,
    )
    events = bob.events()
    assert [type(e) for e in events] == [ProtocolError, MessageReceived, ProtocolError]
    assert (events[0].status, events[2].status) == (415, 501)  # type: ignore[union-attr]
    statuses = [parse_chunk(c).head.status for c in chunks(bob.data_to_send())]
    assert statuses == [415, 200, 501]


def test_malformed_request_gets_400_and_stream_goes_on() -> None:
    bob = bob_side()
    bad = (
        f"MSRP bad00001 SEND\r\nTo-Path: {BOB}\r\nFrom-Path: {ALICE}\r\nByte-Range: 9\r\n"
        "Content-Type: text/plain\r\n\r\nzz\r\n-------bad00001$\r\n"
    ).encode()
    bob.receive_data(bad + (DATA / "rfc4975_s10_1_send.msrp").read_bytes(), now=0)
    events = bob.events()
    assert [type(e) for e in events] == [ProtocolError, MessageReceived]
    out = chunks(bob.data_to_send())
    assert parse_chunk(out[0]).head.status == 400
    assert parse_chunk(out[0]).head.transaction_id == "bad00001"


def test_failure_report_partial_only_errors() -> None:
    alice, bob = alice_side(), bob_side()
    wire = alice.send_message(
        [BOB], [ALICE], "part0001", "text/plain", b"ok", now=0, failure_report=FailureReport.PARTIAL
    )
    bob.receive_data(wire, now=0)
    assert bob.data_to_send() == b""
    wire = alice.send_message(
        [BOB], [ALICE], "part0002", "image/gif", b"gif", now=0, failure_report=FailureReport.PARTIAL
    )
    bob2 = bob_side(accept_types=["text/plain"])
    bob2.receive_data(wire, now=0)
    assert parse_chunk(bob2.data_to_send()).head.status == 415
    # Silence is success with partial: the timer expires without an event.
    alice.handle_timer(now=31.0)
    assert alice.events() == []


def test_transaction_timeout_is_408() -> None:
    alice = alice_side()
    wire = alice.send_message([BOB], [ALICE], "slow0001", "text/plain", b"hello", now=10.0)
    tid = parse_chunk(wire).head.transaction_id
    assert alice.next_timer() == 40.0
    alice.handle_timer(now=39.9)
    assert alice.events() == []
    alice.handle_timer(now=40.0)
    assert alice.events() == [TransactionTimedOut("iau39soe2843z", tid, "slow0001", "SEND", 408)]
    assert alice.next_timer() is None
    # A response after the timeout is ignored.
    alice.receive_data(
        f"MSRP {tid} 200 OK\r\nTo-Path: {ALICE}\r\nFrom-Path: {BOB}\r\n-------{tid}$\r\n".encode(),
        now=41.0,
    )
    assert alice.events() == []


def test_failure_report_no_is_not_tracked() -> None:
    alice = alice_side()
    alice.send_message(
        [BOB], [ALICE], "fire0001", "text/plain", b"x", now=0, failure_report=FailureReport.NO
    )
    assert alice.next_timer() is None


def test_per_chunk_success_reports() -> None:
    alice, bob = alice_side(), bob_side(report_per_chunk=True)
    wire = alice.send_message(
        [BOB],
        [ALICE],
        "rpt00001",
        "text/plain",
        b"x" * 30,
        now=0,
        chunk_size=10,
        success_report=True,
    )
    bob.receive_data(wire, now=0)
    reports = [parse_chunk(c) for c in chunks(bob.data_to_send())]
    ranges = [str(c.head.byte_range) for c in reports if c.head.method == "REPORT"]
    assert ranges == ["1-10/30", "11-20/30", "21-30/30"]


def test_nickname_request_and_answer() -> None:
    alice, bob = alice_side(), bob_side(nicknames=True)
    wire = alice.send_nickname([BOB], [ALICE], 'Al "the" great', now=0)
    assert b'Use-Nickname: "Al \\"the\\" great"\r\n' in wire
    bob.receive_data(wire, now=0)
    (event,) = bob.events()
    assert isinstance(event, NicknameRequested) and event.nickname == 'Al "the" great'
    answer = bob.respond(event.transaction_id, 425)
    head = parse_chunk(answer).head
    assert head.status == 425 and head.comment == "Nickname Reserved Or Already In Use"
    alice.receive_data(answer, now=1)
    (response,) = alice.events()
    assert isinstance(response, ResponseReceived)
    assert (response.method, response.status) == ("NICKNAME", 425)


def test_nickname_vector() -> None:
    room = MsrpConnection(random=FakeRandom())
    room.add_session(
        MsrpSession(
            parse_uri("msrp://chatroom.example.com:12763/kjhd37s2s20w2a;tcp"), nicknames=True
        )
    )
    room.receive_data((DATA / "rfc7701_nickname.msrp").read_bytes(), now=0)
    (event,) = room.events()
    assert event == NicknameRequested("kjhd37s2s20w2a", "88ca5a2b", "Alice the great")
    assert room.respond("88ca5a2b", 200).startswith(b"MSRP 88ca5a2b 200 OK\r\n")


def test_nickname_in_a_session_without_nicknames_is_answered_403_by_the_core() -> None:
    """RFC 4975 §7.2: a request is owed a response; a session whose application does not
    use nicknames (echo) forbids them (RFC 7701 §7.1), so the core answers, not nobody."""
    alice, bob = alice_side(), bob_side()
    request = alice.send_nickname([BOB], [ALICE], "Al", now=0)
    bob.receive_data(request, now=0)
    answer = bob.data_to_send()
    (head,) = [parse_chunk(c).head for c in chunks(answer)]
    assert (head.transaction_id, head.status) == (parse_chunk(request).head.transaction_id, 403)
    assert [type(e) for e in bob.events()] == [ProtocolError]  # no NicknameRequested
    alice.receive_data(answer, now=1)
    (response,) = alice.events()
    assert isinstance(response, ResponseReceived)
    assert (response.method, response.status) == ("NICKNAME", 403)
    alice.handle_timer(now=100.0)
    assert alice.events() == []  # answered: no transaction timeout


def test_sessions_share_a_connection() -> None:
    other_local = parse_uri("msrp://bob.example.com:8888/second5555;tcp")
    carol = parse_uri("msrp://carol.example.com:9999/carol777;tcp")
    bob = bob_side()
    bob.add_session(MsrpSession(other_local, [carol]))
    sender = MsrpConnection(random=FakeRandom())
    bob.receive_data(
        sender.send_message([other_local], [carol], "c0000001", "text/plain", b"to 2", now=0)
        + sender.send_message([BOB], [ALICE], "a0000001", "text/plain", b"to 1", now=0),
        now=0,
    )
    events = bob.events()
    assert [(e.session_id, e.body) for e in events] == [  # type: ignore[union-attr]
        ("second5555", b"to 2"),
        ("9di4eae923wzd", b"to 1"),
    ]


def test_framing_loss_is_connection_failed() -> None:
    alice, bob = alice_side(), bob_side()
    wire = alice.send_chunk(
        [BOB],
        [ALICE],
        "lost0001",
        "text/plain",
        b"abc",
        now=0,
        offset=0,
        total=10,
        flag=Flag.CONTINUE,
    )
    bob.receive_data(wire + b"garbage that is not MSRP\r\n", now=0)
    events = bob.events()
    assert isinstance(events[-1], ConnectionFailed) and bob.failed
    bob.receive_data((DATA / "rfc4975_s10_1_send.msrp").read_bytes(), now=0)
    assert bob.events() == []


# ---- deliver_chunks: the last chunk's response waits for the application's verdict ------------


def file_exchange(
    *, failure_report: FailureReport = FailureReport.YES, **session_kw: object
) -> tuple[MsrpConnection, MsrpConnection, list[str]]:
    """Alice sends a 3-chunk file with Success-Report: yes to Bob's deliver_chunks session."""
    alice, bob = alice_side(), bob_side(deliver_chunks=True, **session_kw)
    wire = alice.send_message(
        [BOB],
        [ALICE],
        "file0009",
        "application/octet-stream",
        b"x" * 30,
        now=0.0,
        chunk_size=10,
        success_report=True,
        failure_report=failure_report,
    )
    bob.receive_data(wire, now=5.0)
    return alice, bob, [parse_chunk(c).head.transaction_id for c in chunks(wire)]


def test_last_chunk_response_and_report_are_held_until_completed() -> None:
    alice, bob, tids = file_exchange()
    events = bob.events()
    assert events[-1] == MessageReceived(
        "9di4eae923wzd",
        "file0009",
        "application/octet-stream",
        None,
        events[-1].headers,  # type: ignore[union-attr]
        30,
        awaiting_completion=True,
    )
    early_wire = bob.data_to_send()
    early = [parse_chunk(c).head for c in chunks(early_wire)]
    assert [(h.transaction_id, h.status) for h in early] == [(tids[0], 200), (tids[1], 200)]
    assert bob.next_timer() == 35.0  # completion_timeout after the last chunk arrived
    wire = bob.complete_message("9di4eae923wzd", "file0009")
    response, report = [parse_chunk(c).head for c in chunks(wire)]
    assert (response.transaction_id, response.status) == (tids[2], 200)
    assert report.method == "REPORT" and str(report.byte_range) == "1-30/30"
    assert b"Status: 000 200 OK\r\n" in wire
    assert bob.data_to_send() == b"" and bob.next_timer() is None
    assert bob.complete_message("9di4eae923wzd", "file0009") == b""  # answered already
    alice.receive_data(early_wire + wire, now=6.0)
    got = alice.events()
    assert [type(e) for e in got] == [ResponseReceived] * 3 + [ReportReceived]
    assert alice.next_timer() is None


def test_completed_with_a_failure_answers_it_and_sends_no_success_report() -> None:
    alice, bob, tids = file_exchange()
    alice.receive_data(bob.data_to_send(), now=6.0)  # the two early 200s
    wire = bob.complete_message("9di4eae923wzd", "file0009", 400, "hash mismatch")
    (head,) = [parse_chunk(c).head for c in chunks(wire)]
    assert (head.transaction_id, head.status, head.comment) == (tids[2], 400, "hash mismatch")
    assert head.to_path == (ALICE,) and head.from_path == (BOB,)
    alice.receive_data(wire, now=6.0)
    events = alice.events()
    assert [(e.status, e.comment) for e in events if isinstance(e, ResponseReceived)] == [
        (200, "OK"),
        (200, "OK"),
        (400, "hash mismatch"),
    ]
    assert not [e for e in events if isinstance(e, ReportReceived)]
    assert bob.next_timer() is None


def test_completion_follows_failure_report_partial_and_no() -> None:
    _, bob, _ = file_exchange(failure_report=FailureReport.PARTIAL)
    bob.data_to_send()
    ok = bob.complete_message("9di4eae923wzd", "file0009")
    assert [parse_chunk(c).head.method for c in chunks(ok)] == ["REPORT"]  # no 200 (§7.1.1)
    _, bob, tids = file_exchange(failure_report=FailureReport.PARTIAL)
    head = parse_chunk(bob.complete_message("9di4eae923wzd", "file0009", 413)).head
    assert (head.transaction_id, head.status) == (tids[2], 413)
    _, bob, _ = file_exchange(failure_report=FailureReport.NO)
    assert bob.data_to_send() == b""
    assert bob.complete_message("9di4eae923wzd", "file0009", 400, "truncated") == b""


def test_hold_expires_with_a_failure_report_and_no_response() -> None:
    alice, bob, tids = file_exchange()
    bob.data_to_send()
    bob.events()
    bob.handle_timer(now=34.9)
    assert bob.events() == [] and bob.data_to_send() == b""
    bob.handle_timer(now=35.0)
    assert bob.events() == [
        MessageAborted("9di4eae923wzd", "file0009", "not completed in time", 408)
    ]
    out = bob.data_to_send()
    (report,) = [parse_chunk(c).head for c in chunks(out)]
    assert report.method == "REPORT" and report.message_id == "file0009"
    assert b"Status: 000 408 Request Timeout\r\n" in out
    assert bob.next_timer() is None
    assert bob.complete_message("9di4eae923wzd", "file0009") == b""  # too late: nothing
    alice.receive_data(out, now=35.0)
    (got,) = alice.events()
    assert isinstance(got, ReportReceived) and got.status == 408
    # Failure-Report: no → not even the REPORT.
    _, quiet, _ = file_exchange(failure_report=FailureReport.NO)
    quiet.handle_timer(now=35.0)
    assert quiet.data_to_send() == b""


def test_duplicate_of_a_held_chunk_shares_the_verdict() -> None:
    alice, bob = alice_side(), bob_side(deliver_chunks=True)
    wire = alice.send_message([BOB], [ALICE], "dupl0001", "text/plain", b"abc", now=0)
    bob.receive_data(wire + wire, now=0)
    assert bob.data_to_send() == b""
    answers = chunks(bob.complete_message("9di4eae923wzd", "dupl0001", 400, "hash mismatch"))
    assert [parse_chunk(a).head.status for a in answers] == [400, 400]


def test_binding_send_is_not_held_and_chat_is_unchanged() -> None:
    alice, bob = alice_side(), bob_side(deliver_chunks=True)
    bob.receive_data(alice.send_empty([BOB], [ALICE], "bind0001", now=0), now=0)
    (event,) = bob.events()
    assert isinstance(event, MessageReceived) and not event.awaiting_completion
    assert parse_chunk(bob.data_to_send()).head.status == 200
    chat = bob_side()
    chat.receive_data(
        alice.send_message([BOB], [ALICE], "chat0001", "text/plain", b"hi", now=0), now=0
    )
    (event,) = chat.events()
    assert isinstance(event, MessageReceived) and not event.awaiting_completion
    assert parse_chunk(chat.data_to_send()).head.status == 200 and chat.next_timer() is None


def test_complete_message_misuse_and_held_messages_count_as_concurrent() -> None:
    _, bob, _ = file_exchange(max_message_size=100)
    with pytest.raises(MsrpUsageError):
        bob.complete_message("9di4eae923wzd", "never000")
    with pytest.raises(MsrpUsageError):
        bob.complete_message("nosuchsession", "file0009")
    with pytest.raises(MsrpUsageError):
        bob.complete_message("9di4eae923wzd", "file0009", 408)  # never sent (§7.3)
    with pytest.raises(MsrpUsageError):
        bob.complete_message("9di4eae923wzd", "file0009", 400, "two\r\nlines")
    alice = alice_side()
    small = MsrpConnection(random=FakeRandom(), max_concurrent_messages=2)
    small.add_session(MsrpSession(BOB, [ALICE], deliver_chunks=True))
    for n in range(3):
        small.receive_data(
            alice.send_message([BOB], [ALICE], f"hold000{n}", "text/plain", b"q", now=0), now=0
        )
    statuses = [parse_chunk(c).head.status for c in chunks(small.data_to_send())]
    assert statuses == [413]  # two held, the third refused
