"""Malformed SIP over UDP and TCP against a real ``chorus serve``: truncated messages, wrong
Content-Length, missing and broken mandatory headers, binary garbage, 10 MB streamed into one
connection, an endless header block, and a flood of half-open connections past
``max_connections``.

Each bad input must get a 400 (or 413/513), nothing, or a closed connection; never a crash.
After every scenario the server must still answer OPTIONS over UDP and TCP and take an echo call
(INVITE 200, BYE 200), and its log must hold no traceback.

"Nothing came back" is proven without sleeping: the bad message is followed by an OPTIONS probe
on the same socket, and a server handles one socket's input in order, so any answer to the bad
message arrives before the probe's 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.peers.chorus import ChorusProcess
from tests.peers.rawsip import HOST, RawTcp, RawUdp, raw_request, token
from tests.peers.sipclient import SipClient

pytestmark = pytest.mark.timeout(120)

SDP = (
    b"v=0\r\no=tester 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
)


@pytest.fixture(scope="module")
def chorus() -> Iterator[ChorusProcess]:
    # No SIP trace: thousands of garbage datagrams would only fill the disk.
    overrides: dict[str, dict[str, Any]] = {
        "sip": {"max_connections": 200, "connection_idle_timeout": 30},
        "server": {"trace_sip": False},
    }
    with ChorusProcess(overrides) as process:
        yield process
        assert process.alive, process.log()
        assert "Traceback" not in process.log()


async def assert_still_serving(chorus: ChorusProcess) -> None:
    """OPTIONS over UDP and TCP, then an echo call over UDP; no traceback in the log."""
    assert chorus.alive, chorus.log()
    uri = f"sip:echo@{HOST}:{chorus.sip_port}"
    for transport in ("udp", "tcp"):
        async with SipClient(transport) as sip:
            options = await asyncio.wait_for(sip.request("OPTIONS", uri, chorus.sip_port).final, 15)
            assert options.status == 200, (transport, options.status)
    async with SipClient("udp") as sip:
        session, response = await asyncio.wait_for(sip.call(uri, SDP, chorus.sip_port), 15)
        assert response.status == 200
        assert session is not None
        bye = await asyncio.wait_for(session.request("BYE"), 15)
        assert bye.status == 200
    assert chorus.alive, chorus.log()
    assert "Traceback" not in chorus.log(), chorus.log()


# --- UDP -----------------------------------------------------------------------------------


def udp_exchange(port: int, bad: bytes, *, limit: float = 10.0) -> list[bytes]:
    """Send ``bad``, then an OPTIONS probe; return every datagram that came before its 200."""
    probe_call_id = "probe-" + token()
    with RawUdp() as udp:
        udp.send(bad, port)
        udp.send(raw_request("OPTIONS", port, call_id=probe_call_id, local_port=udp.port), port)
        before: list[bytes] = []
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            data = udp.receive(left)
            if data is None:
                break
            if f"Call-ID: {probe_call_id}\r\n".encode() in data:
                assert data.startswith(b"SIP/2.0 200 "), data[:200]
                return before
            before.append(data)
    raise AssertionError(f"no answer to the OPTIONS probe; got {before!r}")


def header_line(message: bytes, name: str) -> bytes:
    """The first ``name:`` line of a raw message, verbatim (without CRLF)."""
    for line in message.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(name.lower().encode() + b":"):
            return line
    raise AssertionError(f"no {name} in {message[:300]!r}")


def assert_answer_copies(answer: bytes, request: bytes, status: int) -> None:
    """RFC 3261 §8.2.6.2: Via, From, To (tag aside), Call-ID and CSeq copied from the request."""
    assert answer.startswith(f"SIP/2.0 {status} ".encode()), answer[:200]
    for name in ("Via", "From", "Call-ID", "CSeq"):
        assert header_line(answer, name) == header_line(request, name), name
    assert header_line(answer, "To").startswith(header_line(request, "To"))


@pytest.mark.parametrize("cut", [12, 60, 150, -40, -3])
async def test_udp_truncated_invite(chorus: ChorusProcess, cut: int) -> None:
    # Cut inside the request line, in the Via, mid-header, and just short of the empty line:
    # no end of headers, so nothing addressable survives and nothing is answered.
    whole = raw_request("INVITE", chorus.sip_port, body=SDP)
    head_end = whole.index(b"\r\n\r\n")
    truncated = whole[:cut] if cut > 0 else whole[: head_end + cut]
    assert udp_exchange(chorus.sip_port, truncated) == []
    await assert_still_serving(chorus)


async def test_udp_content_length_larger_than_body(chorus: ChorusProcess) -> None:
    bad = raw_request("INVITE", chorus.sip_port, body=SDP, content_length=str(len(SDP) + 500))
    answers = udp_exchange(chorus.sip_port, bad)
    assert len(answers) == 1
    assert_answer_copies(answers[0], bad, 400)
    assert b"Content-Length" in header_line(answers[0], "Warning")
    await assert_still_serving(chorus)


@pytest.mark.parametrize("missing", ["Call-ID", "From", "To", "CSeq"])
async def test_udp_missing_mandatory_header_gets_400(chorus: ChorusProcess, missing: str) -> None:
    # RFC 4475 §3.3.1 ("insuf"): a request missing mandatory headers gets a 400, addressed by
    # its Via, carrying the headers it had (RFC 3261 §8.2.6.2) and not the missing one.
    bad = raw_request("INVITE", chorus.sip_port, body=SDP, omit=[missing])
    answers = udp_exchange(chorus.sip_port, bad)
    assert len(answers) == 1
    assert answers[0].startswith(b"SIP/2.0 400 ")
    assert header_line(answers[0], "Via") == header_line(bad, "Via")
    assert f"\r\n{missing}:".encode() not in answers[0].split(b"\r\n\r\n")[0]
    await assert_still_serving(chorus)


async def test_udp_request_without_via_is_dropped(chorus: ChorusProcess) -> None:
    # Without a Via there is nowhere to send an answer (RFC 3261 §18.2.2): dropped, and the
    # server goes on.
    bad = raw_request("INVITE", chorus.sip_port, body=SDP, omit=["Via"])
    assert udp_exchange(chorus.sip_port, bad) == []
    await assert_still_serving(chorus)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (("CSeq: 1 INVITE", "CSeq: one INVITE"), "CSeq"),
        (("CSeq: 1 INVITE", "CSeq: 1 BYE"), "CSeq"),
        (("Max-Forwards: 70", "Max-Forwards: 70000"), "Max-Forwards"),
        (("Max-Forwards: 70", "Call-ID: second-call-id"), "Call-ID"),
        (("SIP/2.0\r\n", "SIP/2.0\r\nContent-Length: 3\r\n"), "Content-Length"),
    ],
)
async def test_udp_broken_mandatory_header_gets_400(
    chorus: ChorusProcess, change: tuple[str, str], reason: str
) -> None:
    good = raw_request("INVITE", chorus.sip_port, body=SDP)
    bad = good.replace(change[0].encode(), change[1].encode(), 1)
    assert bad != good
    answers = udp_exchange(chorus.sip_port, bad)
    assert len(answers) == 1
    assert_answer_copies(answers[0], bad, 400)
    assert reason.encode() in header_line(answers[0], "Warning")
    await assert_still_serving(chorus)


@pytest.mark.parametrize(
    "garbage",
    [
        b"SIP/2.0 abc Nonsense\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 999 Far Too Big\r\nCall-ID: x\r\n\r\n",
        b"SIP/2.0 200\r\n" + b"X" * 3000,
        # Well formed, but a response to no transaction: a UAS drops it (RFC 3261 §17.1.3).
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKnothing\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>;tag=2\r\nCall-ID: stray\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    ],
)
async def test_udp_response_looking_garbage(chorus: ChorusProcess, garbage: bytes) -> None:
    # Nothing is ever answered to a response (RFC 3261 §8.1.3.3 has the client discard it).
    assert udp_exchange(chorus.sip_port, garbage) == []
    await assert_still_serving(chorus)


async def test_udp_binary_garbage_flood(chorus: ChorusProcess) -> None:
    rng = random.Random(4475)
    prefixes = [b"", b"INVITE sip:echo@127.0.0.1 SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n", b"\r\n"]
    answers: list[bytes] = []
    with RawUdp() as udp:
        udp.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for index in range(3000):
            # Mostly MTU-sized, one in twenty up to the largest UDP payload.
            size = rng.randint(1, 65507) if index % 20 == 0 else rng.randint(1, 1500)
            payload = (prefixes[index % len(prefixes)] + rng.randbytes(size))[:65507]
            udp.send(payload, chorus.sip_port)
            if index % 100 == 99:
                await asyncio.sleep(0.005)  # let the loopback queue drain a little
        while (data := udp.receive(0.5)) is not None:
            answers.append(data)
    # Random octets can hardly ever address a response; anything answered must be an error.
    for answer in answers:
        assert answer[:9] == b"SIP/2.0 4" or answer[:9] == b"SIP/2.0 5", answer[:100]
    await assert_still_serving(chorus)


# --- TCP -----------------------------------------------------------------------------------


def tcp_request(
    port: int,
    *,
    call_id: str | None = None,
    content_length: str | None = None,
    omit: tuple[str, ...] = (),
) -> bytes:
    """An OPTIONS for a stream, with the Via saying TCP."""
    return raw_request(
        "OPTIONS", port, transport="TCP", call_id=call_id, content_length=content_length, omit=omit
    )


async def test_tcp_content_length_too_small_loses_sync_and_closes(chorus: ChorusProcess) -> None:
    # The INVITE's Content-Length covers 5 of its SDP octets; the rest of the SDP then sits
    # where the next message should start, ahead of a valid OPTIONS. The server cannot find
    # the next start line: it must close the connection, not parse SDP lines as headers.
    port = chorus.sip_port
    invite = raw_request("INVITE", port, transport="TCP", body=SDP, content_length="5")
    options = tcp_request(port, call_id="after-" + token())
    with RawTcp(port) as tcp:
        assert tcp.send(invite + options)
        result = tcp.read(quiet=10.0)
    assert result.closed
    for response in result.responses:
        # The cut INVITE itself may be answered (its 5-octet SDP is no offer); nothing else.
        assert response.cseq.method == "INVITE", response.status
        assert response.status == 100 or response.status >= 400
    await assert_still_serving(chorus)


@pytest.mark.parametrize("length", ["abc", "-1", "0x10", "1 2", ""])
async def test_tcp_content_length_not_numeric(chorus: ChorusProcess, length: str) -> None:
    port = chorus.sip_port
    bad = tcp_request(port, content_length=length)
    with RawTcp(port) as tcp:
        assert tcp.send(bad)
        result = tcp.read(quiet=10.0)
    assert result.closed
    # The framer salvages the headers, so the 400 is sent before the close (RFC 3261 §18.3).
    assert result.statuses == [400]
    assert_answer_copies(result.responses[0].serialize(), bad, 400)
    await assert_still_serving(chorus)


async def test_tcp_missing_content_length_gets_400_then_close(chorus: ChorusProcess) -> None:
    port = chorus.sip_port
    bad = tcp_request(port, omit=("Content-Length",))
    with RawTcp(port) as tcp:
        assert tcp.send(bad)
        result = tcp.read(quiet=10.0)
    assert result.closed
    assert result.statuses == [400]
    answer = result.responses[0]
    assert_answer_copies(answer.serialize(), bad, 400)
    assert "Content-Length" in (answer.headers.get("Warning") or "")
    await assert_still_serving(chorus)


async def test_tcp_unparseable_framed_request_keeps_the_stream(chorus: ChorusProcess) -> None:
    # Framing intact, content broken: answered with 400 when addressable (a Via survives),
    # dropped when not, and the connection stays usable for the next message.
    port = chorus.sip_port
    broken = tcp_request(port).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    unaddressable = tcp_request(port, omit=("Via",))
    probe_call_id = "probe-" + token()
    probe = tcp_request(port, call_id=probe_call_id)
    with RawTcp(port) as tcp:
        assert tcp.send(broken + unaddressable + probe)
        result = tcp.read(quiet=10.0, until_call_id=probe_call_id)
    assert not result.closed
    assert result.statuses == [400, 200]
    assert_answer_copies(result.responses[0].serialize(), broken, 400)
    assert result.responses[1].call_id == probe_call_id
    await assert_still_serving(chorus)


async def test_tcp_ten_megabytes_of_garbage_closes(chorus: ChorusProcess) -> None:
    rng = random.Random(10)
    garbage = rng.randbytes(10 * 1024 * 1024)
    with RawTcp(chorus.sip_port, timeout=15.0) as tcp:
        sent = 0
        while sent < len(garbage) and tcp.send(garbage[sent : sent + 65536]):
            sent += 65536
        result = tcp.read(quiet=15.0)
    # 64 KiB of octets without a complete header block is all the framer holds (then 513);
    # the connection must end, by FIN or by reset.
    assert result.closed
    assert all(r.status in (400, 413, 513) for r in result.responses)
    await assert_still_serving(chorus)


async def test_tcp_endless_header_block_gets_513_then_close(chorus: ChorusProcess) -> None:
    port = chorus.sip_port
    start = tcp_request(port).split(b"Content-Length")[0] + b"X-Pad: "
    # One octet past what the framer accepts (64 KiB + CRLFCRLF - 1) and no more, so that
    # everything sent is read before the close and the 513 is not lost to a reset.
    limit = 64 * 1024 + 3
    endless = start + b"p" * (limit + 1 - len(start))
    with RawTcp(port) as tcp:
        for offset in range(0, len(endless), 4096):
            assert tcp.send(endless[offset : offset + 4096])
        result = tcp.read(quiet=10.0)
    assert result.closed
    assert result.statuses == [513]
    assert_answer_copies(result.responses[0].serialize(), endless + b"\r\n\r\n", 513)
    await assert_still_serving(chorus)


# --- connection flood ----------------------------------------------------------------------

MAX_CONNECTIONS = 500
FLOOD = 2000
IDLE_TIMEOUT = 5


@contextlib.contextmanager
def raised_fd_limit(needed: int) -> Iterator[None]:
    """Soft RLIMIT_NOFILE up to the hard limit, for us and the server we start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 16 if hard == resource.RLIM_INFINITY else hard
    if target < needed:
        pytest.skip(f"needs {needed} descriptors, hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def closed_by_server(sock: socket.socket) -> bool:
    """True on EOF or reset; False while the connection is open and silent."""
    sock.setblocking(False)  # with a timeout set, recv() would wait for it, whatever flags
    try:
        while True:
            if not sock.recv(65536):
                return True
    except BlockingIOError:
        return False
    except OSError:  # ECONNRESET, EPIPE
        return True


def wait_for_closes(socks: list[socket.socket], count: int, limit: float) -> list[socket.socket]:
    """Watch ``socks`` (epoll: select() stops at descriptor 1024) until ``count`` of them are
    closed by the server or ``limit`` seconds pass; returns the closed ones."""
    closed: list[socket.socket] = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ, data=sock)
        deadline = time.monotonic() + limit
        while len(closed) < count and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.data
                if closed_by_server(sock):
                    selector.unregister(sock)
                    closed.append(sock)
    return closed


async def test_tcp_half_open_flood_up_to_the_limit() -> None:
    overrides: dict[str, dict[str, Any]] = {
        "sip": {"max_connections": MAX_CONNECTIONS, "connection_idle_timeout": IDLE_TIMEOUT},
        "server": {"trace_sip": False},
    }
    socks: list[socket.socket] = []
    with raised_fd_limit(FLOOD + 1000), ChorusProcess(overrides) as chorus:
        port = chorus.sip_port
        half_request = raw_request("INVITE", port, transport="TCP", body=SDP)[:200]
        try:
            for index in range(FLOOD):
                sock = socket.create_connection((HOST, port), timeout=10.0)
                socks.append(sock)
                if index % 2:
                    with contextlib.suppress(OSError):  # already refused: reset
                        sock.send(half_request)
            # Every connection past the limit is closed at accept; the first ones are held.
            refused = wait_for_closes(socks, FLOOD - MAX_CONNECTIONS, limit=30.0)
            assert len(refused) == FLOOD - MAX_CONNECTIONS
            refused_set = set(refused)
            held = [s for s in socks if s not in refused_set]
            assert len(held) == MAX_CONNECTIONS
            assert not any(closed_by_server(s) for s in held)

            # While full: one more connection is refused, UDP still works.
            with RawTcp(port) as extra:
                extra.send(tcp_request(port))
                assert extra.read(quiet=10.0).closed
            async with SipClient("udp") as sip:
                uri = f"sip:echo@{HOST}:{port}"
                options = await asyncio.wait_for(sip.request("OPTIONS", uri, port).final, 15)
                assert options.status == 200

            # The silent and the half-sent connections end at the idle timeout, and then new
            # connections are accepted again.
            idle_closed = wait_for_closes(held, len(held), limit=IDLE_TIMEOUT * 4)
            assert len(idle_closed) == MAX_CONNECTIONS
            await assert_still_serving(chorus)
        finally:
            for sock in socks:
                sock.close()
        assert chorus.alive
        assert "Traceback" not in chorus.log()


async def test_tcp_good_request_then_garbage_in_one_read(chorus: ChorusProcess) -> None:
    # The request framed before the garbage is still answered; then the stream is closed.
    port = chorus.sip_port
    probe_call_id = "probe-" + token()
    good = tcp_request(port, call_id=probe_call_id)
    with RawTcp(port) as tcp:
        assert tcp.send(good + b"NOT SIP AT ALL\r\n\r\n")
        result = tcp.read(quiet=10.0)
    assert result.responses and result.responses[0].call_id == probe_call_id
    assert result.statuses[0] == 200
    assert result.closed
    await assert_still_serving(chorus)
