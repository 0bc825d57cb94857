"""The MSRP chunk: model, header values and serialization (RFC 4975 §5.1, §7.1, §8, §9).

An MSRP request or response is one *chunk* on the wire::

    MSRP <transaction-id> <METHOD>            |  MSRP <transaction-id> <code> [comment]
    To-Path: ...
    From-Path: ...
    Message-ID: ... (other headers)
    Content-Type: text/plain                  (only when there is a body)

    <body>
    -------<transaction-id><flag>

The flag is ``$`` (last chunk), ``+`` (more chunks follow) or ``#`` (message aborted). The
streaming reader is :mod:`control.msrp.parser`; this module holds what both sides share.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import MsrpError
from .uri import MsrpUri, format_path

__all__ = [
    "ByteRange",
    "Chunk",
    "ChunkHead",
    "FailureReport",
    "Flag",
    "ReportStatus",
    "end_line",
    "format_nickname",
    "is_ident",
    "parse_byte_range",
    "parse_failure_report",
    "parse_nickname",
    "parse_report_status",
    "parse_success_report",
    "serialize_request",
    "serialize_response",
]

CRLF = b"\r\n"
END_PREFIX = b"-------"

# RFC 4975 §9: ident = ALPHANUM 3*31ident-char; ident-char = ALPHANUM / "." / "-" / "+" / "%" / "="
_IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-+%=]{3,31}")
_METHOD_RE = re.compile(r"[A-Z]+")
_BYTE_RANGE_RE = re.compile(r"([0-9]{1,19})-([0-9]{1,19}|\*)/([0-9]{1,19}|\*)")
_STATUS_RE = re.compile(r"([0-9]{3}) ([0-9]{3})(?: (.*))?")


class Flag(enum.Enum):
    """The continuation flag of the end-line (RFC 4975 §7.1)."""

    END = "$"
    CONTINUE = "+"
    ABORT = "#"


class FailureReport(enum.Enum):
    """Failure-Report values (RFC 4975 §7.1.1): which responses the sender wants."""

    YES = "yes"
    NO = "no"
    PARTIAL = "partial"


def is_ident(text: str) -> bool:
    """True for a valid transaction id or Message-ID (RFC 4975 §9 ``ident``)."""
    return _IDENT_RE.fullmatch(text) is not None


def end_line(transaction_id: str, flag: Flag) -> bytes:
    return END_PREFIX + transaction_id.encode("ascii") + flag.value.encode("ascii") + CRLF


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Byte-Range header (RFC 4975 §7.1.1): 1-based inclusive ``start``-``end``/``total``.

    ``end`` and ``total`` are ``None`` for ``*`` (unknown when the chunk was started).
    """

    start: int
    end: int | None
    total: int | None

    def __str__(self) -> str:
        end = "*" if self.end is None else str(self.end)
        total = "*" if self.total is None else str(self.total)
        return f"{self.start}-{end}/{total}"


WHOLE_MESSAGE = ByteRange(1, None, None)


def parse_byte_range(value: str) -> ByteRange:
    """Parse ``start-end/total``; RFC 4975 §7.1.1 says an absent header means ``1-*/*``."""
    match = _BYTE_RANGE_RE.fullmatch(value.strip())
    if match is None:
        raise MsrpError(400, f"bad Byte-Range {value[:40]!r}")
    start = int(match[1])
    end = None if match[2] == "*" else int(match[2])
    total = None if match[3] == "*" else int(match[3])
    if start < 1:
        raise MsrpError(400, "Byte-Range start must be at least 1")
    if end is not None and end < start - 1:
        raise MsrpError(400, "Byte-Range end before start")
    if total is not None and end is not None and end > total:
        raise MsrpError(400, "Byte-Range end beyond total")
    if total is not None and start > total + 1:
        raise MsrpError(400, "Byte-Range start beyond total")
    return ByteRange(start, end, total)


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """Status header of a REPORT (RFC 4975 §7.1.2): ``000 200 OK``."""

    code: int
    reason: str | None = None
    namespace: int = 0

    def __str__(self) -> str:
        text = f"{self.namespace:03d} {self.code:03d}"
        return text if self.reason is None else f"{text} {self.reason}"


def parse_report_status(value: str) -> ReportStatus:
    match = _STATUS_RE.fullmatch(value.strip())
    if match is None:
        raise MsrpError(400, f"bad Status header {value[:40]!r}")
    return ReportStatus(code=int(match[2]), reason=match[3], namespace=int(match[1]))


def parse_success_report(value: str) -> bool:
    """Success-Report: ``yes`` / ``no`` (RFC 4975 §7.1.1, default ``no``)."""
    text = value.strip().lower()
    if text not in ("yes", "no"):
        raise MsrpError(400, f"bad Success-Report {value[:20]!r}")
    return text == "yes"


def parse_failure_report(value: str) -> FailureReport:
    """Failure-Report: ``yes`` / ``no`` / ``partial`` (RFC 4975 §7.1.1, default ``yes``)."""
    try:
        return FailureReport(value.strip().lower())
    except ValueError:
        raise MsrpError(400, f"bad Failure-Report {value[:20]!r}") from None


def parse_nickname(value: str) -> str:
    """Use-Nickname value (RFC 7701 §10): a quoted-string, backslash escapes allowed.

    AG Projects' msrplib (Blink, SylkServer) writes the nickname bare, its UTF-8 text as is
    (``Use-Nickname: Alice``, or ``Use-Nickname: Alice Smith``), so an unquoted value is taken
    too: the text between the outer spaces, literally (a backslash is just a backslash). Still
    424 (RFC 7701 §6.1, malformed nickname): an empty value, a control character, a quote
    that does not close (``"Alice``, ``Al"ice``) or text after the closing quote. What we send
    is always the quoted form (:func:`format_nickname`).
    """
    text = value.strip(" \t")
    if text.startswith('"'):
        nickname = _unquote_nickname(text)
    elif '"' in text:
        raise MsrpError(424, "unbalanced quote in Use-Nickname")
    else:
        nickname = text
    if not nickname:
        raise MsrpError(424, "empty Use-Nickname")
    if any(ord(c) < 0x20 or c == "\x7f" for c in nickname):
        raise MsrpError(424, "control character in Use-Nickname")
    return nickname


def _unquote_nickname(text: str) -> str:
    if len(text) < 2 or text[-1] != '"':
        raise MsrpError(424, "Use-Nickname is not a quoted string")
    out: list[str] = []
    escaped = False
    for char in text[1:-1]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            raise MsrpError(424, "unescaped quote in Use-Nickname")
        else:
            out.append(char)
    if escaped:
        raise MsrpError(424, "dangling escape in Use-Nickname")
    return "".join(out)


def format_nickname(nickname: str) -> str:
    if any(ord(c) < 0x20 or c == "\x7f" for c in nickname):
        raise MsrpError(424, "control character in nickname")
    return '"' + nickname.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class ChunkHead:
    """Start line and headers of one chunk, with the RFC 4975 headers already typed.

    ``headers`` keeps every header line in wire order (To-Path and From-Path included) so a
    parsed chunk serializes back byte for byte. For responses ``method`` is ``None`` and
    ``status`` is set; for requests the reverse.
    """

    transaction_id: str
    method: str | None
    status: int | None
    comment: str | None
    headers: tuple[tuple[str, str], ...]
    to_path: tuple[MsrpUri, ...]
    from_path: tuple[MsrpUri, ...]
    message_id: str | None = None
    byte_range: ByteRange | None = None
    success_report: bool | None = None
    failure_report: FailureReport | None = None
    report_status: ReportStatus | None = None
    content_type: str | None = None
    nickname: str | None = None
    has_body: bool = False

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def start_line(self) -> str:
        if self.method is not None:
            return f"MSRP {self.transaction_id} {self.method}"
        line = f"MSRP {self.transaction_id} {self.status:03d}"
        return line if self.comment is None else f"{line} {self.comment}"

    def header(self, name: str) -> str | None:
        """First value of a header, name compared case-insensitively."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A whole chunk: head, body (``None`` when the chunk has no body part) and flag."""

    head: ChunkHead
    body: bytes | None = None
    flag: Flag = Flag.END

    def serialize(self) -> bytes:
        return _serialize(
            self.head.start_line, self.head.headers, self.body, self.head.transaction_id, self.flag
        )


def _serialize(
    start_line: str,
    headers: Sequence[tuple[str, str]],
    body: bytes | None,
    transaction_id: str,
    flag: Flag,
) -> bytes:
    lines = [start_line]
    lines += [f"{name}: {value}" for name, value in headers]
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    if body is None:
        return head + end_line(transaction_id, flag)
    # RFC 4975 §7.1: the body must not contain the end-line; the sender picks a transaction id
    # that does not occur in it, so a body holding that string is a bug on our side.
    if END_PREFIX + transaction_id.encode("ascii") in body:
        raise ValueError("body contains the end-line of its transaction id")
    return b"".join([head, CRLF, body, CRLF, end_line(transaction_id, flag)])


def serialize_request(
    transaction_id: str,
    method: str,
    to_path: Sequence[MsrpUri],
    from_path: Sequence[MsrpUri],
    headers: Sequence[tuple[str, str]] = (),
    *,
    content_type: str | None = None,
    body: bytes | None = None,
    flag: Flag = Flag.END,
) -> bytes:
    """Bytes of one request chunk (RFC 4975 §7.1).

    To-Path and From-Path come first (§9 grammar), then ``headers`` in order, then Content-Type
    last when there is a body (§9: content-stuff ends with Content-Type and a blank line).
    """
    if not is_ident(transaction_id) or not _METHOD_RE.fullmatch(method):
        raise ValueError("bad transaction id or method")
    lines = [("To-Path", format_path(to_path)), ("From-Path", format_path(from_path))]
    lines += list(headers)
    if body is not None:
        if content_type is None:
            raise ValueError("a request with a body needs a Content-Type (RFC 4975 §9)")
        lines.append(("Content-Type", content_type))
    return _serialize(f"MSRP {transaction_id} {method}", lines, body, transaction_id, flag)


def serialize_response(
    transaction_id: str,
    status: int,
    to_path: Sequence[MsrpUri] | str,
    from_path: Sequence[MsrpUri] | str,
    comment: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """Bytes of one response (RFC 4975 §7.2): no body, always ``$``.

    Paths may be given as raw strings so a request whose paths did not parse can be answered.
    """
    to_text = to_path if isinstance(to_path, str) else format_path(to_path)
    from_text = from_path if isinstance(from_path, str) else format_path(from_path)
    line = f"MSRP {transaction_id} {status:03d}"
    if comment:
        line = f"{line} {comment}"
    lines = [("To-Path", to_text), ("From-Path", from_text), *headers]
    return _serialize(line, lines, None, transaction_id, Flag.END)
