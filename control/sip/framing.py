"""Stream framing of SIP over TCP/TLS (RFC 3261 §18.3) and the error responses for unparseable
input.

Split from ``message`` to keep it to the model, parser and serializer: ``StreamFramer`` cuts a
byte stream into messages by Content-Length, and ``build_error_response`` answers (400, 413, 513)
what neither the framer nor the parser could accept, from the header lines that survived.
"""

from __future__ import annotations

from control.sip.errors import SipError, SipParseError
from control.sip.headers import Headers, canonical_name
from control.sip.message import (
    _HEADER_NAME_RE,
    _MAX_LENGTH_DIGITS,
    _REQUEST_LINE_RE,
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    Response,
    _header_lines,
    reason_phrase,
)
from control.sip.uri import parse_name_addr


class StreamFramer:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (RFC 3261 §18.3).

    ``feed()`` returns whole messages as bytes; keep-alive CRLFs between messages are skipped
    and every double CRLF among them counts as one ping (RFC 5626 §4.4.1: the owner answers
    each with one CRLF), however the bytes were split. A framing error cannot be recovered from
    on a stream: ``feed`` raises SipParseError, carrying whatever header lines it could read so
    that the owner can answer (400, 413, 513) before it closes the connection. Messages framed
    before the error in the same read are not lost: ``feed`` returns them and keeps the error
    in ``error``, for the owner to act on after them (and the next ``feed`` raises it).
    """

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._buffer = bytearray()
        self._max_header_bytes = max_header_bytes
        self._max_body_bytes = max_body_bytes
        self._crlf_run = b""  # CR/LF bytes seen since the last message or ping, across feeds
        self.pings = 0
        self.error: SipParseError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            raise self.error
        self._buffer += data
        messages: list[bytes] = []
        try:
            self._frame(messages)
        except SipParseError as exc:
            self.error = exc
            if not messages:
                raise
        return messages

    def _frame(self, messages: list[bytes]) -> None:
        while True:
            self._skip_keepalives()
            if not self._buffer:
                return
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > self._max_header_bytes + 3:
                    raise _salvaged(513, "header block too large", bytes(self._buffer))
                return
            head = bytes(self._buffer[:end])
            if end > self._max_header_bytes:
                raise _salvaged(513, "header block too large", head)
            if b"SIP/" not in head.split(b"\r\n", 1)[0].upper():
                # Every message on a stream opens with a request or status line (RFC 3261 §7.1,
                # §7.2). Anything else is what a wrong Content-Length left behind: the framing
                # is lost and nothing later on this connection can be trusted (§18.3).
                raise _salvaged(400, "stream out of sync", head)
            length = self._content_length(head)
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            messages.append(bytes(self._buffer[:total]))
            del self._buffer[:total]

    def _skip_keepalives(self) -> None:
        count = 0
        while count < len(self._buffer) and self._buffer[count] in b"\r\n":
            count += 1
        if not count:
            if self._buffer:
                self._crlf_run = b""  # a message starts: a half-received ping is forgotten
            return
        self._crlf_run += bytes(self._buffer[:count])
        del self._buffer[:count]
        while (index := self._crlf_run.find(b"\r\n\r\n")) >= 0:
            self.pings += 1
            self._crlf_run = self._crlf_run[index + 4 :]
        self._crlf_run = self._crlf_run[-3:]  # all a split ping can still need
        if self._buffer:
            self._crlf_run = b""

    def _content_length(self, head: bytes) -> int:
        found: int | None = None
        for line in head.split(b"\r\n")[1:]:
            if line[:1] in (b" ", b"\t"):
                continue  # a folded continuation line never starts a header (§7.3.1)
            name, colon, value = line.partition(b":")
            if colon and name.strip(b" \t").lower() in (b"content-length", b"l"):
                text = value.strip(b" \t")
                if not text.isdigit() or found is not None:
                    raise _salvaged(400, "bad Content-Length on stream", head)
                if len(text.lstrip(b"0")) > _MAX_LENGTH_DIGITS:
                    raise _salvaged(413, "body too large", head)
                found = int(text)
        if found is None:
            raise _salvaged(400, "no Content-Length on stream", head)
        if found > self._max_body_bytes:
            raise _salvaged(413, "body too large", head)
        return found

    @property
    def buffered(self) -> int:
        return len(self._buffer)


def _salvaged(status: int, reason: str, head: bytes) -> SipParseError:
    """A framing error carrying the readable header lines, for build_error_response."""
    text = head.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    lines = _header_lines(text)
    raw: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if colon and _HEADER_NAME_RE.fullmatch(name) is not None:
            raw.append((canonical_name(name), value.strip(" \t")))
    is_request = _REQUEST_LINE_RE.fullmatch(lines[0]) is not None
    return SipParseError(status, reason, is_request=is_request, raw_headers=raw)


def build_error_response(error: SipParseError, *, to_tag: str | None = None) -> bytes | None:
    """A response to an unparseable request, whenever a Via survived to address one.

    Via, From, To, Call-ID and CSeq are copied verbatim (RFC 3261 §8.2.6.2), even when one of
    them is what was malformed: the client matches a response by its top Via branch and CSeq
    (§17.1.3), and a copy is what it sent. Those that are missing stay missing: RFC 4475
    §3.3.1 still wants the 400 for a request that lacks them. ``to_tag`` (from the owner's
    random source) is added to a To that parses and has none. The parser's reason travels in a
    Warning (§20.43).
    """
    if not error.is_request:
        return None
    headers = Headers(error.raw_headers)
    if not headers.get("Via"):
        return None
    response = Headers()
    for value in headers.get_raw("Via"):
        response.add("Via", value)
    to_value = headers.get("To") or ""
    if to_tag is not None:
        try:
            to_addr = parse_name_addr(to_value)
        except SipError:
            pass
        else:
            if to_addr.tag is None:
                to_value = str(to_addr.with_tag(to_tag))
    copied: list[tuple[str, str | None]] = [
        ("From", headers.get("From")),
        ("To", to_value),
        ("Call-ID", headers.get("Call-ID")),
        ("CSeq", headers.get("CSeq")),
    ]
    for name, maybe in copied:
        if maybe:
            response.add(name, maybe)
    reason = "".join(c if " " <= c <= "~" else "?" for c in error.reason)[:100]
    reason = reason.replace("\\", "\\\\").replace('"', '\\"')
    status = error.status
    message = Response(headers=response, status=status, reason=reason_phrase(status))
    message.headers.add("Warning", f'399 chorus "{reason}"')
    return message.serialize()
