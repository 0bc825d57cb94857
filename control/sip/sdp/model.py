"""SDP (RFC 8866): the description model; its parser and serializer are in ``wire``.

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
        from control.sip.sdp.wire import parse  # wire imports this module

        return parse(data, max_size=max_size)

    def __bytes__(self) -> bytes:
        from control.sip.sdp.wire import serialize  # wire imports this module

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


# ----------------------------------------------------------------------- offer/answer
