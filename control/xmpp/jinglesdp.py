"""Jingle RTP contents ↔ SDP (RFC 8866) as RFC 3264 offer/answer uses it, sans-IO: the mapping
XEP-0167 §8, XEP-0176 §9, XEP-0320 and XEP-0338 define, over the SIP side's SDP model.

One ``<content/>`` with an RTP description is one ``m=`` line, in order, ``a=mid`` its name:

- payload types ↔ the m-line's formats with ``a=rtpmap`` (channels only when not 1) and
  ``a=fmtp`` (``name=value;…``; a parameter with the name ``""`` is a bare token such as
  telephone-event's ``0-15``); ``ptime``/``maxptime`` ↔ ``a=ptime``/``a=maxptime`` (SDP has
  one per m-line: the first payload type's goes out, and every payload type gets it back);
  XEP-0293 feedback ↔ ``a=rtcp-fb`` (``*`` for the description-level ones), XEP-0294 ↔
  ``a=extmap``/``a=extmap-allow-mixed``, XEP-0339 ↔ ``a=ssrc``, SDES ↔ ``a=crypto``,
  ``<rtcp-mux/>`` ↔ ``a=rtcp-mux``;
- ``senders`` ↔ the direction attribute. Jingle names the parties (initiator, responder),
  SDP speaks for its author, so both functions take ``author``: who wrote the stanza (the
  initiator for session-initiate, the responder for session-accept);
- ICE-UDP ↔ ``a=ice-ufrag``, ``a=ice-pwd``, ``a=candidate`` (RFC 8839 §5.1, with the
  ``generation`` and ``network-id`` extensions WebRTC stacks write); the m-line's port and
  ``c=`` are the default candidate (the highest-priority component 1), or port 9 and
  ``0.0.0.0`` when there is none yet (RFC 8840 §4.3.1, trickle ICE); XEP-0320
  ``<fingerprint/>`` ↔ ``a=fingerprint`` + ``a=setup``; the proto is ``UDP/TLS/RTP/SAVPF``
  with a fingerprint (RFC 5764), else ``RTP/SAVP`` with SDES, else ``RTP/AVP`` (each with F
  when there is RTCP feedback, RFC 4585);
- Raw UDP (XEP-0177, plain RTP without ICE) ↔ the m-line's port and ``c=``, component 2
  ↔ ``a=rtcp`` (RFC 3605) unless rtcp-mux;
- XEP-0338 ``<group semantics='BUNDLE'>`` ↔ session-level ``a=group:BUNDLE``.

SDP has no candidate ids: a candidate read from SDP gets a stable id derived from its line, so
the same candidate sent twice (trickle, then in an answer) keeps one id. Contents with another
application, and rejected m-lines (port 0), have no counterpart and are left out; the session
layer answers for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from control.sip.sdp import (
    Attribute,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    SessionDescription,
)
from control.xmpp.jingle import (
    Candidate,
    Content,
    Crypto,
    Feedback,
    Fingerprint,
    HeaderExtension,
    IceTransport,
    PayloadType,
    RawUdpTransport,
    RtpDescription,
    Source,
)

__all__ = [
    "candidate_from_sdp",
    "candidate_to_sdp",
    "contents_to_media",
    "jingle_to_sdp",
    "media_to_content",
    "sdp_to_jingle",
]

_OTHER = {"initiator": "responder", "responder": "initiator"}
_DIRECTIONS = frozenset(d.value for d in Direction)
_NO_ADDRESS = Connection("IN", "IP4", "0.0.0.0")
_DISCARD_PORT = 9  # RFC 8840 §4.3.1: the m-line port before any candidate is known


def _direction(senders: str, author: str) -> Direction:
    if senders == "both":
        return Direction.SENDRECV
    if senders == "none":
        return Direction.INACTIVE
    return Direction.SENDONLY if senders == author else Direction.RECVONLY


def _senders(direction: Direction, author: str) -> str:
    match direction:
        case Direction.SENDRECV:
            return "both"
        case Direction.INACTIVE:
            return "none"
        case Direction.SENDONLY:
            return author
    return _OTHER[author]


# ----------------------------------------------------------------------- candidates


def candidate_to_sdp(c: Candidate) -> str:
    """The ``a=candidate`` value (RFC 8839 §5.1) of an ICE candidate."""
    parts = [c.foundation, str(c.component), c.protocol, str(c.priority), c.ip, str(c.port)]
    parts += ["typ", c.type]
    if c.rel_addr is not None and c.rel_port is not None:
        parts += ["raddr", c.rel_addr, "rport", str(c.rel_port)]
    parts += ["generation", str(c.generation)]
    if c.network:
        parts += ["network-id", str(c.network)]
    return " ".join(parts)


def _number(text: str, top: int) -> int | None:
    if not text or len(text) > 10 or not (text.isascii() and text.isdigit()):
        return None
    value = int(text)
    return value if value <= top else None


def _stable_id(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()[:12]


def candidate_from_sdp(value: str) -> Candidate | None:
    """An ``a=candidate`` value as a Jingle candidate; None when malformed (skipped, as the
    SDP parser skips a malformed rtpmap, rather than failing the whole description)."""
    value = value.removeprefix("candidate:")
    parts = value.split()
    if len(parts) < 8 or parts[6] != "typ" or len(parts) % 2:
        return None
    component, priority = _number(parts[1], 256), _number(parts[3], 2**32 - 1)
    port = _number(parts[5], 65535)
    if component is None or priority is None or port is None:
        return None
    ext = dict(zip(parts[8::2], parts[9::2], strict=True))
    rel_port = _number(ext.get("rport", ""), 65535)
    return Candidate(
        component=component,
        ip=parts[4],
        port=port,
        id=_stable_id(value),
        generation=_number(ext.get("generation", ""), 2**32 - 1) or 0,
        foundation=parts[0],
        priority=priority,
        protocol=parts[2].lower(),
        type=parts[7],
        network=_number(ext.get("network-id", ""), 2**32 - 1) or 0,
        rel_addr=ext.get("raddr") if rel_port is not None else None,
        rel_port=rel_port if "raddr" in ext else None,
    )


# ------------------------------------------------------------------ Jingle -> SDP


def _fmtp(params: tuple[tuple[str, str], ...]) -> str:
    return ";".join(f"{name}={value}" if name else value for name, value in params)


def _payload_attributes(d: RtpDescription) -> list[Attribute]:
    out = []
    for pt in d.payload_types:
        if pt.name is not None and pt.clockrate is not None:
            tail = f"/{pt.channels}" if pt.channels != 1 else ""
            out.append(Attribute("rtpmap", f"{pt.id} {pt.name}/{pt.clockrate}{tail}"))
        if pt.parameters:
            out.append(Attribute("fmtp", f"{pt.id} {_fmtp(pt.parameters)}"))
        out += [_feedback_attribute(str(pt.id), fb) for fb in pt.feedback]
    out += [_feedback_attribute("*", fb) for fb in d.feedback]
    ptime = next((pt.ptime for pt in d.payload_types if pt.ptime is not None), None)
    maxptime = next((pt.maxptime for pt in d.payload_types if pt.maxptime is not None), None)
    if ptime is not None:
        out.append(Attribute("ptime", str(ptime)))
    if maxptime is not None:
        out.append(Attribute("maxptime", str(maxptime)))
    return out


def _feedback_attribute(fmt: str, fb: Feedback) -> Attribute:
    tail = f" {fb.subtype}" if fb.subtype else ""
    return Attribute("rtcp-fb", f"{fmt} {fb.type}{tail}")


def _proto(d: RtpDescription, fingerprint: Fingerprint | None) -> str:
    feedback = bool(d.feedback) or any(pt.feedback for pt in d.payload_types)
    if fingerprint is not None:
        return "UDP/TLS/RTP/SAVPF"
    base = "RTP/SAVP" if d.cryptos else "RTP/AVP"
    return base + ("F" if feedback else "")


def _default(candidates: Iterable[Candidate], component: int) -> Candidate | None:
    best = [c for c in candidates if c.component == component and c.protocol == "udp"]
    return max(best, key=lambda c: c.priority) if best else None


def _media(content: Content, author: str) -> MediaDescription | None:
    d = content.description
    if d is None:
        return None
    transport = content.transport
    fingerprint = transport.fingerprint if isinstance(transport, IceTransport) else None
    candidates = transport.candidates if transport is not None else ()
    rtp, rtcp = _default(candidates, 1), _default(candidates, 2)
    m = MediaDescription(
        media=d.media,
        port=rtp.port if rtp is not None else _DISCARD_PORT,
        port_count=None,
        proto=_proto(d, fingerprint),
        formats=[str(pt.id) for pt in d.payload_types],
        connection=Connection.for_address(rtp.ip) if rtp is not None else _NO_ADDRESS,
    )
    attrs = m.attributes
    attrs.append(Attribute("mid", content.name))
    if isinstance(transport, IceTransport):
        if transport.ufrag is not None:
            attrs.append(Attribute("ice-ufrag", transport.ufrag))
        if transport.pwd is not None:
            attrs.append(Attribute("ice-pwd", transport.pwd))
        attrs += [Attribute("candidate", candidate_to_sdp(c)) for c in transport.candidates]
    if fingerprint is not None:
        attrs.append(Attribute("fingerprint", f"{fingerprint.hash} {fingerprint.value}"))
        if fingerprint.setup is not None:
            attrs.append(Attribute("setup", fingerprint.setup))
    if rtcp is not None and not d.rtcp_mux:
        family = Connection.for_address(rtcp.ip).addrtype
        attrs.append(Attribute("rtcp", f"{rtcp.port} IN {family} {rtcp.ip}"))
    attrs.append(Attribute(_direction(content.senders, author).value))
    if d.rtcp_mux:
        attrs.append(Attribute("rtcp-mux"))
    for h in d.header_extensions:
        direction = "" if h.senders in (None, "both") else f"/{_direction(h.senders, author)}"
        attrs.append(Attribute("extmap", f"{h.id}{direction} {h.uri}"))
    if d.extmap_allow_mixed:
        attrs.append(Attribute("extmap-allow-mixed"))
    attrs += _payload_attributes(d)
    for c in d.cryptos:
        tail = f" {c.session_params}" if c.session_params else ""
        attrs.append(Attribute("crypto", f"{c.tag} {c.suite} {c.key_params}{tail}"))
    if d.ssrc is not None and all(s.ssrc != d.ssrc for s in d.sources):
        attrs.append(Attribute("ssrc", str(d.ssrc)))
    for s in d.sources:
        attrs += [
            Attribute("ssrc", f"{s.ssrc} {name}:{value}" if value else f"{s.ssrc} {name}")
            for name, value in s.parameters
        ]
    return m


def contents_to_media(contents: Sequence[Content], *, author: str) -> list[MediaDescription]:
    """The m-lines of the RTP contents, in order (module doc)."""
    return [m for c in contents if (m := _media(c, author)) is not None]


def jingle_to_sdp(
    contents: Sequence[Content],
    *,
    author: str,
    origin: Origin,
    groups: Sequence[tuple[str, Sequence[str]]] = (),
) -> SessionDescription:
    """An SDP for a session-initiate (an offer) or session-accept (an answer) by ``author``."""
    attributes = [Attribute("group", " ".join([sem, *names])) for sem, names in groups]
    return SessionDescription(
        origin=origin,
        attributes=attributes,
        media=contents_to_media(contents, author=author),
    )


# ------------------------------------------------------------------ SDP -> Jingle


def _fmtp_params(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    out = []
    for item in text.split(";"):
        item = item.strip()
        if item:
            name, eq, value = item.partition("=")
            out.append((name.strip(), value.strip()) if eq else ("", item))
    return tuple(out)


def _feedbacks(m: MediaDescription) -> dict[str, list[Feedback]]:
    found: dict[str, list[Feedback]] = {}
    for value in m.get_all("rtcp-fb"):
        parts = value.split()
        if len(parts) >= 2:
            fb = Feedback(parts[1], " ".join(parts[2:]) or None)
            found.setdefault(parts[0], []).append(fb)
    return found


def _sources(m: MediaDescription) -> tuple[int | None, tuple[Source, ...]]:
    """XEP-0339 sources from ``a=ssrc``; a bare ``a=ssrc:<n>`` is the description's ``ssrc``."""
    order: dict[int, list[tuple[str, str]]] = {}
    for value in m.get_all("ssrc"):
        head, _, attr = value.strip().partition(" ")
        ssrc = _number(head, 2**32 - 1)
        if ssrc is None:
            continue
        params = order.setdefault(ssrc, [])
        if attr:
            name, _, val = attr.partition(":")
            params.append((name, val))
    bare = next((ssrc for ssrc, params in order.items() if not params), None)
    return bare, tuple(Source(ssrc, tuple(params)) for ssrc, params in order.items() if params)


def _extmaps(m: MediaDescription, author: str) -> tuple[HeaderExtension, ...]:
    out = []
    for value in m.get_all("extmap"):
        head, _, uri = value.strip().partition(" ")
        ident, _, direction = head.partition("/")
        number = _number(ident, 4095)
        if number is None or not uri:
            continue
        senders = _senders(Direction(direction), author) if direction in _DIRECTIONS else None
        out.append(HeaderExtension(number, uri.split()[0], senders))
    return tuple(out)


def _cryptos(m: MediaDescription) -> tuple[Crypto, ...]:
    return tuple(
        Crypto(c.tag, c.suite, c.key_params, " ".join(c.session_params) or None)
        for c in m.cryptos()
    )


def _description(sdp: SessionDescription, m: MediaDescription, author: str) -> RtpDescription:
    feedback = _feedbacks(m)
    ssrc, sources = _sources(m)
    ptime, maxptime = m.ptime, _number((m.get("maxptime") or "").split(".")[0], 2**32 - 1)
    pts = tuple(
        PayloadType(
            id=r.payload_type,
            name=r.encoding,
            clockrate=r.clock_rate,
            channels=r.channels or 1,
            ptime=ptime,
            maxptime=maxptime,
            parameters=_fmtp_params(r.fmtp),
            feedback=tuple(feedback.get(r.format, ())),
        )
        for r in m.rtpmaps()
    )
    return RtpDescription(
        media=m.media,
        payload_types=pts,
        rtcp_mux=m.rtcp_mux,
        ssrc=ssrc,
        cryptos=_cryptos(m),
        feedback=tuple(feedback.get("*", ())),
        header_extensions=_extmaps(m, author),
        extmap_allow_mixed=m.has("extmap-allow-mixed") or sdp.has("extmap-allow-mixed"),
        sources=sources,
    )


def _fingerprint(sdp: SessionDescription, m: MediaDescription) -> Fingerprint | None:
    value = m.get("fingerprint") or sdp.get("fingerprint")
    if not value or len(value.split()) != 2:
        return None
    hash_name, digest = value.split()
    setup = m.get("setup") or sdp.get("setup")
    return Fingerprint(hash_name.lower(), digest, setup if setup != "holdconn" else None)


def _raw_udp(sdp: SessionDescription, m: MediaDescription) -> RawUdpTransport:
    conn = sdp.connection_of(m)
    if conn is None:
        return RawUdpTransport()
    ip = conn.address.split("/")[0]
    lines = [(1, ip, m.port)]
    if not m.rtcp_mux:
        rtcp = (m.get("rtcp") or "").split()
        rtcp_ip = rtcp[3] if len(rtcp) == 4 else ip
        lines.append((2, rtcp_ip, m.rtcp if m.rtcp is not None else m.port + 1))
    return RawUdpTransport(
        tuple(
            Candidate(component, addr, port, _stable_id(f"{component} {addr} {port}"))
            for component, addr, port in lines
        )
    )


def media_to_content(
    sdp: SessionDescription, m: MediaDescription, *, author: str, creator: str = "initiator"
) -> Content | None:
    """The content for one m-line of ``sdp`` by ``author``; None for a rejected or non-RTP
    m-line (module doc)."""
    if m.rejected or not m.is_rtp:
        return None
    ufrag = m.get("ice-ufrag") or sdp.get("ice-ufrag")
    transport: IceTransport | RawUdpTransport
    fingerprint = _fingerprint(sdp, m)
    if ufrag is not None or fingerprint is not None or m.has("candidate"):
        candidates = (candidate_from_sdp(v) for v in m.get_all("candidate"))
        transport = IceTransport(
            ufrag=ufrag,
            pwd=m.get("ice-pwd") or sdp.get("ice-pwd"),
            # XEP-0176 defines only UDP; a TCP candidate (RFC 6544) has no place in it.
            candidates=tuple(c for c in candidates if c is not None and c.protocol == "udp"),
            fingerprint=fingerprint,
        )
    else:
        transport = _raw_udp(sdp, m)
    if isinstance(transport, IceTransport):
        # RFC 8840's placeholder c=0.0.0.0 comes with ICE: no RFC 2543 hold there.
        direction = m.explicit_direction or sdp.explicit_direction or Direction.SENDRECV
    else:
        direction = sdp.direction_of(m)
    return Content(
        name=m.get("mid") or m.media,
        creator=creator,
        senders=_senders(direction, author),
        description=_description(sdp, m, author),
        transport=transport,
    )


def sdp_to_jingle(
    sdp: SessionDescription, *, author: str, creator: str = "initiator"
) -> tuple[tuple[Content, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The contents and XEP-0338 groups for a session-initiate or session-accept written from
    ``sdp`` by ``author``."""
    contents = tuple(
        c for m in sdp.media if (c := media_to_content(sdp, m, author=author, creator=creator))
    )
    groups = []
    for value in sdp.get_all("group"):
        parts = value.split()
        if parts:
            groups.append((parts[0], tuple(parts[1:])))
    return contents, tuple(groups)
