"""Raw-socket SIP helpers for robustness tests: hand-built (and hand-broken) messages, blocking
UDP and TCP sockets on 127.0.0.1, and a small reader that frames a response off a stream.

Nothing here validates what it sends: the point is to send what a real stack never would.
"""

from __future__ import annotations

import contextlib
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


def status_of(data: bytes) -> int:
    """The status code of a raw response, read from its status line alone.

    Some answers copy a request's defect verbatim (RFC 3261 §8.2.6.2) and do not parse.
    """
    version, code, *_ = data.split(b"\r\n", 1)[0].split(b" ", 2)
    assert version == b"SIP/2.0" and code.isdigit(), data[:200]
    return int(code)


class StreamResult:
    """What came back on a stream: framed responses, and whether the server ended it."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []  # every framed response, parseable or not
        self.responses: list[Response] = []  # those that parse
        self.closed = False  # EOF or reset seen
        self.trailing = b""  # bytes after the last whole response (CRLF pongs, a partial one)

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.responses]

    @property
    def raw_statuses(self) -> list[int]:
        return [status_of(data) for data in self.raw]


class RawTcp:
    """A blocking TCP connection with a reader that frames what the server answers.

    Reads use socket timeouts rather than select(), which cannot watch descriptors above 1024
    (the connection-flood test holds thousands).
    """

    def __init__(self, port: int, *, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self._buffer = b""

    def send(self, data: bytes) -> bool:
        """Send everything; False if the server has closed or reset the connection."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True

    def read(
        self, *, quiet: float, limit: float = 15.0, until_call_id: str | None = None
    ) -> StreamResult:
        """Read until the server closes the connection, a response with ``until_call_id``
        arrives, nothing arrives for ``quiet`` seconds, or ``limit`` seconds have passed."""
        result = StreamResult()
        deadline = time.monotonic() + limit
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(min(quiet, left))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except (ConnectionResetError, BrokenPipeError):
                result.closed = True
                break
            if not chunk:
                result.closed = True
                break
            self._buffer += chunk
            self._frame(result)
            if until_call_id is not None and any(
                r.call_id == until_call_id for r in result.responses
            ):
                break
        self._frame(result)
        return result

    def _frame(self, result: StreamResult) -> None:
        while True:
            data = self._buffer.lstrip(b"\r\n")
            end = data.find(b"\r\n\r\n")
            if end < 0:
                break
            length = _content_length(data[:end])
            total = end + 4 + length
            if len(data) < total:
                break
            result.raw.append(data[:total])
            with contextlib.suppress(SipParseError):
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


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() in (b"content-length", b"l"):
            return int(value.strip())
    return 0
