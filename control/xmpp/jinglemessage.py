"""Jingle Message Initiation (XEP-0353), sans-IO: the ``<message/>`` payloads modern clients
(Conversations, Dino, Monal) exchange before any Jingle iq, read and built.

A client does not send a session-initiate to a bare JID such as ``alice@sip.example``: it
sends ``<propose id=…>`` with the RTP ``<description media='audio'/>`` of the call in a
``type='chat'`` message, and sends the session-initiate (whose sid is the propose's id) only
to the full JID that answers ``<proceed/>``. The other payloads: ``<retract/>`` (the caller
gives up), ``<reject/>`` (the callee declines, optionally with a Jingle ``<reason/>``),
``<ringing/>``, ``<accept/>`` (another device of the callee took it) and ``<finish/>`` (the
call is over, with its reason and, for a migrated call, ``<migrated to=…/>``).

Every message carrying one is ``type='chat'`` with a XEP-0334 ``<store/>`` hint (XEP-0353
§3), which :func:`jingle_message` adds. A payload without ``id``, or a propose without a
description, is :class:`~control.xmpp.jingle.JingleError` ``bad-request``.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree as ET

from control.xmpp.jingle import JINGLE_NS, REASONS, RTP_NS, JingleError, Reason

__all__ = [
    "HINTS_NS",
    "JMI_KINDS",
    "JMI_NS",
    "JingleMessage",
    "jingle_message",
    "read_jingle_message",
]

JMI_NS = "urn:xmpp:jingle-message:0"
HINTS_NS = "urn:xmpp:hints"
JMI_KINDS = frozenset({"propose", "retract", "accept", "proceed", "reject", "ringing", "finish"})
_MAX_DESCRIPTIONS = 8  # audio and video at most in practice; more is abuse


@dataclass(frozen=True, slots=True)
class JingleMessage:
    """One XEP-0353 payload. ``media`` are the RTP descriptions' media of a propose (an
    application of another namespace is listed as ``"{ns}"``); ``reason`` is that of a
    retract, reject or finish; ``migrated_to`` the new sid of a finish for a migrated call."""

    kind: str
    id: str
    media: tuple[str, ...] = ()
    reason: Reason | None = None
    migrated_to: str | None = None

    @property
    def audio(self) -> bool:
        return "audio" in self.media


def _reason(el: ET.Element) -> Reason | None:
    reason = el.find(f"{{{JINGLE_NS}}}reason")
    if reason is None:
        return None
    text = reason.findtext(f"{{{JINGLE_NS}}}text")
    for child in reason:
        local = child.tag.split("}", 1)[-1] if isinstance(child.tag, str) else ""
        if child.tag == f"{{{JINGLE_NS}}}{local}" and local in REASONS:
            return Reason(local, text[:1024] if text else None)
    return None  # an unknown condition: the payload still counts, its reason does not


def _ns(tag: str) -> str:
    return tag.split("}", 1)[0] + "}"


def read_jingle_message(message: ET.Element) -> JingleMessage | None:
    """The XEP-0353 payload of a message stanza, None when it has none."""
    for child in message:
        tag = child.tag if isinstance(child.tag, str) else ""
        if not tag.startswith(f"{{{JMI_NS}}}"):
            continue
        kind = tag.split("}", 1)[1]
        if kind not in JMI_KINDS:
            continue
        ident = child.get("id")
        if not ident:
            raise JingleError("bad-request", f"<{kind}/> without 'id' (XEP-0353)")
        media: tuple[str, ...] = ()
        if kind == "propose":
            found = [d for d in child if isinstance(d.tag, str) and d.tag.endswith("}description")]
            if not found:
                raise JingleError("bad-request", "<propose/> without a <description/>")
            if len(found) > _MAX_DESCRIPTIONS:
                raise JingleError("policy-violation", "too many descriptions in <propose/>")
            media = tuple(
                (d.get("media") or "") if d.tag == f"{{{RTP_NS}}}description" else _ns(d.tag)
                for d in found
            )
        migrated = child.find(f"{{{JMI_NS}}}migrated")
        return JingleMessage(
            kind=kind,
            id=ident,
            media=media,
            reason=_reason(child),
            migrated_to=migrated.get("to") if migrated is not None else None,
        )
    return None


def jingle_message(m: JingleMessage) -> list[ET.Element]:
    """The children to put in a ``type='chat'`` message for ``m``: the payload, then the
    ``<store/>`` hint."""
    if m.kind not in JMI_KINDS:
        raise ValueError(f"not a XEP-0353 payload: {m.kind!r}")
    el = ET.Element(f"{{{JMI_NS}}}{m.kind}", {"id": m.id})
    for media in m.media:
        ET.SubElement(el, f"{{{RTP_NS}}}description", {"media": media})
    if m.reason is not None:
        reason = ET.SubElement(el, f"{{{JINGLE_NS}}}reason")
        ET.SubElement(reason, f"{{{JINGLE_NS}}}{m.reason.condition}")
        if m.reason.text is not None:
            ET.SubElement(reason, f"{{{JINGLE_NS}}}text").text = m.reason.text
    if m.migrated_to is not None:
        ET.SubElement(el, f"{{{JMI_NS}}}migrated", {"to": m.migrated_to})
    return [el, ET.Element(f"{{{HINTS_NS}}}store")]
