"""SDP (RFC 8866): model, parser and serializer.

The parser is liberal in what it accepts (lines out of order, unknown line types, a missing
``t=``, bare LF line ends, non-UTF-8 text) and strict only where a wrong guess would change the
meaning of the session. Serializing writes CRLF lines in RFC 8866 §5 order, so well-formed input
comes back byte for byte. What it normalises: lines out of that order are put in it; unknown
lines (``Line``) go after the ``a=`` lines of their section; runs of blanks between fields and
leading zeros in numbers are collapsed.

Statuses carried by :class:`SdpError` (the SIP response an answerer sends for a bad offer):

- 413 Request Entity Too Large (RFC 3261 §21.4.11): the body exceeds the size limit.
- 400 Bad Request (RFC 3261 §21.4.1): the body is not SDP text at all (it does not start with
  a ``v=`` line, or holds a NUL byte). Nothing in it can be negotiated.
- 488 Not Acceptable Here (RFC 3261 §21.4.26): it is SDP, but a mandatory line is missing or a
  field is malformed or unsupported. RFC 3261 §13.3.1.3 and RFC 3264 §6 make 488 the answer to
  an offer we cannot accept, and a peer may retry with another offer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from control.sip.errors import SipError

__all__ = [
    "MAX_SDP_SIZE",
    "Attribute",
    "Bandwidth",
    "Connection",
    "Crypto",
    "Direction",
    "Line",
    "MediaDescription",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "Timing",
    "parse",
    "serialize",
]

# An offer with audio, video, MSRP and a dozen codecs is ~2 KiB; 64 KiB leaves room for ICE
# candidates while bounding the work a hostile peer can cause.
MAX_SDP_SIZE = 64 * 1024

# Numeric fields: 20 digits hold any 64-bit value (NTP times, session versions) and keep
# int() far from CPython's digit limit.
_MAX_DIGITS = 20

_FIELD_SPLIT = re.compile(r"[ \t]+")


class SdpError(SipError):
    """A peer's SDP we cannot use; ``status`` is the SIP response to send (see module doc)."""


class Direction(StrEnum):
    """Media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1), from the sender's view."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def sends(self) -> bool:
        return self in _SENDING  # sets made once: every answer asks these several times

    @property
    def receives(self) -> bool:
        return self in _RECEIVING

    @classmethod
    def from_flags(cls, *, send: bool, recv: bool) -> Direction:
        if send:
            return cls.SENDRECV if recv else cls.SENDONLY
        return cls.RECVONLY if recv else cls.INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end (RFC 3264 §6.1: sendonly ↔ recvonly)."""
        return Direction.from_flags(send=self.receives, recv=self.sends)


_DIRECTIONS = frozenset(d.value for d in Direction)
_SENDING = frozenset({Direction.SENDRECV, Direction.SENDONLY})
_RECEIVING = frozenset({Direction.SENDRECV, Direction.RECVONLY})


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=`` (RFC 8866 §5.2). ``sess_id`` stays text: only equality matters for it."""

    username: str
    sess_id: str
    sess_version: int
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=`` (RFC 8866 §5.7); a multicast TTL/count stays inside ``address``."""

    nettype: str
    addrtype: str
    address: str

    @classmethod
    def for_address(cls, address: str) -> Connection:
        return cls("IN", "IP6" if ":" in address else "IP4", address)

    @property
    def is_hold(self) -> bool:
        """RFC 3264 §8.4: RFC 2543 put a call on hold with ``c=IN IP4 0.0.0.0``."""
        return self.addrtype == "IP4" and self.address == "0.0.0.0"


@dataclass(frozen=True, slots=True)
class Bandwidth:
    """``b=<bwtype>:<bandwidth>`` (RFC 8866 §5.8)."""

    bwtype: str
    bandwidth: int


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=`` with its ``r=`` lines kept verbatim (RFC 8866 §5.9, §5.10)."""

    start: int
    stop: int
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=name`` (a flag, ``value`` None) or ``a=name:value`` (RFC 8866 §5.13)."""

    name: str
    value: str | None = None


@dataclass(frozen=True, slots=True)
class Line:
    """A line kept as is: an unknown type letter, or a repeat of a single-valued one."""

    type: str
    value: str


@dataclass(frozen=True, slots=True)
class RtpMap:
    """One RTP payload format of an m-line: ``a=rtpmap`` + ``a=fmtp`` or a static type."""

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None

    @property
    def format(self) -> str:
        return str(self.payload_type)

    def matches(self, encoding: str, clock_rate: int) -> bool:
        # RFC 4855 §3: media subtype names are case-insensitive.
        return self.encoding.lower() == encoding.lower() and self.clock_rate == clock_rate

    def rtpmap_value(self) -> str:
        tail = f"/{self.channels}" if self.channels is not None else ""
        return f"{self.payload_type} {self.encoding}/{self.clock_rate}{tail}"


@dataclass(frozen=True, slots=True)
class Crypto:
    """``a=crypto:<tag> <suite> <key-params> [<session-params>]`` (RFC 4568 §9.1)."""

    tag: int
    suite: str
    key_params: str
    session_params: tuple[str, ...] = ()


# RFC 3551 §6 tables 4 and 5. G.722 samples at 16 kHz but its RTP clock is 8000 (§4.5.2).
_STATIC_PT: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, None),
    3: ("GSM", 8000, None),
    4: ("G723", 8000, None),
    5: ("DVI4", 8000, None),
    6: ("DVI4", 16000, None),
    7: ("LPC", 8000, None),
    8: ("PCMA", 8000, None),
    9: ("G722", 8000, None),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, None),
    12: ("QCELP", 8000, None),
    13: ("CN", 8000, None),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, None),
    16: ("DVI4", 11025, None),
    17: ("DVI4", 22050, None),
    18: ("G729", 8000, None),
    25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None),
    28: ("nv", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}

# Formats that ride along with the voice codec rather than being one (RFC 4733, RFC 3389).
_AUXILIARY = frozenset({"telephone-event", "cn"})


# The numbers rtpmaps() reads most (payload types, RTP clock rates) in their canonical
# spelling: a table look-up instead of _digits (which still reads "008" or "8000000").
_NUMBERS = {str(n): n for n in (*range(128), 8000, 11025, 16000, 22050, 32000, 44100, 48000, 90000)}


def _digits(text: str) -> int | None:
    if text.isdigit() and text.isascii() and len(text) <= _MAX_DIGITS:  # "" is not a digit
        return int(text)
    return None


def _number(text: str, what: str) -> int:
    value = _digits(text)
    if value is None:
        raise SdpError(488, f"{what} is not a number: {text[:40]!r}")
    return value


def _fields(value: str) -> list[str]:
    stripped = value.strip(" \t")
    if not stripped:
        return []
    if "\t" in stripped or "  " in stripped:
        return _FIELD_SPLIT.split(stripped)
    return stripped.split(" ")  # the common case: single blanks (no regex call)


class _AttributeAccess:
    """Attribute look-ups shared by the session and media levels."""

    __slots__ = ()
    attributes: list[Attribute]

    def has(self, name: str) -> bool:
        return name in [a.name for a in self.attributes]  # any() over a genexpr costs 2x

    def get(self, name: str) -> str | None:
        """Value of the first ``a=name``; None when absent or a flag (use :meth:`has`)."""
        for a in self.attributes:
            if a.name == name:
                return a.value
        return None

    def get_all(self, name: str) -> list[str]:
        """Values of every ``a=name`` in order; a flag attribute gives ``""``."""
        return [a.value or "" for a in self.attributes if a.name == name]

    def set(self, name: str, value: str | None = None) -> None:
        """Replace the first ``a=name`` in place, drop the others, or append one."""
        new = Attribute(name, value)
        for i, a in enumerate(self.attributes):
            if a.name == name:
                self.attributes[i] = new
                self.attributes[i + 1 :] = [b for b in self.attributes[i + 1 :] if b.name != name]
                return
        self.attributes.append(new)

    def remove(self, name: str) -> int:
        before = len(self.attributes)
        self.attributes[:] = [a for a in self.attributes if a.name != name]
        return before - len(self.attributes)

    @property
    def explicit_direction(self) -> Direction | None:
        """The direction attribute at this level; the last one wins if a peer repeats it."""
        found = None
        for a in self.attributes:
            if a.value is None and a.name in _DIRECTIONS:
                found = Direction(a.name)
        return found


@dataclass(slots=True)
class MediaDescription(_AttributeAccess):
    """One ``m=`` section (RFC 8866 §5.14) with its ``i= c= b= k= a=`` lines."""

    media: str
    port: int
    port_count: int | None
    proto: str
    formats: list[str]
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    information: str | None = None
    key: str | None = None
    other_lines: list[Line] = field(default_factory=list)
    # rtpmaps() of the last call and what it was read from (proto, formats, attributes):
    # an answer reads the offer's formats three times (codec choice, RTCP clocks, the
    # answer's rtpmaps); any change to those fields, in place or not, misses the snapshot.
    _rtpmaps: tuple[tuple[object, ...], tuple[RtpMap, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    @property
    def rejected(self) -> bool:
        """RFC 3264 §6: port 0 rejects (or, in an offer, disables) the stream."""
        return self.port == 0

    @property
    def direction(self) -> Direction:
        """This m-line's own direction; SessionDescription.direction_of gives the effective one."""
        return self.explicit_direction or Direction.SENDRECV

    @property
    def rtcp(self) -> int | None:
        """``a=rtcp:<port> [addr]`` (RFC 3605); None when absent (RTP port + 1 applies)."""
        value = self.get("rtcp")
        return _digits(_fields(value)[0]) if value and _fields(value) else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in ms (RFC 4566 §6); a fraction such as "20.0" is cut to whole ms."""
        value = self.get("ptime")
        return _digits(value.strip().split(".")[0]) if value else None

    def fmtp(self, fmt: str) -> str | None:
        for value in self.get_all("fmtp"):
            head, _, params = value.partition(" ")
            if head == fmt:
                return params.strip()
        return None

    def rtpmaps(self) -> list[RtpMap]:
        """The RTP payload formats in m-line (preference) order (RFC 3264 §5.1).

        A format without ``a=rtpmap`` falls back to RFC 3551's static table; an unknown dynamic
        one, or a malformed rtpmap, is left out rather than failing the whole offer.
        """
        source = (self.proto, tuple(self.formats), tuple(self.attributes))
        cached = self._rtpmaps
        if cached is not None and cached[0] == source:
            return list(cached[1])
        result = self._read_rtpmaps()
        self._rtpmaps = (source, tuple(result))
        return result

    def _read_rtpmaps(self) -> list[RtpMap]:
        if not self.is_rtp:
            return []
        mapped: dict[int, tuple[str, int, int | None]] = {}
        fmtps: dict[str, str] = {}  # as fmtp(): the first a=fmtp of each format
        for a in self.attributes:
            if a.name == "fmtp":
                head, _, params = (a.value or "").partition(" ")
                if head not in fmtps:
                    fmtps[head] = params.strip()
            elif a.name == "rtpmap":
                parts = _fields(a.value or "")
                if len(parts) != 2:
                    continue
                pt = _NUMBERS.get(parts[0])
                if pt is None:
                    pt = _digits(parts[0])
                enc = parts[1].split("/")
                if pt is None or pt in mapped or len(enc) not in (2, 3) or not enc[0]:
                    continue
                rate = _NUMBERS.get(enc[1])
                if rate is None:
                    rate = _digits(enc[1])
                channels = _digits(enc[2]) if len(enc) == 3 else None
                if rate is None or (len(enc) == 3 and channels is None):
                    continue
                mapped[pt] = (enc[0], rate, channels)
        result = []
        for fmt in self.formats:
            pt = _NUMBERS.get(fmt)
            if pt is None:
                pt = _digits(fmt)
            if pt is None or pt > 127:
                continue
            entry = mapped.get(pt) or _STATIC_PT.get(pt)
            if entry is not None:
                result.append(RtpMap(pt, entry[0], entry[1], entry[2], fmtps.get(fmt)))
        return result

    def cryptos(self) -> list[Crypto]:
        """SDES offers in order of preference (RFC 4568 §6.1); malformed lines are skipped."""
        result = []
        for value in self.get_all("crypto"):
            parts = _fields(value)
            tag = _digits(parts[0]) if parts else None
            if tag is None or len(parts) < 3:
                continue
            result.append(Crypto(tag, parts[1], parts[2], tuple(parts[3:])))
        return result

    def copy(self) -> MediaDescription:
        # Every value inside is a frozen dataclass or a str: copying the lists is a deep copy.
        # Spelled out rather than dataclasses.replace, which costs several times more.
        return MediaDescription(
            self.media,
            self.port,
            self.port_count,
            self.proto,
            list(self.formats),
            self.connection,
            list(self.bandwidths),
            list(self.attributes),
            self.information,
            self.key,
            list(self.other_lines),
        )


@dataclass(slots=True, kw_only=True)
class SessionDescription(_AttributeAccess):
    """A whole SDP (RFC 8866 §5): session-level lines and the m-sections in order."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: list[str] = field(default_factory=list)
    phones: list[str] = field(default_factory=list)
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = field(default_factory=list)
    timings: list[Timing] = field(default_factory=lambda: [Timing(0, 0)])
    zone: str | None = None
    key: str | None = None
    attributes: list[Attribute] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)
    other_lines: list[Line] = field(default_factory=list)

    @classmethod
    def parse(cls, data: bytes | str, *, max_size: int = MAX_SDP_SIZE) -> SessionDescription:
        return parse(data, max_size=max_size)

    def __bytes__(self) -> bytes:
        return serialize(self)

    def copy(self) -> SessionDescription:
        # As MediaDescription.copy: the lists are the only mutable parts.
        return SessionDescription(
            origin=self.origin,
            session_name=self.session_name,
            version=self.version,
            information=self.information,
            uri=self.uri,
            emails=list(self.emails),
            phones=list(self.phones),
            connection=self.connection,
            bandwidths=list(self.bandwidths),
            timings=list(self.timings),
            zone=self.zone,
            key=self.key,
            attributes=list(self.attributes),
            media=[m.copy() for m in self.media],
            other_lines=list(self.other_lines),
        )

    def connection_of(self, media: MediaDescription) -> Connection | None:
        """RFC 8866 §5.7: a media-level ``c=`` overrides the session-level one."""
        return media.connection or self.connection

    def direction_of(self, media: MediaDescription) -> Direction:
        """Effective direction: media attribute, else session attribute, else sendrecv.

        RFC 3264 §8.4: a ``c=`` of 0.0.0.0 (RFC 2543 hold) means "do not send to me", so it
        removes the receive half of whatever the attributes say.
        """
        direction = media.explicit_direction or self.explicit_direction or Direction.SENDRECV
        conn = self.connection_of(media)
        if conn is not None and conn.is_hold:
            direction = Direction.from_flags(send=direction.sends, recv=False)
        return direction

    def is_hold(self, media: MediaDescription) -> bool:
        """True when this SDP's sender will not receive the stream (RFC 3264 §8.4)."""
        return not self.direction_of(media).receives


# --------------------------------------------------------------------------- parsing


def parse(data: bytes | str, *, max_size: int = MAX_SDP_SIZE) -> SessionDescription:
    """Parse an SDP body; raise :class:`SdpError` (and nothing else) for bad input.

    Bytes are decoded as UTF-8 with ``surrogateescape`` so that other charsets (RFC 8866 §6.10)
    pass through unchanged instead of failing the call.
    """
    if len(data) > max_size:
        raise SdpError(413, f"SDP larger than {max_size} bytes")
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    if "\x00" in text:
        raise SdpError(400, "NUL byte in SDP")
    # CRLF or bare LF ends a line; a CR left inside one is refused by the parser.
    text = text.replace("\r\n", "\n")
    if text.endswith("\r"):
        text = text[:-1]
    lines = [line for line in text.split("\n") if line]
    if not lines or not lines[0].startswith("v="):
        raise SdpError(400, "body does not start with v=")
    return _Parser().run(lines)


class _Parser:
    """One pass over the lines; session level until the first ``m=`` (RFC 8866 §5)."""

    def __init__(self) -> None:
        self.session: dict[str, object] = {}
        self.origin: Origin | None = None
        self.name: str | None = None
        self.timings: list[Timing] = []
        self.media: list[MediaDescription] = []
        self.s_attrs: list[Attribute] = []
        self.s_bw: list[Bandwidth] = []
        self.s_other: list[Line] = []
        self.emails: list[str] = []
        self.phones: list[str] = []

    def run(self, lines: list[str]) -> SessionDescription:
        version = _number(lines[0][2:], "v=")
        if version != 0:
            raise SdpError(488, f"unsupported SDP version {version}")
        attributes = self.s_attrs  # where a= lines go: the session's, then the m-line's
        for line in lines[1:]:
            if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
                raise SdpError(488, f"malformed SDP line {line[:40]!r}")
            if "\r" in line:
                raise SdpError(488, "bare CR inside an SDP line")
            kind, value = line[0], line[2:]
            if kind == "a":  # most lines of an offer: no call per line
                name, colon, rest = value.partition(":")
                attributes.append(Attribute(name, rest if colon else None))
            elif kind == "m":
                media = _parse_m(value)
                self.media.append(media)
                attributes = media.attributes
            elif kind == "v":
                raise SdpError(488, "v= repeated")
            elif self.media:
                self.media_line(self.media[-1], kind, value)
            else:
                self.session_line(kind, value)
        if self.origin is None:
            raise SdpError(488, "SDP without o=")
        if self.name is None:
            raise SdpError(488, "SDP without s=")
        single = self.session
        return SessionDescription(
            origin=self.origin,
            session_name=self.name,
            version=version,
            information=_opt(single.get("i")),
            uri=_opt(single.get("u")),
            emails=self.emails,
            phones=self.phones,
            connection=_conn(single.get("c")),
            bandwidths=self.s_bw,
            timings=self.timings,
            zone=_opt(single.get("z")),
            key=_opt(single.get("k")),
            attributes=self.s_attrs,
            media=self.media,
            other_lines=self.s_other,
        )

    def session_line(self, kind: str, value: str) -> None:
        if kind == "o":
            if self.origin is not None:
                raise SdpError(488, "o= repeated")
            self.origin = _parse_o(value)
        elif kind == "s":
            if self.name is not None:
                raise SdpError(488, "s= repeated")
            self.name = value
        elif kind == "b":
            self.s_bw.append(_parse_b(value))
        elif kind == "t":
            parts = _fields(value)
            if len(parts) != 2:
                raise SdpError(488, "malformed t= line")
            self.timings.append(Timing(_number(parts[0], "t="), _number(parts[1], "t=")))
        elif kind == "r":
            if not self.timings:
                raise SdpError(488, "r= without t=")
            last = self.timings[-1]
            self.timings[-1] = Timing(last.start, last.stop, (*last.repeats, value))
        elif kind == "e":
            self.emails.append(value)
        elif kind == "p":
            self.phones.append(value)
        elif kind == "c":
            if "c" in self.session:
                raise SdpError(488, "session-level c= repeated")
            self.session["c"] = _parse_c(value)
        elif kind in "iuzk" and kind not in self.session:
            self.session[kind] = value
        else:
            self.s_other.append(Line(kind, value))

    @staticmethod
    def media_line(m: MediaDescription, kind: str, value: str) -> None:
        if kind == "c":
            # Several c= per m-line only exist for layered multicast (RFC 8866 §5.7).
            if m.connection is not None:
                raise SdpError(488, "media-level c= repeated")
            m.connection = _parse_c(value)
        elif kind == "b":
            m.bandwidths.append(_parse_b(value))
        elif kind in "os":
            raise SdpError(488, f"{kind}= inside a media section")
        elif kind == "i" and m.information is None:
            m.information = value
        elif kind == "k" and m.key is None:
            m.key = value
        else:
            m.other_lines.append(Line(kind, value))


def _opt(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _conn(value: object) -> Connection | None:
    return value if isinstance(value, Connection) else None


def _parse_o(value: str) -> Origin:
    parts = _fields(value)
    if len(parts) != 6:
        raise SdpError(488, "malformed o= line")
    return Origin(
        parts[0], parts[1], _number(parts[2], "o= sess-version"), parts[3], parts[4], parts[5]
    )


def _parse_c(value: str) -> Connection:
    parts = _fields(value)
    if len(parts) != 3:
        raise SdpError(488, "malformed c= line")
    return Connection(parts[0], parts[1], parts[2])


def _parse_b(value: str) -> Bandwidth:
    bwtype, colon, amount = value.partition(":")
    if not colon or not bwtype:
        raise SdpError(488, "malformed b= line")
    return Bandwidth(bwtype, _number(amount, "b="))


def _parse_m(value: str) -> MediaDescription:
    parts = _fields(value)
    if len(parts) < 3:
        raise SdpError(488, "malformed m= line")
    port_text, slash, count_text = parts[1].partition("/")
    port = _number(port_text, "m= port")
    count = _number(count_text, "m= port count") if slash else None
    if port > 65535 or (count is not None and not 1 <= count <= 65535):
        raise SdpError(488, f"bad m= port {parts[1]!r}")
    return MediaDescription(parts[0], port, count, parts[2], parts[3:])


# ------------------------------------------------------------------------ serializing


def serialize(desc: SessionDescription) -> bytes:
    """Lines in RFC 8866 §5 order, CRLF-terminated; a CR, LF or NUL in a value is a bug."""
    out = [f"v={desc.version}"]
    o = desc.origin
    out.append(f"o={o.username} {o.sess_id} {o.sess_version} {o.nettype} {o.addrtype} {o.address}")
    out.append(f"s={desc.session_name}")
    _maybe(out, "i", desc.information)
    _maybe(out, "u", desc.uri)
    out += [f"e={e}" for e in desc.emails]
    out += [f"p={p}" for p in desc.phones]
    _connection(out, desc.connection)
    out += [f"b={b.bwtype}:{b.bandwidth}" for b in desc.bandwidths]
    for t in desc.timings:
        out.append(f"t={t.start} {t.stop}")
        out += [f"r={r}" for r in t.repeats]
    _maybe(out, "z", desc.zone)
    _maybe(out, "k", desc.key)
    _attributes(out, desc.attributes)
    out += [f"{line.type}={line.value}" for line in desc.other_lines]
    for m in desc.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        out.append(" ".join([f"m={m.media}", port, m.proto, *m.formats]))
        _maybe(out, "i", m.information)
        _connection(out, m.connection)
        out += [f"b={b.bwtype}:{b.bandwidth}" for b in m.bandwidths]
        _maybe(out, "k", m.key)
        _attributes(out, m.attributes)
        out += [f"{line.type}={line.value}" for line in m.other_lines]
    text = "\r\n".join(out)
    breaks = len(out) - 1  # one test of the whole text; the line is looked for if it fails
    if text.count("\n") != breaks or text.count("\r") != breaks or "\x00" in text:
        for line in out:
            if "\r" in line or "\n" in line or "\x00" in line:
                raise ValueError(f"CR, LF or NUL inside SDP line {line[:40]!r}")
    return (text + "\r\n").encode("utf-8", "surrogateescape")


def _maybe(out: list[str], kind: str, value: str | None) -> None:
    if value is not None:
        out.append(f"{kind}={value}")


def _connection(out: list[str], c: Connection | None) -> None:
    if c is not None:
        out.append(f"c={c.nettype} {c.addrtype} {c.address}")


def _attributes(out: list[str], attributes: Iterable[Attribute]) -> None:
    for a in attributes:
        out.append(f"a={a.name}" if a.value is None else f"a={a.name}:{a.value}")


# ----------------------------------------------------------------------- offer/answer
