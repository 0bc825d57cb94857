"""The FreeSWITCH Event Socket wire format, sans-IO: bytes in, messages out, and back.

mod_event_socket speaks plain text over TCP. Every message is a block of ``Name: value``
lines ended by an empty line (``\\n\\n``), followed by exactly ``Content-Length`` bytes of
body when that header is present. The outer block names the kind in ``Content-Type``:

* ``auth/request`` — sent on connect; the client answers ``auth <password>``;
* ``command/reply`` — the answer to a command, its result in ``Reply-Text`` (``+OK …`` or
  ``-ERR …``);
* ``api/response`` — the answer to ``api <cmd>``, the command's output as the body;
* ``text/event-plain`` — an event subscribed to with ``event plain …``: the body is itself a
  header block whose values are URL-encoded (``switch_event_serialize`` with encoding on,
  unsafe set ``SWITCH_URL_UNSAFE``), and carries an inner ``Content-Length`` plus body when
  the event has one;
* ``text/disconnect-notice`` — the server is closing the connection;
* ``text/rude-rejection`` — the client's address is not in the socket's ACL.

Commands from a client are one or more lines ended by an empty line. Nothing here touches a
socket: ``EslParser`` is fed whatever bytes arrived (half a header, three messages at once)
and hands out whole messages; the ``*_bytes`` helpers serialise what either side sends.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

__all__ = [
    "ContentType",
    "EslError",
    "EslEvent",
    "EslMessage",
    "EslParser",
    "api_response_bytes",
    "auth_request_bytes",
    "command_bytes",
    "command_reply_bytes",
    "disconnect_notice_bytes",
    "event_plain_bytes",
    "parse_event_plain",
    "url_encode",
]

MAX_HEADER_BYTES = 256 * 1024  # an event with every channel variable stays far below this
MAX_BODY_BYTES = 16 * 1024 * 1024  # `conference list` of a huge room, a big api answer


class ContentType(enum.StrEnum):
    AUTH_REQUEST = "auth/request"
    COMMAND_REPLY = "command/reply"
    API_RESPONSE = "api/response"
    EVENT_PLAIN = "text/event-plain"
    DISCONNECT_NOTICE = "text/disconnect-notice"
    RUDE_REJECTION = "text/rude-rejection"


class EslError(Exception):
    """The peer broke the framing (a bad Content-Length, an oversized block): the
    connection cannot be trusted any more and is closed."""


@dataclass(frozen=True, slots=True)
class EslMessage:
    """One framed message: its outer headers (as sent, values not decoded) and body."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @property
    def reply_text(self) -> str:
        return self.headers.get("Reply-Text", "")


@dataclass(frozen=True, slots=True)
class EslEvent:
    """An event's headers, URL-decoded, in the order FreeSWITCH sent them."""

    headers: Mapping[str, str]
    body: str = ""
    order: tuple[str, ...] = field(default=(), compare=False)

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def subclass(self) -> str:
        return self.headers.get("Event-Subclass", "")

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


_HEADER = re.compile(rb"^([^:\r\n]+):[ \t]*(.*?)\r?$")


def _parse_block(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.split(b"\n"):
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if match is None:
            raise EslError(f"not a header line: {line[:80]!r}")
        name = match.group(1).decode("utf-8", "replace").strip()
        headers[name] = match.group(2).decode("utf-8", "replace")
    return headers


def _content_length(headers: Mapping[str, str], limit: int) -> int:
    text = headers.get("Content-Length")
    if text is None:
        return 0
    if not text.strip().isdigit():
        raise EslError(f"bad Content-Length {text!r}")
    length = int(text)
    if length > limit:
        raise EslError(f"Content-Length {length} over the {limit} byte limit")
    return length


class EslParser:
    """Reassembles messages from a TCP byte stream, however it is split.

    ``feed`` as bytes arrive; ``next_message`` returns each complete message once, None
    while the current one is still partial (a half-written event waits for its rest).
    """

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._buffer = bytearray()
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._pending: dict[str, str] | None = None  # headers read, body still coming
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a returned message (a partial message)."""
        return len(self._buffer) + (1 if self._pending is not None else 0)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> EslMessage | None:
        if self._pending is None:
            # Blank lines between messages are tolerated (clients send "\n\n" as well).
            while self._buffer[:1] == b"\n":
                del self._buffer[:1]
            end = self._buffer.find(b"\n\n")
            if end < 0:
                if len(self._buffer) > self._max_header:
                    raise EslError("header block over the limit")
                return None
            headers = _parse_block(bytes(self._buffer[:end]))
            del self._buffer[: end + 2]
            self._pending = headers
            self._need = _content_length(headers, self._max_body)
        if len(self._buffer) < self._need:
            return None
        headers, self._pending = self._pending, None
        body = bytes(self._buffer[: self._need])
        del self._buffer[: self._need]
        return EslMessage(headers, body)


def parse_event_plain(body: bytes) -> EslEvent:
    """Decode the body of a ``text/event-plain`` message into an event.

    Values are URL-decoded one by one (a decoded value may hold ``\\n`` or ``:``, so the
    block is split before decoding). An inner ``Content-Length`` introduces the event's own
    body after the empty line.
    """
    head, sep, rest = body.partition(b"\n\n")
    raw = _parse_block(head)
    headers = {name: unquote(value) for name, value in raw.items()}
    event_body = ""
    if sep and "Content-Length" in headers:
        length = _content_length(headers, MAX_BODY_BYTES)
        event_body = rest[:length].decode("utf-8", "replace")
    return EslEvent(headers, event_body, tuple(headers))


# switch_utils.h SWITCH_URL_UNSAFE, plus control characters and every non-ASCII byte.
_UNSAFE = frozenset(b'\r\n #%&+:;<=>?@[\\]^`{|}"')
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def url_encode(value: str) -> str:
    """``switch_url_encode``: unsafe bytes as ``%XX`` (upper case); an existing ``%XX``
    escape is kept as it is (FreeSWITCH does not double-encode)."""
    data = value.encode("utf-8")
    out: list[str] = []
    for index, byte in enumerate(data):
        kept = index + 2 < len(data) and data[index + 1] in _HEX and data[index + 2] in _HEX
        if byte == 0x25 and kept:
            out.append("%")
        elif byte < 0x20 or byte > 0x7E or byte in _UNSAFE:
            out.append(f"%{byte:02X}")
        else:
            out.append(chr(byte))
    return "".join(out)


def command_bytes(command: str) -> bytes:
    """A client command (``auth …``, ``api …``, ``event plain …``, ``exit``)."""
    if "\n\n" in command or not command.strip():
        raise ValueError(f"not a single ESL command: {command!r}")
    return command.encode("utf-8") + b"\n\n"


def auth_request_bytes() -> bytes:
    return b"Content-Type: auth/request\n\n"


def command_reply_bytes(reply_text: str, extra: Iterable[tuple[str, str]] = ()) -> bytes:
    lines = [f"Content-Type: {ContentType.COMMAND_REPLY}", f"Reply-Text: {reply_text}"]
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def api_response_bytes(body: str) -> bytes:
    data = body.encode("utf-8")
    head = f"Content-Type: {ContentType.API_RESPONSE}\nContent-Length: {len(data)}\n\n"
    return head.encode("ascii") + data


DISCONNECT_TEXT = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def disconnect_notice_bytes() -> bytes:
    data = DISCONNECT_TEXT.encode("ascii")
    head = f"Content-Type: {ContentType.DISCONNECT_NOTICE}\nContent-Length: {len(data)}\n\n"
    return head.encode("ascii") + data


def event_plain_bytes(headers: Sequence[tuple[str, str]], body: str = "") -> bytes:
    """An event as mod_event_socket writes it: the serialised event (values URL-encoded,
    ``Content-Length`` + body when it has one) behind an outer ``Content-Length`` /
    ``Content-Type: text/event-plain`` block, in that order."""
    inner = "".join(f"{name}: {url_encode(value) or '_undef_'}\n" for name, value in headers)
    payload = body.encode("utf-8")
    data = inner.encode("ascii")
    if payload:
        data += b"Content-Length: %d\n\n" % len(payload) + payload
    else:
        data += b"\n"
    head = f"Content-Length: {len(data)}\nContent-Type: {ContentType.EVENT_PLAIN}\n\n"
    return head.encode("ascii") + data
