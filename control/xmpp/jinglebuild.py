"""Jingle elements built from the model of control/xmpp/jingle.py (the inverse of its
parser, so ``parse_jingle(build_jingle(j)) == j``), and the iq error for a refused request."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from control.xmpp.errors import STANZAS_NS
from control.xmpp.jingle import (
    DTLS_NS,
    GROUPING_NS,
    HDREXT_NS,
    ICE_NS,
    JINGLE_ERRORS_NS,
    JINGLE_NS,
    RAW_UDP_NS,
    RTCP_FB_NS,
    RTP_INFO_NS,
    RTP_NS,
    SSMA_NS,
    Candidate,
    Feedback,
    Jingle,
    JingleError,
    RawUdpTransport,
    RtpDescription,
    Transport,
)

__all__ = ["build_jingle", "error_element"]


def _set(el: ET.Element, **attrs: object) -> ET.Element:
    for name, value in attrs.items():
        if value is not None:
            el.set(name.rstrip("_").replace("_", "-"), str(value))
    return el


def _sub(parent: ET.Element, ns: str, local: str, /, **attrs: object) -> ET.Element:
    return _set(ET.SubElement(parent, f"{{{ns}}}{local}"), **attrs)


def _build_params(parent: ET.Element, ns: str, params: tuple[tuple[str, str], ...]) -> None:
    for name, value in params:
        _sub(parent, ns, "parameter", name=name, value=value)


def _build_feedback(parent: ET.Element, feedback: tuple[Feedback, ...]) -> None:
    for fb in feedback:
        _sub(parent, RTCP_FB_NS, "rtcp-fb", type_=fb.type, subtype=fb.subtype)


def _build_description(parent: ET.Element, d: RtpDescription) -> None:
    el = _sub(parent, RTP_NS, "description", media=d.media, ssrc=d.ssrc)
    for pt in d.payload_types:
        p = _sub(
            el,
            RTP_NS,
            "payload-type",
            id=pt.id,
            name=pt.name,
            clockrate=pt.clockrate,
            channels=pt.channels if pt.channels != 1 else None,
            ptime=pt.ptime,
            maxptime=pt.maxptime,
        )
        _build_params(p, RTP_NS, pt.parameters)
        _build_feedback(p, pt.feedback)
    _build_feedback(el, d.feedback)
    for h in d.header_extensions:
        _sub(el, HDREXT_NS, "rtp-hdrext", id=h.id, uri=h.uri, senders=h.senders)
    if d.extmap_allow_mixed:
        _sub(el, HDREXT_NS, "extmap-allow-mixed")
    for s in d.sources:
        _build_params(_sub(el, SSMA_NS, "source", ssrc=s.ssrc), SSMA_NS, s.parameters)
    if d.cryptos:
        enc = _sub(el, RTP_NS, "encryption", required="true" if d.crypto_required else None)
        for c in d.cryptos:
            _sub(
                enc,
                RTP_NS,
                "crypto",
                crypto_suite=c.suite,
                key_params=c.key_params,
                session_params=c.session_params,
                tag=c.tag,
            )
    if d.rtcp_mux:
        _sub(el, RTP_NS, "rtcp-mux")


def _build_candidate(parent: ET.Element, ns: str, c: Candidate) -> None:
    el = _sub(parent, ns, "candidate", component=c.component, generation=c.generation)
    _set(el, id=c.id, ip=c.ip, port=c.port, type_=c.type)
    if ns == ICE_NS:  # XEP-0177's Raw UDP candidates carry none of ICE's fields
        _set(el, foundation=c.foundation, network=c.network, priority=c.priority)
        _set(el, protocol=c.protocol, rel_addr=c.rel_addr, rel_port=c.rel_port)


def _build_transport(parent: ET.Element, t: Transport) -> None:
    if isinstance(t, RawUdpTransport):
        el = _sub(parent, RAW_UDP_NS, "transport")
        for c in t.candidates:
            _build_candidate(el, RAW_UDP_NS, c)
        return
    el = _sub(parent, ICE_NS, "transport", ufrag=t.ufrag, pwd=t.pwd)
    if t.fingerprint is not None:
        fp = _sub(el, DTLS_NS, "fingerprint", hash=t.fingerprint.hash, setup=t.fingerprint.setup)
        fp.text = t.fingerprint.value
    for c in t.candidates:
        _build_candidate(el, ICE_NS, c)


def build_jingle(j: Jingle) -> ET.Element:
    """The ``<jingle/>`` element for ``j`` (to put in an iq ``set``)."""
    el = _set(
        ET.Element(f"{{{JINGLE_NS}}}jingle"),
        action=j.action.value,
        initiator=j.initiator,
        responder=j.responder,
        sid=j.sid,
    )
    for c in j.contents:
        content = _sub(el, JINGLE_NS, "content", creator=c.creator, name=c.name)
        if c.senders != "both":
            content.set("senders", c.senders)
        if c.description is not None:
            _build_description(content, c.description)
        if c.transport is not None:
            _build_transport(content, c.transport)
    for semantics, names in j.groups:
        group = _sub(el, GROUPING_NS, "group", semantics=semantics)
        for name in names:
            _sub(group, GROUPING_NS, "content", name=name)
    if j.reason is not None:
        reason = _sub(el, JINGLE_NS, "reason")
        cond = _sub(reason, JINGLE_NS, j.reason.condition)
        if j.reason.alternative_sid is not None:
            _sub(cond, JINGLE_NS, "sid").text = j.reason.alternative_sid
        if j.reason.text is not None:
            _sub(reason, JINGLE_NS, "text").text = j.reason.text
    if j.info is not None:
        _sub(el, RTP_INFO_NS, j.info.kind, creator=j.info.creator, name=j.info.name)
    return el


def error_element(error: JingleError, *, stanza_ns: str = "jabber:client") -> ET.Element:
    """The ``<error/>`` child of the iq ``type='error'`` answering a refused request: the
    RFC 6120 condition, the XEP-0166 §8 one when there is one, and the text. ``stanza_ns``
    is the stream's (a component's is ``jabber:component:accept``): slixmpp would write an
    element of no namespace as ``xmlns=""``."""
    el = ET.Element(f"{{{stanza_ns}}}error", {"type": error.type})
    ET.SubElement(el, f"{{{STANZAS_NS}}}{error.condition}")
    if error.jingle is not None:
        ET.SubElement(el, f"{{{JINGLE_ERRORS_NS}}}{error.jingle}")
    ET.SubElement(el, f"{{{STANZAS_NS}}}text").text = error.text[:200]
    return el
