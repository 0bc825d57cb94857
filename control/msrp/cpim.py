"""Message/CPIM wrapper (RFC 3862) as chat over MSRP uses it.

A CPIM body is: message headers, a blank line, the MIME headers of the carried content (at least
Content-Type), a blank line, then the content::

    From: "Alice" <sip:alice@example.com>
    To: <sip:room@conference.example.com>
    DateTime: 2024-05-01T10:00:00+00:00
    NS: imdn <urn:ietf:params:imdn>
    imdn.Message-ID: 34jk324j

    Content-Type: text/plain

    hello

Headers are kept in wire order so a parsed message in the RFC's form serializes back byte for
byte; typed views (``sender``, ``recipients``, ``datetime`` …) read them. Namespaced headers
(RFC 3862 §3.4) are looked up by namespace URN, never by the prefix a peer happened to choose.

What real clients send (issue 8, item 5): the sipsimple library (Blink, SylkServer) joins the
CPIM headers with CRLF but writes the wrapped MIME part with Python's ``email`` package, whose
line ends are bare LF::

    From: Alice <sip:alice@example.com>\r\n ... DateTime: ...\r\n\r\n
    MIME-Version: 1.0\nContent-Type: text/plain; charset="utf8"\n\nhello

So :func:`parse_cpim` ends a header line at LF with or without the CR before it, in both
blocks (sipsimple's own encoder uses CRLF in the CPIM block, but accepting LF there too costs
nothing and one line scanner serves both), and unfolds folded MIME header lines (RFC 5322
§2.2.3, which ``email`` may write for a long Content-Type). The body is kept byte for byte.
What we send is always the strict form: :meth:`CpimMessage.serialize` writes CRLF everywhere
(RFC 3862 §2, §3.1), so a sipsimple message read and sent on comes out in the RFC's form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from .errors import CpimError

_DateTime = datetime  # the name ``datetime`` is also a CpimMessage property

__all__ = [
    "CPIM_CONTENT_TYPE",
    "CpimAddress",
    "CpimHeader",
    "CpimMessage",
    "check_content_type",
    "format_datetime",
    "parse_address",
    "parse_cpim",
    "parse_datetime",
]

CPIM_CONTENT_TYPE = "message/cpim"
# Headers of a chat message are a few hundred bytes; a larger block is abuse.
MAX_HEADER_BLOCK = 16 * 1024

_NAME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-^_`|~]+(?:\.[A-Za-z0-9!#$%&'*+\-^_`|~]+)?")
_NS_RE = re.compile(r"(?:([A-Za-z0-9!#$%&\'*+\-^_`|~]+)\s+)?<([^<>\s]*)>")
_ESCAPES = {"\\": "\\", '"': '"', "r": "\r", "n": "\n", "t": "\t"}


def _unescape(text: str) -> str:
    """RFC 3862 §3.2: backslash escapes in header values (``\\\\``, ``\\"``, ``\\r``, ``\\n``,
    ``\\t``, ``\\uXXXX``)."""
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt in _ESCAPES and nxt:
            out.append(_ESCAPES[nxt])
            i += 2
        elif nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
        else:
            raise CpimError(400, "bad escape in CPIM header value")
    return "".join(out)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


@dataclass(frozen=True, slots=True)
class CpimAddress:
    """``[Formal-name] <URI>`` (RFC 3862 §3.3.1): From, To and cc values."""

    uri: str
    display_name: str | None = None

    def __str__(self) -> str:
        if not self.display_name:
            return f"<{self.uri}>"
        name = _escape(self.display_name).replace('"', '\\"')
        return f'"{name}" <{self.uri}>'


def parse_address(value: str) -> CpimAddress:
    text = value.strip()
    if not text.endswith(">") or "<" not in text:
        raise CpimError(400, f"CPIM address needs <uri>: {value[:60]!r}")
    cut = text.rindex("<")
    uri = text[cut + 1 : -1].strip()
    if not uri or any(c in uri for c in ' <>"'):
        raise CpimError(400, "bad URI in CPIM address")
    name = text[:cut].strip()
    if name.startswith('"'):
        if len(name) < 2 or not name.endswith('"'):
            raise CpimError(400, "unterminated display name")
        name = _unescape(name[1:-1])
    else:
        name = _unescape(name)
    return CpimAddress(uri=uri, display_name=name or None)


def parse_datetime(value: str) -> datetime:
    """RFC 3339 date-time (RFC 3862 §3.3.5); an offset is required."""
    text = value.strip().replace("t", "T").replace("z", "Z")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise CpimError(400, f"bad DateTime {value[:40]!r}") from None
    if "T" not in text or parsed.tzinfo is None:
        raise CpimError(400, "DateTime needs a date, a time and an offset (RFC 3339)")
    return parsed


def format_datetime(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("CPIM DateTime needs a timezone-aware datetime")
    return value.isoformat()


@dataclass(frozen=True, slots=True)
class CpimHeader:
    """One message header: ``name`` as written (``prefix.Name`` when namespaced), the raw
    ``params`` after the colon (``;lang=fr``, RFC 3862 §3.1) and the raw ``value``."""

    name: str
    value: str
    params: str = ""

    def serialize(self) -> str:
        if self.params:
            return f"{self.name}:{self.params} {self.value}"
        return f"{self.name}: {self.value}"


@dataclass(frozen=True, slots=True)
class CpimMessage:
    headers: tuple[CpimHeader, ...]
    content_headers: tuple[tuple[str, str], ...]
    body: bytes

    # ---- typed views ----------------------------------------------------------------------

    def values(self, name: str, namespace: str | None = None) -> list[str]:
        """Raw values of header ``name``; with ``namespace`` (a URN) the header must carry a
        prefix that an NS header maps to that URN (RFC 3862 §3.4)."""
        wanted = name.lower()
        if namespace is None:
            return [h.value for h in self.headers if h.name.lower() == wanted]
        prefixes = {p.lower() for p, urn in self.namespaces.items() if urn == namespace}
        out = []
        for header in self.headers:
            prefix, dot, local = header.name.rpartition(".")
            if dot and prefix.lower() in prefixes and local.lower() == wanted:
                out.append(header.value)
        return out

    def value(self, name: str, namespace: str | None = None) -> str | None:
        found = self.values(name, namespace)
        return _unescape(found[0]) if found else None

    @property
    def namespaces(self) -> dict[str, str]:
        """Prefix → URN from the NS headers (the default namespace has prefix ``""``)."""
        out: dict[str, str] = {}
        for header in self.headers:
            if header.name.lower() == "ns":
                match = _NS_RE.fullmatch(header.value.strip())
                if match is None:
                    raise CpimError(400, f"bad NS header {header.value[:60]!r}")
                out[match[1] or ""] = match[2]
        return out

    @property
    def sender(self) -> CpimAddress | None:
        found = self.values("From")
        return parse_address(found[0]) if found else None

    @property
    def recipients(self) -> tuple[CpimAddress, ...]:
        return tuple(parse_address(v) for v in self.values("To"))

    @property
    def cc(self) -> tuple[CpimAddress, ...]:
        return tuple(parse_address(v) for v in self.values("cc"))

    @property
    def datetime(self) -> datetime | None:
        found = self.values("DateTime")
        return parse_datetime(found[0]) if found else None

    @property
    def subjects(self) -> list[tuple[str, str | None]]:
        """(text, language) per Subject header (RFC 3862 §3.3.6)."""
        out = []
        for header in self.headers:
            if header.name.lower() == "subject":
                lang = None
                for param in header.params.split(";"):
                    key, _, val = param.partition("=")
                    if key.strip().lower() == "lang":
                        lang = val.strip()
                out.append((_unescape(header.value), lang))
        return out

    @property
    def content_type(self) -> str | None:
        for name, value in self.content_headers:
            if name.lower() == "content-type":
                return value
        return None

    # ---- wire -----------------------------------------------------------------------------

    def serialize(self) -> bytes:
        head = "".join(h.serialize() + "\r\n" for h in self.headers)
        content = "".join(f"{n}: {v}\r\n" for n, v in self.content_headers)
        return (head + "\r\n" + content + "\r\n").encode("utf-8") + self.body

    @classmethod
    def build(
        cls,
        *,
        content_type: str,
        body: bytes,
        sender: CpimAddress | None = None,
        recipients: Sequence[CpimAddress] = (),
        cc: Sequence[CpimAddress] = (),
        datetime: _DateTime | None = None,
        subject: str | None = None,
        namespaces: Mapping[str, str] | None = None,
        extra: Iterable[tuple[str, str]] = (),
        content_headers: Iterable[tuple[str, str]] = (),
    ) -> CpimMessage:
        """A message in the usual header order: From, To, cc, DateTime, Subject, NS, then
        ``extra`` (``("imdn.Message-ID", "…")``)."""
        headers: list[CpimHeader] = []
        if sender is not None:
            headers.append(CpimHeader("From", str(sender)))
        headers += [CpimHeader("To", str(a)) for a in recipients]
        headers += [CpimHeader("cc", str(a)) for a in cc]
        if datetime is not None:
            headers.append(CpimHeader("DateTime", format_datetime(datetime)))
        if subject is not None:
            headers.append(CpimHeader("Subject", _escape(subject)))
        for prefix, urn in (namespaces or {}).items():
            headers.append(CpimHeader("NS", f"{prefix} <{urn}>" if prefix else f"<{urn}>"))
        for name, value in extra:
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"bad CPIM header name {name!r}")
            headers.append(CpimHeader(name, _escape(value)))
        mime = [("Content-Type", content_type), *content_headers]
        for _name, value in mime:
            if "\r" in value or "\n" in value:
                raise ValueError("line break in a MIME header value")
        return cls(tuple(headers), tuple(mime), body)


def _header_lines(data: bytes, start: int, max_size: int) -> tuple[list[str], int]:
    """The lines of one header block from ``start`` up to its empty line, and where the next
    part begins.

    A line ends at LF, with or without a CR before it (see the module doc); a CR anywhere else
    is refused, since no header may hold one. The block, its terminating empty line excluded,
    is at most ``max_size`` bytes.
    """
    lines: list[str] = []
    pos = start
    limit = start + max_size + 2  # room for the empty line's CRLF after a full block
    while True:
        newline = data.find(b"\n", pos, limit)
        if newline < 0:
            if len(data) >= limit:
                raise CpimError(400, "CPIM header block too large")
            raise CpimError(400, "CPIM header block not terminated by a blank line")
        line_end = newline - 1 if newline > pos and data[newline - 1] == 0x0D else newline
        raw = data[pos:line_end]
        pos = newline + 1
        if not raw:
            return lines, pos
        if line_end - start > max_size:
            raise CpimError(400, "CPIM header block too large")
        if b"\r" in raw:
            raise CpimError(400, "bare CR in a CPIM header line")
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise CpimError(400, "CPIM headers are not UTF-8") from None


def parse_cpim(data: bytes, *, max_header_size: int = MAX_HEADER_BLOCK) -> CpimMessage:
    """Parse a Message/CPIM body; :class:`CpimError` (400) when malformed.

    Line ends may be CRLF or bare LF (sipsimple's MIME part, see the module doc). The
    encapsulated MIME headers must include Content-Type (RFC 3862 §2).
    """
    lines, pos = _header_lines(data, 0, max_header_size)
    if not lines:
        raise CpimError(400, "CPIM message has no message headers")
    headers: list[CpimHeader] = []
    for line in lines:
        name, colon, rest = line.partition(":")
        if not colon or not _NAME_RE.fullmatch(name):
            raise CpimError(400, f"bad CPIM header line {line[:60]!r}")
        params = ""
        if rest.startswith(";"):
            params, _, rest = rest.partition(" ")
        elif rest.startswith(" "):
            rest = rest[1:]
        headers.append(CpimHeader(name, rest, params))
    mime_lines, body_start = _header_lines(data, pos, max_header_size)
    content_headers: list[tuple[str, str]] = []
    for line in mime_lines:
        if line[0] in " \t" and content_headers:
            # RFC 5322 §2.2.3 folding: the line continues the previous header's value.
            name, value = content_headers[-1]
            content_headers[-1] = (name, (value + line).strip())
            continue
        name, colon, value = line.partition(":")
        if not colon or not _NAME_RE.fullmatch(name):
            raise CpimError(400, f"bad MIME header line {line[:60]!r}")
        content_headers.append((name, value.strip()))
    message = CpimMessage(tuple(headers), tuple(content_headers), data[body_start:])
    if message.content_type is None:
        raise CpimError(400, "encapsulated content has no Content-Type")
    return message


def check_content_type(message: CpimMessage, accept_types: Sequence[str]) -> None:
    """415 when the carried content is not one of ``accept_types`` (a=accept-wrapped-types,
    RFC 4975 §8.6; ``*`` and ``type/*`` patterns allowed)."""
    media = (message.content_type or "").split(";", 1)[0].strip().lower()
    major = media.split("/", 1)[0]
    patterns = [t.strip().lower() for t in accept_types]
    if not any(p == "*" or p == media or p == f"{major}/*" for p in patterns):
        raise CpimError(415, f"{media} not accepted inside CPIM")
