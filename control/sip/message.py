"""SIP messages (RFC 3261 §7): model, parser and serializer (stream framing: ``framing``).

The parser validates what an element must validate before acting on a message: the start line,
the mandatory headers and their structure (Via, From, To, Call-ID, CSeq, Content-Length,
Max-Forwards, Contact), single-valued headers appearing once, CSeq's method matching the
request, and numeric fields in range. RFC 4475's torture tests are the reference.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from control.sip.errors import SipError, SipParseError
from control.sip.headers import (
    LIST_HEADERS,
    SINGLE_HEADERS,
    ContentType,
    CSeq,
    Headers,
    Via,
    canonical_name,
    parse_content_type,
    parse_cseq,
    parse_via,
)
from control.sip.uri import (
    NameAddr,
    SipUri,
    Uri,
    is_token,
    parse_name_addr,
    parse_params,
    parse_uri,
    split_header_list,
)

SIP_VERSION = "SIP/2.0"
MAX_HEADER_BYTES = 64 * 1024  # no legitimate SIP header block comes near this
MAX_BODY_BYTES = 1024 * 1024  # SDP, conference-info and MESSAGE bodies are far smaller
MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 §25.1 delta-seconds: 32 bits

REASONS = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    489: "Bad Event",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


def reason_phrase(status: int) -> str:
    return REASONS.get(status, REASONS.get(status // 100 * 100, "Unknown"))


def _from(headers: Headers) -> NameAddr:
    return parse_name_addr(headers.get("From") or "")


def _to(headers: Headers) -> NameAddr:
    return parse_name_addr(headers.get("To") or "")


def _cseq(headers: Headers) -> CSeq:
    return parse_cseq(headers.get("CSeq") or "")


def _top_via(headers: Headers) -> Via:
    return parse_via(headers.get_all("Via")[0])


def _contacts(headers: Headers) -> tuple[NameAddr, ...]:
    values = headers.get_all("Contact")
    return tuple(parse_name_addr(v) for v in values if v.strip(" \t") != "*")


def _content_type(headers: Headers) -> ContentType | None:
    value = headers.get("Content-Type")
    return parse_content_type(value) if value else None


@dataclass(slots=True)
class Message:
    """What requests and responses share: headers, body and the parsed mandatory fields.

    The parsed views are remembered by the headers (``Headers.parsed``) until they change:
    the parser stores what its validation parsed, so reading them again costs a dict lookup.
    """

    headers: Headers
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return self.headers.parsed("CSeq", _cseq)

    @property
    def from_(self) -> NameAddr:
        return self.headers.parsed("From", _from)

    @property
    def to(self) -> NameAddr:
        return self.headers.parsed("To", _to)

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def top_via(self) -> Via:
        return self.headers.parsed("Via", _top_via)

    @property
    def contacts(self) -> list[NameAddr]:
        return list(self.headers.parsed("Contact", _contacts))

    @property
    def content_type(self) -> ContentType | None:
        return self.headers.parsed("Content-Type", _content_type)

    def _serialize(self, start_line: str) -> bytes:
        lines = [f"{name}: {value}" for name, value in self.headers if name != "Content-Length"]
        head = "\r\n".join(lines)
        text = f"{start_line}\r\n{head}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        if not lines:
            text = f"{start_line}\r\nContent-Length: {len(self.body)}\r\n\r\n"
        return text.encode("utf-8", "surrogateescape") + self.body


@dataclass(slots=True)
class Request(Message):
    method: str = ""
    uri: Uri = field(default_factory=lambda: SipUri("invalid"))

    @property
    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def serialize(self) -> bytes:
        return self._serialize(self.start_line)

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        return _bounded_int(value, 255, "Max-Forwards") if value is not None else None

    def make_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        to_tag: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """Build a response per RFC 3261 §8.2.6.2: Via, From, To, Call-ID, CSeq copied.

        Record-Route is copied into responses that can establish a dialog (§12.1.1).
        """
        mine = self.headers
        known = mine.remembered()
        items = [("Via", value) for value in mine.values("Via")]
        to_value = mine.get("To") or ""
        to_addr = known.get("To")
        if to_tag is not None and status != 100:
            addr = self.to
            if addr.tag is None:
                if "tag" not in addr.params and _prints_as_received(to_value) and is_token(to_tag):
                    # what parsing the response's To would give: the request's, with the tag
                    to_value = f"{to_value};tag={to_tag}"
                    to_addr = NameAddr(addr.uri, addr.display_name, addr.params | {"tag": to_tag})
                else:
                    to_value = str(addr.with_tag(to_tag))
                    to_addr = None
        items += (
            ("From", mine.get("From") or ""),
            ("To", to_value),
            ("Call-ID", mine.get("Call-ID") or ""),
            ("CSeq", mine.get("CSeq") or ""),
        )
        if 100 < status < 300 and self.method in ("INVITE", "SUBSCRIBE", "REFER"):
            items += [("Record-Route", value) for value in mine.values("Record-Route")]
        if status == 100:
            # RFC 3261 §8.2.6.1: a 100 (Trying) copies the request's Timestamp.
            items += [("Timestamp", value) for value in mine.values("Timestamp")]
        if content_type is not None:
            items.append(("Content-Type", content_type))
        headers = Headers.of_canonical(items)
        # Via, From and CSeq are the request's text, so their parses are the request's (when
        # it has them: a request built here may never have been parsed).
        parsed: dict[str, object] = {n: known[n] for n in ("Via", "From", "CSeq") if n in known}
        if to_addr is not None:
            parsed["To"] = to_addr
        headers.remember(parsed)
        return Response(headers, body, status, reason or reason_phrase(status))


@functools.lru_cache(maxsize=1024)
def _prints_as_received(value: str) -> bool:
    """Whether a To value is what its parse serialises to: then adding a tag is appending
    ``;tag=…`` to the text, and no NameAddr needs to be copied and printed. Cached: every
    call to one service carries the same To."""
    return str(parse_name_addr(value)) == value


@dataclass(slots=True)
class Response(Message):
    status: int = 0
    reason: str = ""

    @property
    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def serialize(self) -> bytes:
        return self._serialize(self.start_line)


_REQUEST_LINE_RE = re.compile(r"([^ \t]+) ([^ \t]+) ([^ \t]+)")
_STATUS_LINE_RE = re.compile(r"SIP/2\.0 ([0-9]{3})(?: (.*))?", re.DOTALL)
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() and \d accept other scripts' digits
_MAX_LENGTH_DIGITS = 12  # no Content-Length needs more; int() of thousands of digits raises


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """Cut at the first empty line, whichever line ending it uses (CRLF CRLF, or bare LF
    tolerated, RFC 3261 §7.5): the first LF followed by an optional CR and an LF ends the
    head, and a CR before that LF belongs to the empty line too. Two byte searches, not a
    regular expression: this runs on every message."""
    end = data.find(b"\n\r\n")
    bare = data.find(b"\n\n", 0, end + 2 if end >= 0 else len(data))
    if bare >= 0:
        end, after = bare, bare + 2
    elif end >= 0:
        after = end + 3
    else:
        raise SipParseError(400, "no end of headers")
    if end and data[end - 1] == 13:  # the CR of the last line's CRLF
        end -= 1
    return data[:end], data[after:]


# Header field name as it appears before the colon -> (canonical name, lookup key), for the
# names that are tokens (RFC 3261 §25.1). Peers send the same few dozen names over and over,
# each checked and canonicalised once; bounded (cleared when full) against a flood.
_FIELD_NAMES: dict[str, tuple[str, str]] = {}
_FIELD_NAME_CACHE = 1024


def _field_name(name: str) -> tuple[str, str] | None:
    """The canonical name and lookup key of a header line's field name (whitespace before
    the colon is LWS), None when it is not a token."""
    stripped = name.rstrip(" \t")
    if _HEADER_NAME_RE.fullmatch(stripped) is None:
        return None
    canonical = canonical_name(stripped)
    found = (canonical, canonical.lower())
    if len(_FIELD_NAMES) >= _FIELD_NAME_CACHE:
        _FIELD_NAMES.clear()
    _FIELD_NAMES[name] = found
    return found


def _header_lines(head: str) -> list[str]:
    """Split and unfold (RFC 3261 §7.3.1: a line starting with whitespace continues)."""
    lines = head.split("\r\n")
    if head.count("\n") == len(lines) - 1 and "\n " not in head and "\n\t" not in head:
        return lines  # CRLF only, nothing folded (the usual case)
    text = head.replace("\r\n", "\n")
    if "\n " not in text and "\n\t" not in text:
        return text.split("\n")
    lines = []
    for line in text.split("\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1] + " " + line.strip(" \t")
        else:
            lines.append(line)
    return lines


def parse_message(
    data: bytes,
    *,
    stream: bool = False,
    max_header_bytes: int = MAX_HEADER_BYTES,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Request | Response:
    """Parse one whole message.

    On a datagram (``stream=False``) octets past Content-Length are ignored (RFC 3261 §18.3) and
    a missing Content-Length means the rest of the datagram; on a stream the framer has already
    cut the message to its Content-Length.

    One pass over the header lines builds the lines, the lookup index of the Headers and the
    first fault about a single line (a repeated single-valued header, a list header with an
    unbalanced quote), which ``_validate`` reports in its turn.
    """
    data = data.lstrip(b"\r\n")
    head_bytes, rest = _split_head(data)
    head = head_bytes.decode("utf-8", "surrogateescape")
    lines = _header_lines(head)
    start = lines[0]
    is_request = not start.startswith("SIP/")
    raw: list[tuple[str, str]] = []
    index: dict[str, tuple[str, ...]] = {}
    fault: SipError | None = None
    names = _FIELD_NAMES
    header_lines = iter(lines)
    next(header_lines)  # the start line
    try:
        for line in header_lines:
            name, colon, value = line.partition(":")
            found = names.get(name) if colon else None
            if found is None:
                found = _field_name(name) if colon else None
                if found is None:
                    raise SipError(400, f"bad header line {line[:40]!r}")
            canonical, key = found
            value = value.strip(" \t")
            raw.append((canonical, value))
            if key in index:
                index[key] += (value,)
                if fault is None and canonical in SINGLE_HEADERS:
                    fault = SipError(400, f"several {canonical} headers")
            else:
                index[key] = (value,)
            if '"' in value and fault is None and canonical in LIST_HEADERS:
                try:
                    split_header_list(value)  # balanced quotes, so later reads cannot fail
                except SipError as exc:
                    fault = exc
        if len(head_bytes) > max_header_bytes:
            # Checked after reading the lines so that a server can still answer 513 (a datagram
            # is bounded by the transport, so the work is too).
            raise SipError(513, "header block too large")
        headers = Headers.of_canonical(raw, index)
        body = _take_body(index, rest, stream=stream, max_body_bytes=max_body_bytes)
        if is_request:
            message: Request | Response = _parse_request_line(start, headers, body)
        else:
            message = _parse_status_line(start, headers, body)
        if fault is not None:
            raise fault
        _validate(message, index)
        return message
    except SipParseError as exc:
        exc.is_request = is_request
        exc.raw_headers = raw
        raise
    except SipError as exc:
        raise SipParseError(exc.status, exc.reason, is_request=is_request, raw_headers=raw) from exc
    except (ValueError, IndexError) as exc:  # belt and braces: nothing else escapes the parser
        raise SipParseError(
            400, f"malformed: {exc}", is_request=is_request, raw_headers=raw
        ) from exc


def _take_body(
    index: dict[str, tuple[str, ...]], rest: bytes, *, stream: bool, max_body_bytes: int
) -> bytes:
    lengths = index.get("content-length", ())
    if len(lengths) > 1:
        raise SipError(400, "several Content-Length headers")
    if not lengths:
        if stream:
            raise SipError(400, "no Content-Length on a stream transport")
        length = len(rest)
    else:
        text = lengths[0]
        if _DIGITS.fullmatch(text) is None:
            raise SipError(400, f"bad Content-Length {text[:20]!r}")
        if len(text.lstrip("0")) > _MAX_LENGTH_DIGITS:
            raise SipError(413, "body too large")
        length = int(text)
    if length > max_body_bytes:
        raise SipError(413, "body too large")
    if length > len(rest):
        raise SipError(400, "Content-Length larger than message")
    return rest if length == len(rest) else rest[:length]


def _parse_request_line(start: str, headers: Headers, body: bytes) -> Request:
    method, uri = _request_line(start)
    return Request(headers, body, method, uri)


@functools.lru_cache(maxsize=1024)
def _request_line(start: str) -> tuple[str, Uri]:
    """Method and Request-URI of a request line. Cached: a peer's requests to one service,
    and its in-dialog requests to our Contact, share one line."""
    match = _REQUEST_LINE_RE.fullmatch(start)
    if match is None:
        raise SipError(400, "bad request line")
    method, uri_text, version = match.groups()
    if not is_token(method):
        raise SipError(400, "bad method")
    if version != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise SipError(505, f"version {version} not supported")
        raise SipError(400, "bad request line")
    uri = parse_uri(uri_text)
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.5 / RFC 4475 §3.1.2.11: headers are not allowed in a Request-URI.
        raise SipError(400, "headers in Request-URI")
    return method, uri


def _parse_status_line(start: str, headers: Headers, body: bytes) -> Response:
    match = _STATUS_LINE_RE.fullmatch(start)
    if match is None:
        raise SipError(400, "bad status line")
    status = int(match.group(1))
    if not 100 <= status <= 699:
        raise SipError(400, "status out of range")
    return Response(headers, body, status, match.group(2) or "")


def _list_values(values: tuple[str, ...]) -> list[str]:
    """A list header's lines split at their commas (as Headers.get_all)."""
    if len(values) == 1:
        return split_header_list(values[0])
    return [part for value in values for part in split_header_list(value)]


# Headers with a check of their own besides the mandatory ones, by lookup key.
_CHECKED = frozenset(
    {
        "contact",
        "expires",
        "min-expires",
        "retry-after",
        "warning",
        "date",
        "content-type",
        "record-route",
        "route",
        "event",
    }
)


def _validate(message: Request | Response, index: dict[str, tuple[str, ...]]) -> None:
    """The message-level checks, over the parser's index (``parse_message`` has done the
    per-line ones). What they parse, the headers remember for the stack's later reads."""
    headers = message.headers
    for key, name in (("call-id", "Call-ID"), ("cseq", "CSeq"), ("from", "From"), ("to", "To")):
        values = index.get(key)
        if not values or not values[0].strip():
            raise SipError(400, f"missing {name}")
    vias = _list_values(index.get("via", ()))
    if not vias:
        raise SipError(400, "missing Via")
    top = None
    for value in vias:
        via = parse_via(value)
        if top is None:
            top = via
        rport = via.params.get("rport")
        if rport:
            _bounded_int(rport, 65535, "rport")
    parsed: dict[str, object] = {
        "Via": top,
        "From": parse_name_addr(index["from"][0]),
        "To": parse_name_addr(index["to"][0]),
    }
    parsed["CSeq"] = cseq = parse_cseq(index["cseq"][0])
    if isinstance(message, Request):
        if cseq.method != message.method:
            raise SipError(400, "CSeq method does not match the request")
        max_forwards = index.get("max-forwards")
        if max_forwards is not None:
            _bounded_int(max_forwards[0], 255, "Max-Forwards")
    if _CHECKED.isdisjoint(index):
        parsed["Contact"] = ()
        parsed["Content-Type"] = None
    else:
        _validate_optional(parsed, index)
    headers.remember(parsed)


def _validate_optional(parsed: dict[str, object], index: dict[str, tuple[str, ...]]) -> None:
    contacts: list[NameAddr] = []
    for value in _list_values(index.get("contact", ())):
        if value.strip(" \t") == "*":
            continue
        contact = parse_name_addr(value)
        contacts.append(contact)
        if "expires" in contact.params:
            _bounded_int(contact.params["expires"] or "", MAX_DELTA_SECONDS, "Contact expires")
    parsed["Contact"] = tuple(contacts)
    for key, name in (("expires", "Expires"), ("min-expires", "Min-Expires")):
        seconds = index.get(key)
        if seconds is not None:
            _bounded_int(seconds[0], MAX_DELTA_SECONDS, name)
    retry = index.get("retry-after")
    if retry is not None:
        _bounded_int(retry[0].split(";")[0].split("(")[0], MAX_DELTA_SECONDS, "Retry-After")
    for value in _list_values(index.get("warning", ())):
        code = value.split(" ", 1)[0]
        if len(code) != 3 or not code.isdigit():
            raise SipError(400, "bad Warning code")
    date = index.get("date")
    if date is not None and not date[0].rstrip(" \t").endswith("GMT"):
        raise SipError(400, "Date must be in GMT")  # RFC 3261 §20.17, RFC 4475 §3.1.2.12
    content_type = index.get("content-type")
    parsed["Content-Type"] = parse_content_type(content_type[0]) if content_type else None
    for value in index.get("record-route", ()) + index.get("route", ()):
        for part in split_header_list(value):
            parse_name_addr(part)
    event = index.get("event")
    if event is not None:
        name, _, params = event[0].partition(";")
        if not is_token(name.strip(" \t")):
            raise SipError(400, "bad Event")
        parse_params(params)


def _bounded_int(text: str, limit: int, what: str) -> int:
    text = text.strip(" \t")
    if _DIGITS.fullmatch(text) is None or len(text) > 12 or int(text) > limit:
        raise SipError(400, f"bad {what} {text[:20]!r}")
    return int(text)
