"""Jingle (XEP-0166) stanzas for RTP audio, sans-IO: parse a ``<jingle/>`` element into frozen
dataclasses and build one back.

What is read and written:

- the session: ``action``, ``sid``, ``initiator``, ``responder``, one or more ``<content/>``
  (``creator``, ``name``, ``senders``), ``<reason/>`` (the seventeen XEP-0166 §7.4 conditions,
  ``<text/>``, the ``<sid/>`` of ``alternative-session``) and XEP-0338 BUNDLE ``<group/>``;
- the RTP description (XEP-0167): ``media``, ``ssrc``, ``<payload-type/>`` (id, name,
  clockrate, channels, ptime, maxptime and ``<parameter/>``), ``<rtcp-mux/>``, SDES
  ``<encryption/>``/``<crypto/>``, XEP-0293 ``<rtcp-fb/>`` (per payload type and for all),
  XEP-0294 ``<rtp-hdrext/>`` and XEP-0339 ``<source/>`` (what WebRTC-based clients such as
  Conversations send and an SDP answerer needs back);
- transports: ICE-UDP (XEP-0176: ``ufrag``, ``pwd``, ``<candidate/>``) with the XEP-0320
  DTLS ``<fingerprint/>`` (hash, setup, value), and Raw UDP (XEP-0177), the plain RTP a
  client offers without ICE;
- XEP-0167 §7 session-info payloads: active, hold, unhold, mute, unmute, ringing.

A description or transport of another namespace (file transfer, SOCKS5 …) is kept as its
namespace only, so the session layer can refuse it with ``unsupported-applications`` /
``unsupported-transports`` rather than the parser failing the stanza.

Bad input raises :class:`JingleError` carrying the stanza error to answer (RFC 6120 §8.3 and
XEP-0166 §8's ``urn:xmpp:jingle:errors:1`` conditions); control/xmpp/jinglebuild.py builds
elements back, and that error.
Sizes are bounded by :class:`JingleLimits`. The XML is ``xml.etree`` elements, as slixmpp hands
them over; nothing here touches a stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from xml.etree import ElementTree as ET

from control.xmpp.errors import error_type

__all__ = [
    "DTLS_NS",
    "GROUPING_NS",
    "HDREXT_NS",
    "ICE_NS",
    "JINGLE_ERRORS_NS",
    "JINGLE_NS",
    "RAW_UDP_NS",
    "REASONS",
    "RTCP_FB_NS",
    "RTP_INFO_NS",
    "RTP_NS",
    "SSMA_NS",
    "Action",
    "Candidate",
    "Content",
    "Crypto",
    "Feedback",
    "Fingerprint",
    "HeaderExtension",
    "IceTransport",
    "Jingle",
    "JingleError",
    "JingleLimits",
    "PayloadType",
    "RawUdpTransport",
    "Reason",
    "RtpDescription",
    "SessionInfo",
    "Source",
    "Transport",
    "parse_jingle",
]

JINGLE_NS = "urn:xmpp:jingle:1"
JINGLE_ERRORS_NS = "urn:xmpp:jingle:errors:1"
RTP_NS = "urn:xmpp:jingle:apps:rtp:1"
RTP_INFO_NS = "urn:xmpp:jingle:apps:rtp:info:1"
RTCP_FB_NS = "urn:xmpp:jingle:apps:rtp:rtcp-fb:0"
HDREXT_NS = "urn:xmpp:jingle:apps:rtp:rtp-hdrext:0"
SSMA_NS = "urn:xmpp:jingle:apps:rtp:ssma:0"
ICE_NS = "urn:xmpp:jingle:transports:ice-udp:1"
RAW_UDP_NS = "urn:xmpp:jingle:transports:raw-udp:1"
DTLS_NS = "urn:xmpp:jingle:apps:dtls:0"
GROUPING_NS = "urn:xmpp:jingle:apps:grouping:0"

# XEP-0166 §7.4: the defined reason conditions.
REASONS = frozenset(
    {
        "alternative-session",
        "busy",
        "cancel",
        "connectivity-error",
        "decline",
        "expired",
        "failed-application",
        "failed-transport",
        "general-error",
        "gone",
        "incompatible-parameters",
        "media-error",
        "security-error",
        "success",
        "timeout",
        "unsupported-applications",
        "unsupported-transports",
    }
)
_CREATORS = frozenset({"initiator", "responder"})
_SENDERS = frozenset({"both", "initiator", "responder", "none"})
_SETUPS = frozenset({"active", "passive", "actpass"})  # XEP-0320: no holdconn
_CANDIDATE_TYPES = frozenset({"host", "prflx", "srflx", "relay"})
_INFO_KINDS = frozenset({"active", "hold", "unhold", "mute", "unmute", "ringing"})


class Action(StrEnum):
    """XEP-0166 §7.2 actions."""

    CONTENT_ACCEPT = "content-accept"
    CONTENT_ADD = "content-add"
    CONTENT_MODIFY = "content-modify"
    CONTENT_REJECT = "content-reject"
    CONTENT_REMOVE = "content-remove"
    DESCRIPTION_INFO = "description-info"
    SECURITY_INFO = "security-info"
    SESSION_ACCEPT = "session-accept"
    SESSION_INFO = "session-info"
    SESSION_INITIATE = "session-initiate"
    SESSION_TERMINATE = "session-terminate"
    TRANSPORT_ACCEPT = "transport-accept"
    TRANSPORT_INFO = "transport-info"
    TRANSPORT_REJECT = "transport-reject"
    TRANSPORT_REPLACE = "transport-replace"


_ACTIONS = frozenset(a.value for a in Action)


class JingleError(Exception):
    """A Jingle request we refuse: the RFC 6120 condition, the XEP-0166 §8 specific
    condition (``out-of-order``, ``unknown-session``, ``tie-break``, ``unsupported-info``)
    when there is one, and a short text for the log and the ``<text/>``."""

    def __init__(self, condition: str, text: str, *, jingle: str | None = None) -> None:
        super().__init__(f"{condition}{f'/{jingle}' if jingle else ''}: {text}")
        self.condition = condition
        self.jingle = jingle
        self.text = text

    @classmethod
    def unknown_session(cls, sid: str) -> JingleError:
        return cls("item-not-found", f"no session {sid[:64]!r}", jingle="unknown-session")

    @classmethod
    def out_of_order(cls, text: str) -> JingleError:
        return cls("unexpected-request", text, jingle="out-of-order")

    @property
    def type(self) -> str:
        return error_type(self.condition)


@dataclass(frozen=True, slots=True)
class JingleLimits:
    """Counts a peer may send in one stanza; real clients use a handful of each (an audio
    call: one content, ~10 payload types, ~10 candidates), so these only bound abuse."""

    max_contents: int = 8
    max_payload_types: int = 64
    max_candidates: int = 64
    max_parameters: int = 32  # per payload type or source
    max_text: int = 1024  # characters of a reason <text/>


@dataclass(frozen=True, slots=True)
class Feedback:
    """XEP-0293 ``<rtcp-fb type subtype/>`` = SDP ``a=rtcp-fb:<pt> type [subtype]``."""

    type: str
    subtype: str | None = None


@dataclass(frozen=True, slots=True)
class PayloadType:
    """XEP-0167 §5 ``<payload-type/>``; ``parameters`` are the fmtp ``name=value`` pairs in
    order (a bare fmtp token such as telephone-event's ``0-15`` has the name ``""``)."""

    id: int
    name: str | None = None
    clockrate: int | None = None
    channels: int = 1
    ptime: int | None = None
    maxptime: int | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    feedback: tuple[Feedback, ...] = ()


@dataclass(frozen=True, slots=True)
class Crypto:
    """XEP-0167 §7 SDES ``<crypto/>`` = RFC 4568 ``a=crypto``."""

    tag: int
    suite: str
    key_params: str
    session_params: str | None = None


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """XEP-0294 ``<rtp-hdrext id uri senders/>`` = SDP ``a=extmap``."""

    id: int
    uri: str
    senders: str | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """XEP-0339 ``<source ssrc>`` with its ``<parameter/>`` (cname, msid …) = ``a=ssrc``."""

    ssrc: int
    parameters: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RtpDescription:
    """XEP-0167 ``<description xmlns='urn:xmpp:jingle:apps:rtp:1'/>``."""

    media: str
    payload_types: tuple[PayloadType, ...] = ()
    rtcp_mux: bool = False
    ssrc: int | None = None
    cryptos: tuple[Crypto, ...] = ()
    crypto_required: bool = False
    feedback: tuple[Feedback, ...] = ()  # for every payload type (SDP's ``a=rtcp-fb:*``)
    header_extensions: tuple[HeaderExtension, ...] = ()
    extmap_allow_mixed: bool = False
    sources: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class Candidate:
    """An ICE-UDP (XEP-0176 §5.3) or Raw UDP (XEP-0177) candidate. Raw UDP carries only
    component, generation, id, ip, port (and an optional type); the ICE fields default."""

    component: int
    ip: str
    port: int
    id: str
    generation: int = 0
    foundation: str = "1"
    priority: int = 0
    protocol: str = "udp"
    type: str = "host"
    network: int = 0
    rel_addr: str | None = None
    rel_port: int | None = None


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """XEP-0320 ``<fingerprint hash setup>value</fingerprint>`` = ``a=fingerprint``+``a=setup``."""

    hash: str
    value: str
    setup: str | None = None


@dataclass(frozen=True, slots=True)
class IceTransport:
    """XEP-0176 ``<transport ufrag pwd>``; a transport-info may carry only candidates."""

    ufrag: str | None = None
    pwd: str | None = None
    candidates: tuple[Candidate, ...] = ()
    fingerprint: Fingerprint | None = None


@dataclass(frozen=True, slots=True)
class RawUdpTransport:
    """XEP-0177 ``<transport>``: plain RTP to the candidates' addresses, no ICE."""

    candidates: tuple[Candidate, ...] = ()


Transport = IceTransport | RawUdpTransport


@dataclass(frozen=True, slots=True)
class Content:
    """XEP-0166 §7.3 ``<content/>``. ``description_ns`` is set only for an application this
    module does not read (``description`` then None); ``transport_ns`` likewise."""

    name: str
    creator: str = "initiator"
    senders: str = "both"
    description: RtpDescription | None = None
    transport: Transport | None = None
    description_ns: str | None = None
    transport_ns: str | None = None


@dataclass(frozen=True, slots=True)
class Reason:
    """XEP-0166 §7.4 ``<reason/>``."""

    condition: str
    text: str | None = None
    alternative_sid: str | None = None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One XEP-0167 §7 informational payload; ``creator``/``name`` only for (un)mute."""

    kind: str
    creator: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Jingle:
    """One ``<jingle/>`` element. ``info`` is the session-info payload (None: a ping);
    ``unknown_info`` the qualified name of a payload we do not know (XEP-0166 §7.2.10 wants
    ``unsupported-info`` for it, which the session layer answers)."""

    action: Action
    sid: str
    initiator: str | None = None
    responder: str | None = None
    contents: tuple[Content, ...] = ()
    reason: Reason | None = None
    info: SessionInfo | None = None
    unknown_info: str | None = None
    groups: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())


# --------------------------------------------------------------------------- parsing


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _split(tag: object) -> tuple[str, str]:
    if not isinstance(tag, str) or not tag.startswith("{"):
        return "", tag if isinstance(tag, str) else ""
    ns, _, local = tag[1:].partition("}")
    return ns, local


def _bad(text: str) -> JingleError:
    return JingleError("bad-request", text)


def _required(el: ET.Element, name: str) -> str:
    value = el.get(name)
    if not value:
        raise _bad(f"<{_split(el.tag)[1]}/> without '{name}'")
    return value


def _int(el: ET.Element, name: str, *, default: int | None = None, top: int = 2**32 - 1) -> int:
    text = el.get(name)
    if text is None or text == "":
        if default is None:
            raise _bad(f"<{_split(el.tag)[1]}/> without '{name}'")
        return default
    if len(text) > 10 or not (text.isascii() and text.isdigit()) or int(text) > top:
        raise _bad(f"'{name}' is not a number in range: {text[:20]!r}")
    return int(text)


def _opt_int(el: ET.Element, name: str, top: int = 2**32 - 1) -> int | None:
    return _int(el, name, top=top) if el.get(name) not in (None, "") else None


def _choice(el: ET.Element, name: str, allowed: frozenset[str], default: str) -> str:
    value = el.get(name) or default
    if value not in allowed:
        raise _bad(f"'{name}' is not one of {sorted(allowed)}: {value[:20]!r}")
    return value


def _bounded(items: list[ET.Element], limit: int, what: str) -> list[ET.Element]:
    if len(items) > limit:
        raise JingleError("policy-violation", f"more than {limit} {what}")
    return items


def _parameters(el: ET.Element, ns: str, limits: JingleLimits) -> tuple[tuple[str, str], ...]:
    params = _bounded(el.findall(_q(ns, "parameter")), limits.max_parameters, "parameters")
    return tuple((p.get("name") or "", p.get("value") or "") for p in params)


def _feedback(el: ET.Element) -> tuple[Feedback, ...]:
    return tuple(
        Feedback(_required(fb, "type"), fb.get("subtype") or None)
        for fb in el.findall(_q(RTCP_FB_NS, "rtcp-fb"))
    )


def _payload_type(el: ET.Element, limits: JingleLimits) -> PayloadType:
    return PayloadType(
        id=_int(el, "id", top=127),
        name=el.get("name") or None,
        clockrate=_opt_int(el, "clockrate"),
        channels=_int(el, "channels", default=1, top=255),
        ptime=_opt_int(el, "ptime"),
        maxptime=_opt_int(el, "maxptime"),
        parameters=_parameters(el, RTP_NS, limits),
        feedback=_feedback(el),
    )


def _description(el: ET.Element, limits: JingleLimits) -> RtpDescription:
    media = _required(el, "media")
    pts = _bounded(el.findall(_q(RTP_NS, "payload-type")), limits.max_payload_types, "payloads")
    encryption = el.find(_q(RTP_NS, "encryption"))
    cryptos: tuple[Crypto, ...] = ()
    required = False
    if encryption is not None:
        required = encryption.get("required") in ("true", "1")
        cryptos = tuple(
            Crypto(
                tag=_int(c, "tag", top=999_999_999),
                suite=_required(c, "crypto-suite"),
                key_params=_required(c, "key-params"),
                session_params=c.get("session-params") or None,
            )
            for c in encryption.findall(_q(RTP_NS, "crypto"))
        )
    exts = tuple(
        HeaderExtension(_int(h, "id", top=4095), _required(h, "uri"), h.get("senders") or None)
        for h in el.findall(_q(HDREXT_NS, "rtp-hdrext"))
    )
    sources = tuple(
        Source(_int(s, "ssrc"), _parameters(s, SSMA_NS, limits))
        for s in _bounded(el.findall(_q(SSMA_NS, "source")), limits.max_parameters, "sources")
    )
    return RtpDescription(
        media=media,
        payload_types=tuple(_payload_type(p, limits) for p in pts),
        rtcp_mux=el.find(_q(RTP_NS, "rtcp-mux")) is not None,
        ssrc=_opt_int(el, "ssrc"),
        cryptos=cryptos,
        crypto_required=required,
        feedback=_feedback(el),
        header_extensions=exts,
        extmap_allow_mixed=el.find(_q(HDREXT_NS, "extmap-allow-mixed")) is not None,
        sources=sources,
    )


def _candidate(el: ET.Element, *, ice: bool) -> Candidate:
    component = _int(el, "component", top=256)
    ip = _required(el, "ip")
    port = _int(el, "port", top=65535)
    cid = el.get("id") or ""
    generation = _int(el, "generation", default=0)
    if not ice:
        return Candidate(component, ip, port, cid, generation, type=el.get("type") or "host")
    return Candidate(
        component,
        ip,
        port,
        cid,
        generation,
        foundation=_required(el, "foundation"),
        priority=_int(el, "priority"),
        protocol=(el.get("protocol") or "udp").lower(),
        type=_choice(el, "type", _CANDIDATE_TYPES, "host"),
        network=_int(el, "network", default=0),
        rel_addr=el.get("rel-addr") or None,
        rel_port=_opt_int(el, "rel-port", top=65535),
    )


def _fingerprint(el: ET.Element) -> Fingerprint:
    value = (el.text or "").strip()
    if not value:
        raise _bad("<fingerprint/> without a value")
    setup = el.get("setup") or None
    if setup is not None and setup not in _SETUPS:
        raise _bad(f"fingerprint setup {setup[:20]!r} (XEP-0320: active, passive, actpass)")
    return Fingerprint(hash=_required(el, "hash").lower(), value=value, setup=setup)


def _transport(el: ET.Element, limits: JingleLimits) -> Transport | None:
    ns, _ = _split(el.tag)
    if ns == ICE_NS:
        cands = _bounded(el.findall(_q(ICE_NS, "candidate")), limits.max_candidates, "cands")
        fp = el.find(_q(DTLS_NS, "fingerprint"))
        return IceTransport(
            ufrag=el.get("ufrag") or None,
            pwd=el.get("pwd") or None,
            candidates=tuple(_candidate(c, ice=True) for c in cands),
            fingerprint=_fingerprint(fp) if fp is not None else None,
        )
    if ns == RAW_UDP_NS:
        cands = _bounded(el.findall(_q(RAW_UDP_NS, "candidate")), limits.max_candidates, "cands")
        return RawUdpTransport(tuple(_candidate(c, ice=False) for c in cands))
    return None


def _content(el: ET.Element, limits: JingleLimits) -> Content:
    description: RtpDescription | None = None
    transport: Transport | None = None
    description_ns = transport_ns = None
    for child in el:
        ns, local = _split(child.tag)
        if local == "description" and ns == RTP_NS:
            description = _description(child, limits)
        elif local == "description":
            description_ns = ns
        elif local == "transport":
            transport = _transport(child, limits)
            transport_ns = ns if transport is None else None
    return Content(
        name=_required(el, "name"),
        creator=_choice(el, "creator", _CREATORS, "initiator"),
        senders=_choice(el, "senders", _SENDERS, "both"),
        description=description,
        transport=transport,
        description_ns=description_ns,
        transport_ns=transport_ns,
    )


def _reason(el: ET.Element, limits: JingleLimits) -> Reason:
    condition = None
    text = alternative = None
    for child in el:
        ns, local = _split(child.tag)
        if ns != JINGLE_NS:
            continue  # application-specific conditions (XEP-0167's invalid-crypto …)
        if local == "text":
            text = (child.text or "")[: limits.max_text]
        elif local in REASONS and condition is None:
            condition = local
            if local == "alternative-session":
                alternative = (child.findtext(_q(JINGLE_NS, "sid")) or "").strip() or None
    if condition is None:
        raise _bad("<reason/> without a defined condition (XEP-0166 §7.4)")
    return Reason(condition, text, alternative)


def _info(el: ET.Element) -> tuple[SessionInfo | None, str | None]:
    for child in el:
        ns, local = _split(child.tag)
        if ns in (JINGLE_NS, GROUPING_NS) or not ns:
            continue
        if ns == RTP_INFO_NS and local in _INFO_KINDS:
            return SessionInfo(local, child.get("creator"), child.get("name")), None
        return None, f"{{{ns}}}{local}"
    return None, None


def parse_jingle(el: ET.Element, *, limits: JingleLimits | None = None) -> Jingle:
    """The ``<jingle/>`` child of an iq, or :class:`JingleError` (``bad-request`` for
    malformed input, ``policy-violation`` past ``limits``)."""
    limits = limits or JingleLimits()
    if el.tag != _q(JINGLE_NS, "jingle"):
        raise _bad(f"not a {JINGLE_NS} <jingle/>")
    action = _required(el, "action")
    if action not in _ACTIONS:
        raise _bad(f"unknown Jingle action {action[:32]!r}")
    sid = _required(el, "sid")
    contents = _bounded(el.findall(_q(JINGLE_NS, "content")), limits.max_contents, "contents")
    reason = el.find(_q(JINGLE_NS, "reason"))
    info, unknown = _info(el) if action == Action.SESSION_INFO else (None, None)
    groups = tuple(
        (_required(g, "semantics"), tuple(_required(c, "name") for c in g))
        for g in el.findall(_q(GROUPING_NS, "group"))
    )
    return Jingle(
        action=Action(action),
        sid=sid,
        initiator=el.get("initiator") or None,
        responder=el.get("responder") or None,
        contents=tuple(_content(c, limits) for c in contents),
        reason=_reason(reason, limits) if reason is not None else None,
        info=info,
        unknown_info=unknown,
        groups=groups,
    )
