"""SIP presence (PIDF, RFC 3863; RPID, RFC 4480) ↔ XMPP presence (RFC 6121), sans-IO
(RFC 8048): documents, per-resource state and the retry policy toward the SIP side.

- XMPP → PIDF: :func:`build_pidf` writes one ``<tuple>`` per available resource (RFC 8048
  §6.2): ``<basic>open</basic>``, the resource's address as ``<contact>`` (the SIP URI with
  its ``gr`` parameter), the XMPP ``<status/>`` as ``<note>``. RFC 8048 maps availability
  only; the ``<show/>`` values go to RPID activities in the tuple (away and xa → ``away``,
  dnd → ``busy``) so a richer watcher sees them. No resource available: a single closed tuple.
- PIDF → XMPP: :func:`parse_pidf` (the hardened parser of control/xmlsafe.py) gives each
  tuple as a resource (its id) with its availability, show (from RPID activities) and status
  (the tuple's note, else the document's or the person's).
- :class:`PresenceView`: what one watcher knows of one presentity, resource by resource.
- :class:`RetryPolicy`: SUBSCRIBEs toward a SIP side that does not answer (408, 5xx) are
  spaced out, doubling to a cap, instead of sent again at once (the "backed off, not
  hammered" rule); a refusal (403, 404, 489 …) is final and becomes XMPP ``unsubscribed``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from lxml import etree

from control import xmlsafe

__all__ = [
    "PIDF_CONTENT_TYPE",
    "PresenceRefused",
    "PresenceView",
    "ResourcePresence",
    "RetryPolicy",
    "build_pidf",
    "parse_pidf",
    "retryable",
    "termination_action",
    "tuple_id",
]

PIDF_CONTENT_TYPE = "application/pidf+xml"
PIDF_NS = "urn:ietf:params:xml:ns:pidf"
DM_NS = "urn:ietf:params:xml:ns:pidf:data-model"
RPID_NS = "urn:ietf:params:xml:ns:pidf:rpid"
MAX_PIDF_BYTES = 64 * 1024  # one presentity's tuples; a larger NOTIFY body is abuse
MAX_TUPLES = 32  # resources kept per presentity; more are dropped, lowest in document order
MAX_STATUS = 1024  # characters of a note / status carried across

SHOWS = ("away", "chat", "dnd", "xa")
_ACTIVITY_FOR_SHOW = {"away": "away", "xa": "away", "dnd": "busy"}
# RFC 4480 §3.2 activities read back as a show: busy-like ones are dnd, absent-like ones away.
_SHOW_FOR_ACTIVITY = {
    "away": "away",
    "vacation": "xa",
    "busy": "dnd",
    "on-the-phone": "dnd",
    "meeting": "dnd",
    "performance": "dnd",
    "appointment": "away",
    "sleeping": "xa",
}


class PresenceRefused(Exception):
    """A PIDF document we will not read: answered with ``sip_status`` (400 or 413)."""

    def __init__(self, reason: str, *, sip_status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sip_status = sip_status


@dataclass(frozen=True, slots=True)
class ResourcePresence:
    """One resource (XMPP) or tuple (PIDF): available or not, show and status text."""

    available: bool = True
    show: str | None = None  # RFC 6121 §4.7.2.1: away, chat, dnd, xa; None is plain online
    status: str | None = None


UNAVAILABLE = ResourcePresence(available=False)


def tuple_id(resource: str) -> str:
    """A PIDF tuple id (an xs:ID) for an XMPP resource: stable and always a valid NCName."""
    return "r" + hashlib.sha1(resource.encode()).hexdigest()[:16]


def build_pidf(entity: str, tuples: Mapping[str, tuple[str, ResourcePresence]]) -> bytes:
    """The PIDF document for ``entity`` (a SIP URI): ``tuples`` maps each resource to its
    contact URI and presence; unavailable resources are left out (RFC 8048 §6.2)."""
    nsmap = {None: PIDF_NS, "rpid": RPID_NS}
    root = etree.Element(f"{{{PIDF_NS}}}presence", nsmap=nsmap, entity=entity)  # type: ignore[arg-type]
    available = [(r, c, p) for r, (c, p) in tuples.items() if p.available]
    for resource, contact, presence in available:
        element = etree.SubElement(root, f"{{{PIDF_NS}}}tuple", id=tuple_id(resource))
        status = etree.SubElement(element, f"{{{PIDF_NS}}}status")
        etree.SubElement(status, f"{{{PIDF_NS}}}basic").text = "open"
        activity = _ACTIVITY_FOR_SHOW.get(presence.show or "")
        if activity is not None:
            activities = etree.SubElement(element, f"{{{RPID_NS}}}activities")
            etree.SubElement(activities, f"{{{RPID_NS}}}{activity}")
        etree.SubElement(element, f"{{{PIDF_NS}}}contact").text = contact
        if presence.status:
            etree.SubElement(element, f"{{{PIDF_NS}}}note").text = presence.status
    if not available:
        element = etree.SubElement(root, f"{{{PIDF_NS}}}tuple", id="offline")
        status = etree.SubElement(element, f"{{{PIDF_NS}}}status")
        etree.SubElement(status, f"{{{PIDF_NS}}}basic").text = "closed"
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _note(element: etree._Element) -> str | None:
    for child in element:
        if child.tag in (f"{{{PIDF_NS}}}note", f"{{{DM_NS}}}note"):
            text = (child.text or "").strip()
            if text:
                return text[:MAX_STATUS]
    return None


def _show(element: etree._Element) -> str | None:
    for activities in element.iter(f"{{{RPID_NS}}}activities"):
        for child in activities:
            name = etree.QName(child).localname if isinstance(child.tag, str) else ""
            if name in _SHOW_FOR_ACTIVITY:
                return _SHOW_FOR_ACTIVITY[name]
    return None


def parse_pidf(body: bytes, *, max_bytes: int = MAX_PIDF_BYTES) -> dict[str, ResourcePresence]:
    """Each tuple of a PIDF document, by id, as a resource's presence (closed ones as
    unavailable). Refused (:class:`PresenceRefused`) when it is not PIDF or not well formed."""
    try:
        root = xmlsafe.parse(body, max_bytes=max_bytes)
    except xmlsafe.XmlRefused as exc:
        raise PresenceRefused(exc.reason, sip_status=413 if exc.too_large else 400) from exc
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise PresenceRefused("not a PIDF document")
    persons = root.findall(f"{{{DM_NS}}}person")
    shared_note = _note(root) or next((n for p in persons if (n := _note(p))), None)
    shared_show = next((s for p in persons if (s := _show(p))), None)
    out: dict[str, ResourcePresence] = {}
    for element in root.findall(f"{{{PIDF_NS}}}tuple"):
        ident = (element.get("id") or "").strip()
        if not ident or ident in out:
            raise PresenceRefused("a tuple without a unique id")
        if len(out) == MAX_TUPLES:
            break
        basic = element.findtext(f"{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic")
        if (basic or "").strip() != "open":
            out[ident] = UNAVAILABLE
            continue
        show = _show(element) or shared_show
        out[ident] = ResourcePresence(True, show, _note(element) or shared_note)
    return out


class PresenceView:
    """What one watcher knows of one presentity: each resource's last presence."""

    def __init__(self, limit: int = MAX_TUPLES) -> None:
        self.limit = limit
        self.resources: OrderedDict[str, ResourcePresence] = OrderedDict()

    @property
    def available(self) -> dict[str, ResourcePresence]:
        return {r: p for r, p in self.resources.items() if p.available}

    def update(self, resource: str, presence: ResourcePresence) -> bool:
        """Record ``resource``'s presence; True when it changed what a watcher sees."""
        if not presence.available:
            return self.resources.pop(resource, None) is not None
        if self.resources.get(resource) == presence:
            return False
        self.resources[resource] = presence
        self.resources.move_to_end(resource)
        while len(self.resources) > self.limit:
            self.resources.popitem(last=False)
        return True

    def replace(self, resources: Mapping[str, ResourcePresence]) -> dict[str, ResourcePresence]:
        """A full document's tuples replace the view; returns every resource whose presence
        changed (gone ones as unavailable), to tell the watcher."""
        changed: dict[str, ResourcePresence] = {}
        for resource in list(self.resources):
            if not resources.get(resource, UNAVAILABLE).available:
                del self.resources[resource]
                changed[resource] = UNAVAILABLE
        for resource, presence in resources.items():
            if presence.available and self.update(resource, presence):
                changed[resource] = presence
        return changed

    def clear(self) -> dict[str, ResourcePresence]:
        return self.replace({})


# RFC 3261 §21.4.9 / §21.5: the answers of a SIP side that is not (yet) answering.
_RETRYABLE = frozenset({408, 480, 500, 502, 503, 504})


def retryable(status: int) -> bool:
    """True when a failed SUBSCRIBE should be tried again later, not taken as a refusal."""
    return status in _RETRYABLE


def termination_action(reason: str | None) -> str:
    """What a ``Subscription-State: terminated`` means for the XMPP subscriber (RFC 6665
    §4.2.2): ``"resubscribe"`` (deactivated, timeout: try again now), ``"retry"`` (probation,
    giveup: later), ``"unsubscribed"`` (rejected: the SIP user said no) or ``"gone"``
    (noresource, invariant or anything else: nothing to watch)."""
    match reason:
        case "deactivated" | "timeout":
            return "resubscribe"
        case "probation" | "giveup":
            return "retry"
        case "rejected":
            return "unsubscribed"
        case _:
            return "gone"


class RetryPolicy:
    """When the next SUBSCRIBE toward a SIP target may go, sans-IO (the caller gives ``now``).

    Each failure doubles the wait from ``first`` up to ``cap``; a success forgets the target.
    At most ``limit`` targets are remembered (the oldest forgotten first)."""

    def __init__(self, *, first: float = 1.0, cap: float = 300.0, limit: int = 10000) -> None:
        self.first = first
        self.cap = cap
        self.limit = limit
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> delay, at

    def not_before(self, key: str) -> float:
        """The earliest time a SUBSCRIBE to ``key`` may go (0 when it may go now)."""
        state = self._state.get(key)
        return state[1] if state is not None else 0.0

    def failed(self, key: str, now: float, *, retry_after: float | None = None) -> float:
        """Record a failure; returns the time of the next attempt."""
        previous = self._state.pop(key, None)
        delay = self.first if previous is None else min(self.cap, previous[0] * 2)
        if retry_after is not None:
            delay = min(self.cap, max(delay, retry_after))
        self._state[key] = (delay, now + delay)
        while len(self._state) > self.limit:
            self._state.popitem(last=False)
        return now + delay

    def succeeded(self, key: str) -> None:
        self._state.pop(key, None)
