"""MSRP over real loopback sockets: two transports (TCP and TLS), connection sharing, bad input
answered while another session on the same connection carries on, idle and connect timeouts,
tracing; plus the core's leniency on RFC 4975 example Byte-Ranges and the SDP helpers."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from control.config import ListenAddress
from control.msrp import (
    ConnectionFailed,
    MessageAborted,
    MessageReceived,
    MsrpConnection,
    MsrpError,
    MsrpSession,
    ReportReceived,
    ResponseReceived,
    parse_chunk,
    parse_uri,
)
from control.msrp.events import Event
from control.msrp.parser import ChunkParser
from control.msrp.sdp import (
    Setup,
    accept_msrp,
    answer_setup,
    msrp_media,
    offer_is_active,
    parse_msrp_media,
)
from control.msrp.trace import MsrpTracer
from control.msrp.transport import MsrpChannel, MsrpConnectError, MsrpTransport
from control.sip import sdp
from control.tls import generate_self_signed
from tests.peers.sipclient import client_tls_context
from tests.peers.wait import wait_until

pytestmark = pytest.mark.timeout(120)

LISTEN = (ListenAddress("tls", "127.0.0.1", 0), ListenAddress("tcp", "127.0.0.1", 0))


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "c.pem", directory / "k.pem"
    generate_self_signed(cert, key, ["127.0.0.1"])
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def make_server(context: ssl.SSLContext, **kw: object) -> MsrpTransport:
    server = MsrpTransport(**kw)  # type: ignore[arg-type]
    await server.start(LISTEN, ssl_server=context)
    return server


@pytest.fixture
async def server(server_context: ssl.SSLContext) -> AsyncIterator[MsrpTransport]:
    transport = await make_server(server_context)
    yield transport
    await transport.stop()


@pytest.fixture
async def client() -> AsyncIterator[MsrpTransport]:
    transport = MsrpTransport()
    transport.ssl_client = client_tls_context()
    yield transport
    await transport.stop()


async def pair(
    server: MsrpTransport, client: MsrpTransport, secure: bool, **server_kw: object
) -> tuple[MsrpChannel, MsrpChannel]:
    """A passive session on ``server`` and the active one on ``client`` that connects to it."""
    theirs = client.local_uri(secure)
    ours = server.local_uri(secure)
    passive = server.open(ours, [theirs], active=False, **server_kw)  # type: ignore[arg-type]
    active = client.open(theirs, [ours], active=True)
    await asyncio.wait_for(asyncio.gather(active.wait_connected(), passive.wait_connected()), 5)
    return passive, active


async def next_of(channel: MsrpChannel, kind: type, timeout: float = 5.0) -> Event:
    while True:
        event = await asyncio.wait_for(channel.next_event(), timeout)
        if isinstance(event, kind):
            return event


@pytest.mark.parametrize("secure", [True, False], ids=["tls", "tcp"])
async def test_messages_both_ways_with_reports(
    server: MsrpTransport, client: MsrpTransport, secure: bool
) -> None:
    passive, active = await pair(server, client, secure)
    assert active.local_uri.scheme == ("msrps" if secure else "msrp")
    body = "héllo ".encode() * 1000  # several chunks
    mid = active.send_message("text/plain", body, success_report=True)
    got = await next_of(passive, MessageReceived)
    assert isinstance(got, MessageReceived)
    assert (got.message_id, got.body, got.content_type) == (mid, body, "text/plain")
    report = await next_of(active, ReportReceived)
    assert isinstance(report, ReportReceived)
    assert (report.message_id, report.status, report.byte_range.end) == (mid, 200, len(body))  # type: ignore[union-attr]
    back = passive.send_message("text/plain", b"back")
    echoed = await next_of(active, MessageReceived)
    assert isinstance(echoed, MessageReceived) and echoed.body == b"back"
    response = await next_of(passive, ResponseReceived)
    assert isinstance(response, ResponseReceived)
    assert (response.message_id, response.status) == (back, 200)


async def test_sessions_share_one_connection_and_release_it(
    server: MsrpTransport, client: MsrpTransport
) -> None:
    sessions = [await pair(server, client, secure=True) for _ in range(3)]
    assert client.connection_count == 1 and server.connection_count == 1
    for index, (_, active) in enumerate(sessions):
        active.send_message("text/plain", f"to {index}".encode())
    for index, (passive, _) in enumerate(sessions):
        got = await next_of(passive, MessageReceived)
        assert isinstance(got, MessageReceived) and got.body == f"to {index}".encode()
    # Closing one session keeps the connection for the others.
    sessions[0][0].close()
    sessions[0][1].close()
    sessions[1][1].send_message("text/plain", b"still here")
    got = await next_of(sessions[1][0], MessageReceived)
    assert isinstance(got, MessageReceived) and got.body == b"still here"
    assert client.connection_count == 1
    # The last session closing on the server releases the connection; the client is told.
    for passive, _ in sessions[1:]:
        passive.close()
    for _, active in sessions[1:]:
        assert isinstance(await next_of(active, ConnectionFailed), ConnectionFailed)
    assert server.connection_count == 0 and client.connection_count == 0


async def test_a_session_bound_on_a_shared_connection_its_peer_is_closing_connects_anew(
    server: MsrpTransport, client: MsrpTransport
) -> None:
    """The server ends its last session on a connection (a BYE) just as the client, sharing
    that connection, binds a new session on it: the server closes the connection before the
    binding SEND is answered. The new session connects on a new connection instead of
    failing with "connection closed" (the echo file tests' push, BYE, next push)."""
    old_passive, old_active = await pair(server, client, secure=True)
    ours, theirs = server.local_uri(True), client.local_uri(True)
    passive = server.open(ours, [theirs], active=False)
    old_passive.close()  # the server's last session there: it closes the connection...
    active = client.open(theirs, [ours], active=True)  # ...the client has not seen it yet
    assert isinstance(await next_of(old_active, ConnectionFailed), ConnectionFailed)
    await asyncio.wait_for(asyncio.gather(active.wait_connected(), passive.wait_connected()), 5)
    assert client.connection_count == 1 and server.connection_count == 1
    active.send_message("text/plain", b"on the new connection")
    got = await next_of(passive, MessageReceived)
    assert isinstance(got, MessageReceived) and got.body == b"on the new connection"


async def test_file_session_answers_the_last_chunk_when_completed(
    server: MsrpTransport, client: MsrpTransport
) -> None:
    """deliver_chunks: the last chunk's response (and success REPORT) wait for the verdict."""
    passive, active = await pair(server, client, secure=False, deliver_chunks=True)
    bad = active.send_message("application/octet-stream", b"f" * 5000, success_report=True)
    got = await next_of(passive, MessageReceived)
    assert isinstance(got, MessageReceived) and got.awaiting_completion and got.body is None
    early = [await next_of(active, ResponseReceived) for _ in range(2)]
    assert [getattr(e, "status", None) for e in early] == [200, 200]
    passive.complete_message(bad, 400, "hash mismatch")
    last = await next_of(active, ResponseReceived)
    assert isinstance(last, ResponseReceived)
    assert (last.message_id, last.status, last.comment) == (bad, 400, "hash mismatch")
    good = active.send_message("application/octet-stream", b"g" * 100, success_report=True)
    got = await next_of(passive, MessageReceived)
    assert isinstance(got, MessageReceived) and got.message_id == good
    passive.complete_message(good)
    ok = await next_of(active, ResponseReceived)
    assert isinstance(ok, ResponseReceived) and (ok.message_id, ok.status) == (good, 200)
    report = await next_of(active, ReportReceived)  # only the good message was reported
    assert isinstance(report, ReportReceived) and (report.message_id, report.status) == (good, 200)
    passive.close()
    passive.complete_message(good)  # closed: nothing to answer on, no error


def raw_request(
    tid: str, to: str, frm: str, headers: str, body: bytes | None, flag: str = "$"
) -> bytes:
    head = f"MSRP {tid} SEND\r\nTo-Path: {to}\r\nFrom-Path: {frm}\r\n{headers}"
    if body is None:
        return f"{head}-------{tid}{flag}\r\n".encode()
    return f"{head}\r\n".encode() + body + f"\r\n-------{tid}{flag}\r\n".encode()


async def read_responses(reader: asyncio.StreamReader, count: int) -> dict[str, int]:
    parser, out = ChunkParser(), {}
    while len(out) < count:
        data = await asyncio.wait_for(reader.read(65536), 5)
        assert data, f"connection closed after {out}"
        for event in parser.feed(data):
            head = getattr(event, "head", None)
            if head is not None and head.status is not None:
                out[head.transaction_id] = head.status
    return out


async def test_bad_input_is_answered_and_the_other_session_carries_on(
    server_context: ssl.SSLContext,
) -> None:
    server = await make_server(server_context, max_message_bytes=1000)
    try:
        peer = parse_uri("msrp://127.0.0.1:9/peerpeerpeer;tcp")
        strict = server.open(
            server.local_uri(False), [peer], active=False, accept_types=["text/plain"]
        )
        other = server.open(server.local_uri(False), [peer], active=False)
        a, b, me = str(strict.local_uri), str(other.local_uri), str(peer)
        port = server.listener(False).port  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            raw_request("bind0001", a, me, "Message-ID: m0001\r\nByte-Range: 1-0/0\r\n", None)
        )
        writer.write(
            raw_request("bind0002", b, me, "Message-ID: m0002\r\nByte-Range: 1-0/0\r\n", None)
        )
        text = "Content-Type: text/plain\r\n"
        writer.write(
            raw_request("bad00001", a, me, "Message-ID: msg0001\r\nByte-Range: x\r\n" + text, b"x")
        )
        writer.write(raw_request("big00001", a, me, "Message-ID: msg0002\r\n" + text, b"y" * 2000))
        writer.write(
            raw_request(
                "htm00001", a, me, "Message-ID: msg0003\r\nContent-Type: text/html\r\n", b"<p>"
            )
        )
        writer.write(
            raw_request(
                "who00001",
                a.replace(strict.session_id, "nosuchsession1"),
                me,
                "Message-ID: msg0004\r\n" + text,
                b"z",
            )
        )
        writer.write(
            raw_request(
                "bad00002",
                b,
                "msrp://127.0.0.1:9/intruder;tcp",
                "Message-ID: msg0005\r\n" + text,
                b"z",
            )
        )
        writer.write(raw_request("good0001", b, me, "Message-ID: msg0006\r\n" + text, b"fine"))
        await writer.drain()
        statuses = await read_responses(reader, 8)
        assert statuses == {
            "bind0001": 200,
            "bind0002": 200,
            "bad00001": 400,
            "big00001": 413,
            "htm00001": 415,
            "who00001": 481,
            "bad00002": 403,
            "good0001": 200,
        }
        got = await next_of(other, MessageReceived)
        assert isinstance(got, MessageReceived) and got.body == b"fine"
        assert isinstance(await next_of(strict, MessageAborted), MessageAborted)  # the 413
        # A stream that cannot be framed any more is closed; both sessions are told.
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert isinstance(await next_of(other, ConnectionFailed), ConnectionFailed)
        assert isinstance(await next_of(strict, ConnectionFailed), ConnectionFailed)
        writer.close()
    finally:
        await server.stop()


class ManualClock:
    """A clock for the transport's timers that moves only when the test says (``advance``):
    timeouts are checked on either side of their deadline without sleeping or racing."""

    @dataclass(order=True)
    class Handle:
        deadline: float
        seq: int
        callback: Callable[[], object] = field(compare=False)
        cancelled: bool = field(default=False, compare=False)

        def cancel(self) -> None:
            self.cancelled = True

        def when(self) -> float:
            return self.deadline

    def __init__(self) -> None:
        self.now = 1000.0
        self._heap: list[ManualClock.Handle] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> ManualClock.Handle:
        handle = ManualClock.Handle(when, next(self._seq), callback)
        heapq.heappush(self._heap, handle)
        return handle

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._heap and self._heap[0].deadline <= target:
            handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                self.now = max(self.now, handle.deadline)
                handle.callback()
        self.now = target


async def test_idle_connection_is_closed(
    server_context: ssl.SSLContext, client: MsrpTransport
) -> None:
    """Silence for ``idle_timeout`` closes a connection; a moment less does not."""
    clock = ManualClock()
    server = await make_server(server_context, idle_timeout=60.0, clock=clock)
    try:
        passive, active = await pair(server, client, secure=False)
        clock.advance(59.9)
        await asyncio.sleep(0)
        assert server.connection_count == 1 and not passive.closed
        active.send_message("text/plain", b"still here")  # activity restarts the count
        assert isinstance(await next_of(passive, MessageReceived), MessageReceived)
        clock.advance(59.9)
        assert server.connection_count == 1 and not passive.closed
        clock.advance(0.2)
        failed = await next_of(passive, ConnectionFailed, timeout=30)
        assert isinstance(failed, ConnectionFailed)
        assert isinstance(await next_of(active, ConnectionFailed, timeout=30), ConnectionFailed)
        assert server.connection_count == 0
    finally:
        await server.stop()


async def test_connect_timeouts(server_context: ssl.SSLContext) -> None:
    clock = ManualClock()
    server = await make_server(server_context, connect_timeout=30.0, clock=clock)
    try:
        # A passive session nobody connects to fails at its deadline, not before.
        peer = parse_uri("msrp://127.0.0.1:9/peerpeerpeer;tcp")
        lonely = server.open(server.local_uri(False), [peer], active=False)
        clock.advance(29.9)
        assert not lonely.closed
        clock.advance(0.2)
        with pytest.raises(MsrpConnectError):
            await lonely.wait_connected(30)
        assert lonely.closed
        # A connection that names no session is closed at its deadline.
        port = server.listener(False).port  # type: ignore[union-attr]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await wait_until(lambda: server.connection_count == 1, timeout=30)
        clock.advance(29.9)
        assert server.connection_count == 1
        clock.advance(0.2)
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()
        # An active session to a port nobody listens on fails (refused: no timer involved).
        closed = parse_uri(f"msrp://127.0.0.1:{port}/x1234567;tcp")
        await server.stop()
        late = MsrpTransport(connect_timeout=30.0)
        channel = late.open(late.local_uri(False), [closed], active=True)
        with pytest.raises(MsrpConnectError):
            await channel.wait_connected(30)
        await late.stop()
    finally:
        await server.stop()


async def test_a_bug_in_the_core_costs_one_connection_logged_once(
    server: MsrpTransport, client: MsrpTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception out of the core (our bug: peer input never raises) is logged once with
    the peer and its sessions, ends that connection's sessions, and the others go on."""
    doomed, doomed_client = await pair(server, client, secure=False)
    other_client = MsrpTransport(share_connections=False)
    try:
        theirs, ours = other_client.local_uri(False), server.local_uri(False)
        survivor = server.open(ours, [theirs], active=False)
        survivor_client = other_client.open(theirs, [ours], active=True)
        await asyncio.wait_for(
            asyncio.gather(survivor.wait_connected(), survivor_client.wait_connected()), 30
        )
        connection = doomed._conn
        assert connection is not None and survivor._conn is not connection

        def broken(data: bytes, now: float) -> None:
            raise RuntimeError("injected core failure")

        connection.core.receive_data = broken  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="chorus.msrp.transport"):
            doomed_client.send_message("text/plain", b"boom")
            failed = await next_of(doomed, ConnectionFailed, timeout=30)
        assert isinstance(failed, ConnectionFailed)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        message = errors[0].getMessage()
        assert "failed on" in message and doomed.session_id in message
        assert errors[0].exc_info is not None and "injected" in str(errors[0].exc_info[1])
        survivor_client.send_message("text/plain", b"unaffected")
        got = await next_of(survivor, MessageReceived, timeout=30)
        assert isinstance(got, MessageReceived) and got.body == b"unaffected"
    finally:
        await other_client.stop()


async def test_session_ids_are_unguessable_and_trace_is_written(
    server_context: ssl.SSLContext, client: MsrpTransport, tmp_path: Path
) -> None:
    trace = tmp_path / "msrp.trace"
    server = await make_server(server_context, tracer=MsrpTracer(trace))
    try:
        ids = {server.new_session_id() for _ in range(1000)}
        assert len(ids) == 1000 and all(len(i) == 16 for i in ids)
        passive, active = await pair(server, client, secure=True)
        active.send_message("text/plain", b"traced words")
        await next_of(passive, MessageReceived)
    finally:
        await server.stop()
    text = trace.read_text()
    assert "msrp recv <-" in text and "traced words" in text and "MSRP " in text


async def test_server_side_active_session(
    server: MsrpTransport, server_context: ssl.SSLContext
) -> None:
    """a=setup:passive from the peer: we connect to it (RFC 6135)."""
    listener = await make_server(server_context)
    try:
        theirs = listener.local_uri(True)
        ours = server.local_uri(True)
        server.ssl_client = client_tls_context()
        waiting = listener.open(theirs, [ours], active=False)
        connecting = server.open(ours, [theirs], active=True)
        await asyncio.wait_for(
            asyncio.gather(waiting.wait_connected(), connecting.wait_connected()), 5
        )
        waiting.send_message("text/plain", b"over the reverse connection")
        got = await next_of(connecting, MessageReceived)
        assert isinstance(got, MessageReceived) and got.body == b"over the reverse connection"
    finally:
        await listener.stop()


# ---- the core: leniency and validation ---------------------------------------------------

ALICE = parse_uri("msrp://alicepc.example.com:7777/iau39soe2843z;tcp")
BOB = parse_uri("msrp://bob.example.com:8888/9di4eae923wzd;tcp")
RFC_10_1 = (
    b"MSRP a786hjs2 SEND\r\nTo-Path: msrp://bob.example.com:8888/9di4eae923wzd;tcp\r\n"
    b"From-Path: msrp://alicepc.example.com:7777/iau39soe2843z;tcp\r\nMessage-ID: 87652491\r\n"
    b"Byte-Range: 1-16/16\r\nSuccess-Report: yes\r\nContent-Type: text/plain\r\n\r\n"
    b"Hi, I'm Alice!\r\n-------a786hjs2$\r\n"
)


def test_rfc_example_byte_range_counting_the_crlf_is_accepted() -> None:
    """RFC 4975 §10.1 as printed: 1-16/16 for 14 bytes of text. Trust the framed data."""
    for split in (len(RFC_10_1), 1):
        bob = MsrpConnection(random=lambda n: bytes(n))
        bob.add_session(MsrpSession(BOB, [ALICE]))
        for i in range(0, len(RFC_10_1), split):
            bob.receive_data(RFC_10_1[i : i + split], now=0.0)
        (event,) = bob.events()
        assert isinstance(event, MessageReceived)
        assert (event.body, event.size) == (b"Hi, I'm Alice!", 14)
        out = bob.data_to_send()
        response, report = (
            parse_chunk(out[: out.index(b"$\r\n") + 3]),
            out[out.index(b"$\r\n") + 3 :],
        )
        assert response.head.status == 200
        assert b"Byte-Range: 1-14/14" in report and b"Status: 000 200 OK" in report


def test_validator_answers_its_status_instead_of_200() -> None:
    def refuse(content_type: str | None, body: bytes) -> None:
        if body == b"Hi, I'm Alice!":
            raise MsrpError(415, "not that")

    bob = MsrpConnection(random=lambda n: bytes(n))
    bob.add_session(MsrpSession(BOB, [ALICE], validator=refuse))
    bob.receive_data(RFC_10_1, now=0.0)
    (event,) = [e for e in bob.events() if isinstance(e, MessageAborted | MessageReceived)]
    assert isinstance(event, MessageAborted) and event.status == 415
    out = bob.data_to_send()
    assert parse_chunk(out).head.status == 415  # and no success REPORT


# ---- SDP ------------------------------------------------------------------------------------

OFFER = (
    "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=message 2855 TCP/TLS/MSRP *\r\na=path:msrps://127.0.0.1:2855/abcd1234;tcp\r\n"
    "a=accept-types:message/cpim text/plain\r\na=accept-wrapped-types:*\r\n"
    "a=max-size:65536\r\na=setup:actpass\r\na=chatroom:nickname private-messages\r\n"
)


def test_sdp_helpers() -> None:
    offer = sdp.parse(OFFER)
    media = parse_msrp_media(offer.media[0])
    assert media.secure and media.endpoint.session_id == "abcd1234"
    assert media.accept_types == ("message/cpim", "text/plain")
    assert media.accept_wrapped_types == ("*",)
    assert (media.max_size, media.setup) == (65536, Setup.ACTPASS)
    assert media.chatroom == ("nickname", "private-messages")
    assert answer_setup(None) == (None, False)  # RFC 4975: the offerer connects
    assert answer_setup(Setup.ACTPASS) == (Setup.PASSIVE, False)
    assert answer_setup(Setup.ACTIVE) == (Setup.PASSIVE, False)
    assert answer_setup(Setup.PASSIVE) == (Setup.ACTIVE, True)
    assert offer_is_active(None) and not offer_is_active(Setup.ACTIVE)
    local = parse_uri("msrps://127.0.0.1:4000/zyxw9876;tcp")
    state = sdp.SdpSession(sess_id=5, address="127.0.0.1")
    answer = state.answer(offer, [accept_msrp(local, ["message/cpim"], setup=Setup.PASSIVE)])
    text = sdp.serialize(answer).decode()
    assert "m=message 4000 TCP/TLS/MSRP *\r\n" in text
    assert "a=path:msrps://127.0.0.1:4000/zyxw9876;tcp\r\n" in text
    assert "a=setup:passive\r\n" in text
    again = parse_msrp_media(sdp.parse(text).media[0])
    assert again.path == (local,)
    line = msrp_media(parse_uri("msrp://127.0.0.1/q1w2e3r4;tcp"), ["text/plain"])
    assert (line.port, line.proto, line.get("setup")) == (9, "TCP/MSRP", "actpass")
    for bad in ("a=path:http://x\r\n", ""):
        broken = sdp.parse(OFFER.replace("a=path:msrps://127.0.0.1:2855/abcd1234;tcp\r\n", bad))
        with pytest.raises(sdp.SdpError):
            parse_msrp_media(broken.media[0])


# ---- configuration --------------------------------------------------------------------------


def test_msrp_config_section() -> None:
    from control.config import ConfigError, parse_config

    config = parse_config(
        {
            "msrp": {"listen": ["tcp:127.0.0.1:3000"], "idle_timeout": 60},
            "server": {"trace_msrp": "/tmp/msrp.trace"},
        }
    )
    assert config.msrp.listen == (ListenAddress("tcp", "127.0.0.1", 3000),)
    assert config.msrp.idle_timeout == 60
    assert str(config.server.trace_msrp) == "/tmp/msrp.trace"
    assert parse_config({}).server.trace_msrp is None
    for data, key in [
        ({"msrp": {"listen": ["udp:127.0.0.1:2855"]}}, "msrp.listen[0]"),
        ({"msrp": {"listen": ["tls:127.0.0.1:1", "tls:127.0.0.1:2"]}}, "msrp.listen[1]"),
        ({"msrp": {"max_message_bytes": 10}}, "msrp.max_message_bytes"),
        ({"msrp": {"connect_timeout": 0}}, "msrp.connect_timeout"),
        ({"msrp": {"bogus": 1}}, "msrp.bogus"),
        ({"server": {"trace_msrp": True}}, "server.trace_msrp"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(data)
        assert info.value.key == key
