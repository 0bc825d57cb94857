"""MUC (XEP-0045) ↔ conference room chat (RFC 7702), sans-IO: stanzas in, events out
(control/xmpp/mucstanzas.py builds what the service sends).

The asyncio glue (:mod:`control.xmpp.mucgw`) feeds every presence, message and muc#admin IQ
addressed to the MUC domain to :func:`parse_presence` / :func:`parse_message` /
:func:`parse_iq`; each returns one event or
raises :class:`MucError`, which carries the stanza error to answer (XEP-0045 §7.2 and §7.4:
``jid-malformed`` for a join without a nick, ``bad-request`` for a groupchat message to an
occupant's full JID or a malformed history request, ``not-acceptable`` for an unusable nick
or a message too large) and mucstanzas.error_reply turns into the reply. Nothing is dropped
silently: what the service takes becomes an event, the rest an error.

Room state is not kept here: the room model (control/conference) is the roster. What an
XMPP occupant is told about the others is a pure function of that model (mucstanzas:
``unique_nicks`` gives every occupant a distinct nick, ``view_changes`` the presences that
bring an occupant's picture up to date).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from xml.etree import ElementTree as ET

from control.msrp.cpim import parse_datetime
from control.msrp.errors import CpimError
from control.xmpp.addressing import AddressRefused, Jid, parse_jid
from control.xmpp.errors import (
    ERROR_TYPES,
    StanzaRefused,
    read_chat_state,
    read_xhtml,
)

__all__ = [
    "COMPONENT_NS",
    "DELAY_NS",
    "MUC_ADMIN_NS",
    "MUC_NS",
    "MUC_USER_NS",
    "Bounced",
    "Declined",
    "GroupMessage",
    "HistoryRequest",
    "Invitation",
    "KickRequest",
    "MucError",
    "MucLeave",
    "MucPresence",
    "PrivateMessage",
    "check_nick",
    "local_name",
    "parse_iq",
    "parse_message",
    "parse_presence",
]

COMPONENT_NS = "jabber:component:accept"  # the stanzas' namespace on a XEP-0114 stream
MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
MUC_ADMIN_NS = "http://jabber.org/protocol/muc#admin"
DELAY_NS = "urn:xmpp:delay"  # XEP-0203
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MAX_NICK = 64  # characters, as a room's NICKNAME (control/conference/nicknames.py)
MAX_BODY = 65536  # characters of one message body ([xmpp] max_message_bytes in the glue)


class MucError(Exception):
    """A stanza the service refuses: answered with ``condition`` (and its RFC 6120 type)."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(text)
        self.condition = condition
        self.text = text

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.condition, "cancel")


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """XEP-0045 §7.2.15 ``<history/>``: None means the service's default for that limit."""

    maxstanzas: int | None = None
    seconds: float | None = None
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class MucPresence:
    """Available presence to ``room/nick``: a join (with ``<x xmlns=muc>``), a nick change or a
    presence update; which one depends on whether the sender is already in the room."""

    sender: Jid
    room: str  # the room's local part, case-folded
    nick: str
    id: str
    joining: bool  # carried <x xmlns='http://jabber.org/protocol/muc'/>
    history: HistoryRequest
    show: str | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class MucLeave:
    """Unavailable presence to the room (XEP-0045 §7.14)."""

    sender: Jid
    room: str
    nick: str | None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A groupchat message to the room: a body, or a new ``subject`` (§8.1), or both."""

    sender: Jid
    room: str
    id: str
    body: str | None
    subject: str | None = None
    state: str | None = None  # XEP-0085 chat state (§5.5: in rooms too)
    xhtml: str | None = None  # XEP-0071 markup, read by control/xmpp/errors.py's checks


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """A ``type="chat"`` message to ``room/nick`` (§7.5): to that occupant only."""

    sender: Jid
    room: str
    nick: str
    id: str
    body: str | None  # None: a chat state alone
    state: str | None = None
    xhtml: str | None = None


@dataclass(frozen=True, slots=True)
class Invitation:
    """An occupant asks the room to invite ``to`` (§7.8.2, mediated)."""

    sender: Jid
    room: str
    id: str
    to: Jid
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Declined:
    """An invitee declines the room's invitation (§7.8.2); ``to`` the inviter, if named."""

    sender: Jid
    room: str
    to: Jid | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Bounced:
    """An error stanza from an occupant's address: what the room sent it did not arrive.
    ``gone`` when the condition says the occupant is no longer there (a "ghost", removed)."""

    sender: Jid
    room: str
    condition: str | None
    gone: bool


# Conditions of a bounce that mean the occupant's client or server is gone (RFC 6120 §8.3.3).
GONE_CONDITIONS = frozenset(
    {
        "gone",
        "item-not-found",
        "recipient-unavailable",
        "remote-server-not-found",
        "remote-server-timeout",
        "service-unavailable",
    }
)


def _bounce(stanza: ET.Element, muc_domain: str) -> Bounced | None:
    """An error stanza never gets an answer (RFC 6120 §8.3.1); None when it is not from a
    room's occupant address space at all."""
    try:
        sender, recipient = _addresses(stanza, muc_domain)
    except MucError:
        return None
    error = _child(stanza, "error")
    condition = None
    if error is not None:
        condition = next(
            (
                local_name(c.tag)
                for c in error
                if c.tag.startswith(f"{{{STANZAS_NS}}}") and local_name(c.tag) != "text"
            ),
            None,
        )
    return Bounced(sender, (recipient.local or "").lower(), condition, condition in GONE_CONDITIONS)


@dataclass(frozen=True, slots=True)
class KickRequest:
    """A moderator's muc#admin ``<item nick=… role='none'/>`` (§8.2): remove that occupant."""

    sender: Jid
    room: str
    id: str
    nick: str
    reason: str | None = None


# --- parsing ---------------------------------------------------------------------------------


def local_name(tag: object) -> str:
    return tag.split("}", 1)[-1] if isinstance(tag, str) else ""


def _child(stanza: ET.Element, name: str) -> ET.Element | None:
    """A child in the stanza's own namespace (jabber:client or the component's)."""
    namespace = stanza.tag[1:].split("}", 1)[0] if stanza.tag.startswith("{") else ""
    return stanza.find(f"{{{namespace}}}{name}" if namespace else name)


def _text(stanza: ET.Element, name: str) -> str | None:
    element = _child(stanza, name)
    return None if element is None else (element.text or "")


def _addresses(stanza: ET.Element, muc_domain: str) -> tuple[Jid, Jid]:
    try:
        sender = parse_jid(stanza.get("from") or "")
        recipient = parse_jid(stanza.get("to") or "")
    except AddressRefused as exc:
        raise MucError("jid-malformed", exc.reason) from None
    if recipient.domain != muc_domain.lower():
        raise MucError("item-not-found", f"{recipient.domain} is not this MUC service")
    if recipient.local is None:
        raise MucError("item-not-found", "no room named: this is the MUC service itself")
    return sender, recipient


def check_nick(nick: str | None) -> str:
    """A usable occupant nick (the room's nickname rules); ``jid-malformed`` when absent,
    ``not-acceptable`` when empty, too long or holding control characters."""
    if nick is None:
        raise MucError("jid-malformed", "no nickname: join room@service/nick (XEP-0045 §7.2.1)")
    text = nick.strip()
    if not text or len(text) > MAX_NICK:
        raise MucError("not-acceptable", f"a nickname is 1 to {MAX_NICK} characters")
    if any(unicodedata.category(c).startswith("C") for c in text):
        raise MucError("not-acceptable", "control character in nickname")
    return text


def _history(x: ET.Element | None) -> HistoryRequest:
    element = None if x is None else x.find(f"{{{MUC_NS}}}history")
    if element is None:
        return HistoryRequest()

    def number(name: str) -> int | None:
        value = element.get(name)
        if value is None:
            return None
        if not value.strip().isdigit():
            raise MucError("bad-request", f"history {name}={value[:20]!r} is not a count")
        return int(value)

    maxstanzas = number("maxstanzas")
    seconds = number("seconds")
    if number("maxchars") == 0:  # §7.2.15: maxchars='0' asks for no history at all
        maxstanzas = 0
    since = None
    if element.get("since") is not None:
        try:
            since = parse_datetime(element.get("since") or "")
        except (CpimError, ValueError):
            raise MucError("bad-request", "history since is not a date-time") from None
    return HistoryRequest(maxstanzas, float(seconds) if seconds is not None else None, since)


def parse_presence(
    stanza: ET.Element, *, muc_domain: str
) -> MucPresence | MucLeave | Bounced | None:
    """One presence to the MUC domain; None for what needs no answer (an error bounce, a
    subscription request to the service)."""
    kind = stanza.get("type") or "available"
    if kind == "error":
        return _bounce(stanza, muc_domain)
    if kind not in ("available", "unavailable"):
        return None  # subscriptions to a room mean nothing (XEP-0045 has none)
    sender, recipient = _addresses(stanza, muc_domain)
    room = (recipient.local or "").lower()
    if kind == "unavailable":
        return MucLeave(sender, room, recipient.resource, _text(stanza, "status"))
    nick = check_nick(recipient.resource)
    x = stanza.find(f"{{{MUC_NS}}}x")
    show = _text(stanza, "show")
    return MucPresence(
        sender,
        room,
        nick,
        stanza.get("id") or "",
        joining=x is not None,
        history=_history(x),
        show=show if show in ("away", "chat", "dnd", "xa") else None,
        status=_text(stanza, "status"),
    )


def parse_message(
    stanza: ET.Element, *, muc_domain: str, max_body: int = MAX_BODY
) -> GroupMessage | PrivateMessage | Invitation | Declined | Bounced | None:
    """One message to the MUC domain; None for an error bounce (nothing to answer)."""
    kind = stanza.get("type") or "normal"
    if kind == "error":
        return _bounce(stanza, muc_domain)
    sender, recipient = _addresses(stanza, muc_domain)
    room = (recipient.local or "").lower()
    body = _text(stanza, "body")
    if body is not None and len(body) > max_body:
        raise MucError("not-acceptable", f"message body over {max_body} characters")
    stanza_id = stanza.get("id") or ""
    try:
        state = read_chat_state(stanza)
        xhtml = read_xhtml(stanza, has_body=body is not None)
    except StanzaRefused as exc:
        raise MucError(exc.condition, exc.text) from None
    if kind == "groupchat":
        if recipient.resource is not None:  # §7.4: groupchat goes to the room, not a nick
            raise MucError("bad-request", "groupchat message to an occupant's full JID")
        subject = _text(stanza, "subject")
        if body is None and subject is None and state is None:
            raise MucError("bad-request", "groupchat message with no body, subject or state")
        return GroupMessage(sender, room, stanza_id, body, subject, state, xhtml)
    if kind in ("chat", "normal") and recipient.resource is not None:
        if body is None and state is None:
            raise MucError("bad-request", "private message without a body or chat state")
        return PrivateMessage(sender, room, recipient.resource, stanza_id, body, state, xhtml)
    x = stanza.find(f"{{{MUC_USER_NS}}}x")
    if kind == "normal" and x is not None and recipient.resource is None:
        return _mediated(x, sender, room, stanza_id)
    raise MucError("bad-request", f"a {kind} message to the room itself")


def parse_iq(stanza: ET.Element, *, muc_domain: str) -> KickRequest | None:
    """A muc#admin IQ to a room: a kick (role none, §8.2) is the one carried; other admin
    requests are ``feature-not-implemented``; a result or error IQ is None (no answer)."""
    kind = stanza.get("type") or ""
    if kind in ("result", "error"):
        return None
    sender, recipient = _addresses(stanza, muc_domain)
    query = stanza.find(f"{{{MUC_ADMIN_NS}}}query")
    if kind != "set" or query is None:
        raise MucError("feature-not-implemented", "only muc#admin kicks (role none) are carried")
    items = query.findall(f"{{{MUC_ADMIN_NS}}}item")
    if len(items) != 1:
        raise MucError("bad-request", "one muc#admin item at a time")
    item = items[0]
    nick = item.get("nick")
    if item.get("role") != "none" or not nick:
        raise MucError("feature-not-implemented", "only kicks (an item with a nick, role none)")
    reason = item.findtext(f"{{{MUC_ADMIN_NS}}}reason")
    return KickRequest(
        sender, (recipient.local or "").lower(), stanza.get("id") or "", nick, reason
    )


def _mediated(x: ET.Element, sender: Jid, room: str, stanza_id: str) -> Invitation | Declined:
    """§7.8.2 a mediated invitation (``<invite to=…/>``), §7.8.2 its decline."""
    invite = x.find(f"{{{MUC_USER_NS}}}invite")
    decline = x.find(f"{{{MUC_USER_NS}}}decline")
    element = invite if invite is not None else decline
    if element is None:
        raise MucError("bad-request", "a muc#user message with neither invite nor decline")
    reason = element.findtext(f"{{{MUC_USER_NS}}}reason")
    address = element.get("to")
    try:
        to = parse_jid(address) if address else None
    except AddressRefused as exc:
        raise MucError("jid-malformed", exc.reason) from None
    if invite is not None:
        if to is None:
            raise MucError("bad-request", "an invitation names no invitee (to)")
        return Invitation(sender, room, stanza_id, to, reason)
    return Declined(sender, room, to, reason)
