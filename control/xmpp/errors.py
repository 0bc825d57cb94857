"""Stanzas the gateway refuses, and the XMPP error it answers with (RFC 6120 §8.3), sans-IO.

A message stanza reaches the component already parsed by slixmpp; before anything maps it to
SIP, :func:`check_message` reads what the gateway relies on and raises :class:`StanzaRefused`
with the condition to answer:

- ``policy-violation`` for a stanza over ``[xmpp] max_stanza_bytes`` (RFC 6120 §8.3.3.12: a
  local service policy; the size limit is ours, not the sender's fault of syntax);
- ``bad-request`` for a chat-state payload that is not one of XEP-0085's five states, or
  more than one of them (XEP-0085: one per message);
- ``bad-request`` for XHTML-IM without an XHTML ``<body/>`` or without the plain ``<body/>``
  every XHTML-IM message carries too (XEP-0071's business rules); ``not-acceptable`` for
  markup the gateway does not pass on (scripts, objects, frames: XEP-0071's security
  considerations) or nested deeper than :data:`MAX_XHTML_DEPTH`;
- ``jid-malformed`` for a missing or malformed ``to``/``from`` (RFC 6120 §8.3.3.8).

:func:`refusal_for` turns what the mapping layers raise (an address not served, a body the SIP
side cannot take, a SIP side that is down, a bug) into a refusal, and :func:`error_stanza`
builds the ``type="error"`` reply: addressed back to the sender, from the address the stanza
was sent to when that is ours, else from the component (RFC 6120 §8.3.1: swap the addresses,
keep the id; never an error in reply to an error, §8.3.1 rule 3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree import ElementTree as ET

from control.xmpp.addressing import AddressRefused, Jid, parse_jid
from control.xmpp.messages import MessageRefused

__all__ = [
    "CHATSTATES_NS",
    "CHAT_STATES",
    "ERROR_TYPES",
    "MAX_XHTML_DEPTH",
    "STANZAS_NS",
    "XHTML_IM_NS",
    "XHTML_NS",
    "CheckedMessage",
    "ErrorReply",
    "StanzaLimits",
    "StanzaRefused",
    "check_message",
    "error_stanza",
    "error_type",
    "read_chat_state",
    "read_xhtml",
    "refusal_for",
]

STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")
XHTML_IM_NS = "http://jabber.org/protocol/xhtml-im"
XHTML_NS = "http://www.w3.org/1999/xhtml"
MAX_XHTML_DEPTH = 32  # deeper markup is no chat formatting; it only costs the SIP side
# XEP-0071 (security considerations): what a receiver must not run; not carried to SIP.
_XHTML_REFUSED = frozenset(
    {"script", "object", "embed", "applet", "iframe", "frame", "frameset", "style", "form"}
)

# RFC 6120 §8.3.3: the error type each defined condition is given with. service-unavailable
# is "wait" here, not the RFC's example "cancel": the gateway says it when its SIP side is
# down or the XMPP server connection is not up, which passes.
ERROR_TYPES: dict[str, str] = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "wait",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


def error_type(condition: str) -> str:
    """The ``<error type=…>`` for ``condition`` (RFC 6120 §8.3.2); unknown ones ``cancel``."""
    return ERROR_TYPES.get(condition, "cancel")


class StanzaRefused(Exception):
    """A stanza the gateway will not carry: the RFC 6120 condition and a short text."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(f"{condition}: {text}")
        if condition not in ERROR_TYPES:
            raise ValueError(f"{condition!r} is not an RFC 6120 §8.3.3 condition")
        self.condition = condition
        self.text = text

    @property
    def type(self) -> str:
        return error_type(self.condition)


@dataclass(frozen=True, slots=True)
class StanzaLimits:
    """``max_stanza_bytes``: the serialised stanza (``[xmpp] max_stanza_bytes``)."""

    max_stanza_bytes: int = 262144


@dataclass(frozen=True, slots=True)
class CheckedMessage:
    """What :func:`check_message` read from a message stanza: both addresses, the chat state
    and the XHTML-IM markup (the inner markup of the XHTML ``<body/>``)."""

    sender: Jid
    recipient: Jid
    state: str | None
    xhtml: str | None


def refusal_for(exc: BaseException) -> StanzaRefused:
    """The refusal for what the mapping raised: its own condition when it carries one (an
    address not served, a body SIP cannot take), ``service-unavailable`` when the SIP side or
    the server connection is down, ``internal-server-error`` for anything else (a bug: the
    sender still hears of it, once)."""
    match exc:
        case StanzaRefused():
            return exc
        case AddressRefused() | MessageRefused():
            return StanzaRefused(exc.condition, exc.reason)
        case TimeoutError():  # before OSError: it is one
            return StanzaRefused("remote-server-timeout", "the SIP side did not answer")
        case ConnectionError() | OSError():
            return StanzaRefused("service-unavailable", "the SIP side is not reachable")
    return StanzaRefused("internal-server-error", f"the gateway failed: {type(exc).__name__}")


def _local(element: ET.Element) -> str:
    tag = element.tag if isinstance(element.tag, str) else ""
    return tag.split("}", 1)[-1]


def _address(xml: ET.Element, name: str) -> Jid:
    text = xml.get(name)
    if not text:
        raise StanzaRefused("jid-malformed", f"no '{name}' address")
    try:
        return parse_jid(text)
    except AddressRefused as exc:
        raise StanzaRefused("jid-malformed", f"'{name}': {exc.reason}") from None


def read_chat_state(xml: ET.Element) -> str | None:
    """The XEP-0085 chat state of the message: None, or one of :data:`CHAT_STATES`."""
    states = [
        child.tag.split("}", 1)[1]
        for child in xml
        if isinstance(child.tag, str) and child.tag.startswith(f"{{{CHATSTATES_NS}}}")
    ]
    if not states:
        return None
    if len(states) > 1:
        raise StanzaRefused("bad-request", "more than one chat state (XEP-0085)")
    if states[0] not in CHAT_STATES:
        raise StanzaRefused("bad-request", f"unknown chat state {states[0][:40]!r}")
    return states[0]


def _depth(element: ET.Element, limit: int) -> Iterable[ET.Element]:
    """Every element under ``element``, refusing markup nested deeper than ``limit``."""
    stack = [(element, 0)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            raise StanzaRefused("not-acceptable", f"XHTML-IM nested deeper than {limit}")
        yield node
        stack.extend((child, level + 1) for child in node)


def read_xhtml(xml: ET.Element, *, has_body: bool) -> str | None:
    """The inner markup of the XHTML-IM body (XEP-0071), None when the message has none."""
    html = xml.find(f"{{{XHTML_IM_NS}}}html")
    if html is None:
        return None
    bodies = html.findall(f"{{{XHTML_NS}}}body")
    if not bodies:
        raise StanzaRefused("bad-request", "XHTML-IM <html/> without an XHTML <body/>")
    if not has_body:
        raise StanzaRefused("bad-request", "XHTML-IM without the plain <body/> (XEP-0071)")
    body = bodies[0]
    for node in _depth(body, MAX_XHTML_DEPTH):
        name = _local(node).lower()
        if name in _XHTML_REFUSED:
            raise StanzaRefused("not-acceptable", f"XHTML-IM <{name[:40]}/> is not carried")
    inner = (body.text or "") + "".join(
        ET.tostring(child, encoding="unicode", default_namespace=XHTML_NS) for child in body
    )
    return inner or None


def check_message(xml: ET.Element, *, size: int, limits: StanzaLimits) -> CheckedMessage:
    """Read a message stanza for the gateway (module doc), or :class:`StanzaRefused`.
    ``size`` is the stanza's serialised length in bytes."""
    if size > limits.max_stanza_bytes:
        raise StanzaRefused(
            "policy-violation", f"stanza of {size} bytes, over {limits.max_stanza_bytes}"
        )
    sender = _address(xml, "from")
    recipient = _address(xml, "to")
    has_body = any(_local(child) == "body" for child in xml)  # the plain one: a direct child
    return CheckedMessage(
        sender=sender,
        recipient=recipient,
        state=read_chat_state(xml),
        xhtml=read_xhtml(xml, has_body=has_body),
    )


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """An error stanza to send: ``kind`` "message" or "presence", addressed, the original id."""

    kind: str
    to: Jid
    from_: str
    id: str
    type: str
    condition: str
    text: str


def error_stanza(
    original: ET.Element, refused: StanzaRefused, *, component: str, ours: frozenset[str]
) -> ErrorReply | None:
    """The error reply to ``original`` (a message or presence element), or None when none may
    be sent: the original is an error itself, or has no sender to send it to. It comes from
    the original's ``to`` when that is a JID in ``ours`` (the domains the component serves),
    else from ``component`` (the server would refuse any other ``from`` of ours)."""
    if original.get("type") == "error":
        return None
    try:
        sender = parse_jid(original.get("from") or "")
    except AddressRefused:
        return None
    reply_from = component
    try:
        recipient = parse_jid(original.get("to") or "")
        if recipient.domain in ours:
            reply_from = str(recipient)
    except AddressRefused:
        pass
    return ErrorReply(
        kind="presence" if _local(original) == "presence" else "message",
        to=sender,
        from_=reply_from,
        id=original.get("id") or "",
        type=refused.type,
        condition=refused.condition,
        text=refused.text[:200],
    )
