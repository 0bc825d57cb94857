"""SDP (RFC 8866) on the wire: the parser and the serializer of ``model``'s descriptions.

Split from ``model`` to keep it to the description model. The parser is liberal in what it
accepts (lines out of order, unknown line types, a missing ``t=``, bare LF line ends, non-UTF-8
text) and strict only where a wrong guess would change the meaning of the session; it raises
:class:`~control.sip.sdp.model.SdpError` with the statuses listed in ``model``. Serializing
writes CRLF lines in RFC 8866 §5 order, so well-formed input comes back byte for byte. What it
normalises: lines out of that order are put in it; unknown lines (``Line``) go after the ``a=``
lines of their section; runs of blanks between fields and leading zeros in numbers are
collapsed.
"""

from __future__ import annotations

from collections.abc import Iterable

from control.sip.sdp.model import (
    MAX_SDP_SIZE,
    Attribute,
    Bandwidth,
    Connection,
    Line,
    MediaDescription,
    Origin,
    SdpError,
    SessionDescription,
    Timing,
    _fields,
    _number,
)

__all__ = ["parse", "serialize"]


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
