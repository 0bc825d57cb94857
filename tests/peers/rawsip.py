"""Raw-socket SIP helpers for robustness tests: hand-built (and hand-broken) messages, blocking
UDP and TCP sockets on 127.0.0.1, and a small reader that frames a response off a stream.

Nothing here validates what it sends: the point is to send what a real stack never would.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
import uuid
from collections.abc import Iterable

from control.sip.errors import SipParseError
from control.sip.message import Response, parse_message

HOST = "127.0.0.1"


def token() -> str:
    return uuid.uuid4().hex[:16]


def raw_request(
    method: str,
    port: int,
    *,
    transport: str = "UDP",
    user: str = "echo",
    call_id: str | None = None,
    branch: str | None = None,
    body: bytes = b"",
    content_length: str | None = None,
    omit: Iterable[str] = (),
    extra: Iterable[tuple[str, str]] = (),
    local_port: int = 5999,
) -> bytes:
    """A request built line by line, so that any header can be left out or lied about.

    ``content_length`` replaces the true length (any text, even non-numeric); ``omit`` names
    headers to leave out, ``Content-Length`` included.
    """
    skip = {name.lower() for name in omit}
    call_id = call_id or token()
    branch = branch or "z9hG4bK" + token()
    headers = [
        ("Via", f"SIP/2.0/{transport} {HOST}:{local_port};branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<sip:tester@{HOST}>;tag={token()[:8]}"),
        ("To", f"<sip:{user}@{HOST}:{port}>"),
        ("Call-ID", call_id),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:tester@{HOST}:{local_port};transport={transport.lower()}>"),
        *extra,
    ]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    headers.append(("Content-Length", str(len(body)) if content_length is None else content_length))
    lines = [f"{method} sip:{user}@{HOST}:{port} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers if name.lower() not in skip]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response), data[:200]
    return message


class RawUdp:
    """A blocking UDP socket bound to a free loopback port."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.port: int = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, (HOST, port))

    def receive(self, timeout: float) -> bytes | None:
        """The next datagram, or None if none came within ``timeout`` seconds."""
        self.sock.settimeout(timeout)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        return data

    def responses(self, timeout: float) -> list[Response]:
        """Every datagram received until ``timeout`` seconds pass in silence, parsed."""
        found = []
        while (data := self.receive(timeout)) is not None:
            found.append(parse_response(data))
        return found

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawUdp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StreamResult:
    """What came back on a stream: framed responses, and whether (and how) it ended."""

    def __init__(self) -> None:
        self.responses: list[Response] = []
        self.closed = False  # EOF or reset seen
        self.reset = False  # ECONNRESET / EPIPE rather than a clean FIN
        self.trailing = b""  # bytes after the last whole response (CRLF pongs, a partial one)


class RawTcp:
    """A blocking TCP connection with helpers to read what the server answers."""

    def __init__(self, port: int, *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self._buffer = b""

    @property
    def local_port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def send(self, data: bytes) -> bool:
        """Send everything; False if the server has closed or reset the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def read_until_closed_or_quiet(self, timeout: float) -> StreamResult:
        """Read until EOF/reset, or until ``timeout`` seconds pass with nothing received."""
        result = StreamResult()
        while True:
            ready, _, _ = select.select([self.sock], [], [], timeout)
            if not ready:
                break
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                result.closed = result.reset = True
                break
            if not chunk:
                result.closed = True
                break
            self._buffer += chunk
        self._frame(result)
        return result

    def wait_closed(self, timeout: float) -> StreamResult:
        """Read (discarding nothing) until the server closes; ``closed`` False on timeout."""
        result = StreamResult()
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], left)
            if not ready:
                break
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                result.closed = result.reset = True
                break
            if not chunk:
                result.closed = True
                break
            self._buffer += chunk
        self._frame(result)
        return result

    def _frame(self, result: StreamResult) -> None:
        while True:
            data = self._buffer.lstrip(b"\r\n")
            end = data.find(b"\r\n\r\n")
            if end < 0:
                break
            try:
                head = parse_message(data[: end + 4], stream=False)
                length = int(head.headers.get("Content-Length") or "0")
            except (SipParseError, ValueError):
                break
            total = end + 4 + length
            if len(data) < total:
                break
            result.responses.append(parse_response(data[:total]))
            self._buffer = data[total:]
        result.trailing = self._buffer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawTcp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_closed_by_peer(sock: socket.socket) -> bool:
    """True if a readable socket reports EOF or a reset (data, if any, is discarded)."""
    try:
        while True:
            chunk = sock.recv(65536, socket.MSG_DONTWAIT)
            if not chunk:
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True
