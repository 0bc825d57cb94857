"""MUC (XEP-0045), sans-IO: what the service sends — occupants' presences and the picture
each occupant is told (distinct nicks, the presence differences when the room changes),
room messages, private messages, the subject, invitations, IQ results and error replies —
as ElementTree elements in the component stream's namespace. control/xmpp/muc.py parses
what comes in.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.etree import ElementTree as ET

from control.msrp.cpim import format_datetime
from control.xmpp.addressing import Jid
from control.xmpp.errors import CHATSTATES_NS
from control.xmpp.muc import (
    COMPONENT_NS,
    DELAY_NS,
    MUC_NS,
    MUC_USER_NS,
    STANZAS_NS,
    MucError,
    local_name,
)

__all__ = [
    "KICKED",
    "NICK_CHANGED",
    "ROOM_GONE",
    "SELF",
    "Occupant",
    "ViewChange",
    "declined",
    "error_reply",
    "fold",
    "groupchat",
    "invitation",
    "iq_result",
    "occupant_presence",
    "private_chat",
    "room_gone",
    "subject_message",
    "unique_nicks",
    "view_changes",
]

# XEP-0045 §15.6 status codes the service sends.
SELF = 110  # this presence is about you
NICK_CHANGED = 303  # the occupant's nick is now item/@nick
KICKED = 307  # removed from the room (a moderator's REFER method=BYE)
ROOM_GONE = 332  # removed because the room (the SIP conference) ended

# --- occupants -------------------------------------------------------------------------------


def fold(nick: str) -> str:
    """Nicks compare as room nicknames do: NFKC, case-folded, outer spaces stripped."""
    return unicodedata.normalize("NFKC", nick).casefold().strip()


@dataclass(frozen=True, slots=True)
class Occupant:
    """One occupant as the room model shows it: a SIP participant or an XMPP user."""

    id: str  # stable while it is in the room: a participant id, or the XMPP identity key
    nick: str
    affiliation: str = "none"  # XEP-0045 §5.2: owner, admin, member, none
    role: str = "participant"  # XEP-0045 §5.1: moderator, participant, visitor
    show: str | None = None
    status: str | None = None


def unique_nicks(wanted: Sequence[tuple[str, str]]) -> dict[str, str]:
    """A distinct nick per occupant id from (id, wanted nick) in the order given: the first
    keeps its nick, a later clash (two SIP callers both "Alice") becomes "Alice (2)", … so
    every occupant JID names one occupant (XEP-0045 §7.2.9)."""
    taken: set[str] = set()
    out: dict[str, str] = {}
    for occupant_id, nick in wanted:
        candidate, n = nick, 1
        while fold(candidate) in taken:
            n += 1
            candidate = f"{nick} ({n})"
        taken.add(fold(candidate))
        out[occupant_id] = candidate
    return out


@dataclass(frozen=True, slots=True)
class ViewChange:
    """One presence to send: ``occupant`` is available (or, ``gone``, unavailable); a nick
    change is the unavailable presence of the old nick with 303 and the new one (§7.6)."""

    occupant: Occupant
    gone: bool = False
    new_nick: str | None = None


def view_changes(told: Mapping[str, Occupant], now: Mapping[str, Occupant]) -> list[ViewChange]:
    """What brings an occupant who was ``told`` up to the room's occupants ``now``: leaves
    first, then nick changes, then joins and updates, each occupant at most once."""
    changes = [ViewChange(old, gone=True) for key, old in told.items() if key not in now]
    for key, occupant in now.items():
        old = told.get(key)
        if old is not None and old.nick != occupant.nick:
            changes.append(ViewChange(old, gone=True, new_nick=occupant.nick))
            changes.append(ViewChange(occupant))
    changes += [
        ViewChange(occupant)
        for key, occupant in now.items()
        if told.get(key) is None or (told[key].nick == occupant.nick and told[key] != occupant)
    ]
    return changes


# --- building --------------------------------------------------------------------------------


def _stanza(name: str, to: Jid | str, from_: Jid | str, **attrs: str) -> ET.Element:
    element = ET.Element(f"{{{COMPONENT_NS}}}{name}", {"to": str(to), "from": str(from_)})
    for key, value in attrs.items():
        if value:
            element.set(key, value)
    return element


def _sub(parent: ET.Element, name: str, text: str | None = None) -> ET.Element:
    element = ET.SubElement(parent, f"{{{COMPONENT_NS}}}{name}")
    element.text = text
    return element


def occupant_presence(
    to: Jid,
    room: Jid,
    occupant: Occupant,
    *,
    self_: bool = False,
    gone: bool = False,
    new_nick: str | None = None,
    codes: Iterable[int] = (),
    reason: str | None = None,
) -> ET.Element:
    """The presence of ``occupant`` (from ``room/nick``) to one XMPP occupant: available with
    its affiliation and role (§7.2.3), or unavailable with role none (§7.14); ``self_`` adds
    status 110, ``new_nick`` 303 and ``item/@nick`` (§7.6)."""
    stanza = _stanza(
        "presence",
        to,
        Jid(room.local, room.domain, occupant.nick),
        type="unavailable" if gone else "",
    )
    if not gone and occupant.show:
        _sub(stanza, "show", occupant.show)
    if not gone and occupant.status:
        _sub(stanza, "status", occupant.status)
    x = ET.SubElement(stanza, f"{{{MUC_USER_NS}}}x")
    item = ET.SubElement(
        x,
        f"{{{MUC_USER_NS}}}item",
        {"affiliation": occupant.affiliation, "role": "none" if gone else occupant.role},
    )
    if new_nick is not None:
        item.set("nick", new_nick)
    if reason:
        ET.SubElement(item, f"{{{MUC_USER_NS}}}reason").text = reason
    all_codes = [*([NICK_CHANGED] if new_nick is not None else []), *codes]
    if self_:
        all_codes.append(SELF)
    for code in sorted(set(all_codes)):
        ET.SubElement(x, f"{{{MUC_USER_NS}}}status", {"code": str(code)})
    return stanza


def _body(stanza: ET.Element, body: str | None, xhtml: str | None, state: str | None) -> None:
    if body is not None:
        _sub(stanza, "body", body)
    if state is not None:  # XEP-0085
        ET.SubElement(stanza, f"{{{CHATSTATES_NS}}}{state}")
    if xhtml is not None:  # XEP-0071, as control/xmpp/component.py writes it for chat
        try:
            inner = ET.fromstring(f'<body xmlns="http://www.w3.org/1999/xhtml">{xhtml}</body>')
        except ET.ParseError:
            return
        html = ET.SubElement(stanza, "{http://jabber.org/protocol/xhtml-im}html")
        html.append(inner)


def groupchat(
    to: Jid,
    room: Jid,
    nick: str | None,
    body: str | None,
    *,
    id: str,
    xhtml: str | None = None,
    state: str | None = None,
    delay: datetime | None = None,
) -> ET.Element:
    """A room message from ``room/nick`` (``nick`` None: from the room itself, §7.2.16); a
    replayed one carries its original time as XEP-0203 ``<delay from=room/>`` (§7.2.15)."""
    sender = Jid(room.local, room.domain, nick) if nick else room
    stanza = _stanza("message", to, sender, type="groupchat", id=id)
    _body(stanza, body, xhtml, state)
    if delay is not None:
        ET.SubElement(
            stanza, f"{{{DELAY_NS}}}delay", {"from": room.bare, "stamp": format_datetime(delay)}
        )
    return stanza


def private_chat(
    to: Jid,
    room: Jid,
    nick: str,
    body: str | None,
    *,
    id: str,
    xhtml: str | None = None,
    state: str | None = None,
) -> ET.Element:
    """A private message from occupant ``nick`` (§7.5), marked with ``<x xmlns=muc#user/>``."""
    stanza = _stanza("message", to, Jid(room.local, room.domain, nick), type="chat", id=id)
    _body(stanza, body, xhtml, state)
    ET.SubElement(stanza, f"{{{MUC_USER_NS}}}x")
    return stanza


def invitation(to: Jid, room: Jid, inviter: str, reason: str | None, *, id: str) -> ET.Element:
    """The room's mediated invitation to ``to`` (§7.8.2): ``<invite from=inviter/>``."""
    return _mediated("invite", to, room, inviter, reason, id)


def declined(to: Jid, room: Jid, invitee: str, reason: str | None, *, id: str) -> ET.Element:
    """An invitation declined, to its inviter (§7.8.2): ``<decline from=invitee/>``."""
    return _mediated("decline", to, room, invitee, reason, id)


def _mediated(kind: str, to: Jid, room: Jid, from_: str, reason: str | None, id: str) -> ET.Element:
    stanza = _stanza("message", to, room, id=id)
    x = ET.SubElement(stanza, f"{{{MUC_USER_NS}}}x")
    element = ET.SubElement(x, f"{{{MUC_USER_NS}}}{kind}", {"from": from_})
    if reason:
        ET.SubElement(element, f"{{{MUC_USER_NS}}}reason").text = reason
    return stanza


def subject_message(to: Jid, room: Jid, nick: str | None, subject: str, *, id: str) -> ET.Element:
    """The room's subject (§7.2.15: sent last on join, empty when there is none; §8.1)."""
    sender = Jid(room.local, room.domain, nick) if nick else room
    stanza = _stanza("message", to, sender, type="groupchat", id=id)
    _sub(stanza, "subject", subject)
    return stanza


def room_gone(to: Jid, room: Jid, occupant: Occupant, reason: str) -> ET.Element:
    """The occupant's own unavailable presence when the conference ended (§10.9 destroy)."""
    stanza = occupant_presence(to, room, occupant, self_=True, gone=True, codes=(ROOM_GONE,))
    x = stanza.find(f"{{{MUC_USER_NS}}}x")
    assert x is not None
    ET.SubElement(
        ET.SubElement(x, f"{{{MUC_USER_NS}}}destroy"), f"{{{MUC_USER_NS}}}reason"
    ).text = reason
    return stanza


def error_reply(stanza: ET.Element, error: MucError, *, muc_domain: str) -> ET.Element | None:
    """The error answer to ``stanza`` (RFC 6120 §8.3): to its sender, from the address it was
    sent to, same id, ``<error by=room>`` with the condition and a text (§7.2.9's conflict
    keeps the ``<x xmlns=muc/>`` of the join). None for an error stanza (never answered)."""
    if stanza.get("type") == "error":
        return None
    name = local_name(stanza.tag) or "message"
    sender = stanza.get("from")
    if not sender:
        return None
    to = stanza.get("to") or muc_domain
    reply = ET.Element(f"{{{COMPONENT_NS}}}{name}", {"to": sender, "from": to, "type": "error"})
    if stanza.get("id"):
        reply.set("id", stanza.get("id") or "")
    if name == "presence" and stanza.find(f"{{{MUC_NS}}}x") is not None:
        ET.SubElement(reply, f"{{{MUC_NS}}}x")
    by = to.split("/", 1)[0]
    element = ET.SubElement(reply, f"{{{COMPONENT_NS}}}error", {"type": error.type, "by": by})
    ET.SubElement(element, f"{{{STANZAS_NS}}}{error.condition}")
    ET.SubElement(element, f"{{{STANZAS_NS}}}text").text = error.text
    return reply


def iq_result(stanza: ET.Element) -> ET.Element:
    """The empty result of an IQ set (RFC 6120 §8.2.3): addresses swapped, same id."""
    return _stanza(
        "iq",
        stanza.get("from") or "",
        stanza.get("to") or "",
        type="result",
        id=stanza.get("id") or "",
    )
