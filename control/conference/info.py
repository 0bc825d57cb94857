"""Conference information (RFC 4575): a room as plain data, and its documents.

:func:`snapshot` reads a :class:`~control.conference.room.Room` into frozen dataclasses (users
one per distinct SIP identity, an endpoint per session, media per stream); :func:`render_full`
and :func:`render_partial` turn one snapshot, or the difference between two, into an
``application/conference-info+xml`` body. Both are sans-IO: no clock, no disk (the room's files
are passed in), so a room with no subscribers never builds one (control/conference/infosubs.py).

Shape choices, each valid against the RFC 4575 schema (tests/data/conference-info.xsd):

- ``agp-conf:resources/files/file`` (name, hash, size, sender, status) sits in
  conference-description's ``##other`` slot, as SylkServer's clients read it.
- ``agp-conf:screen_image_url`` comes *after* a user's endpoints: the schema's ``xs:any`` slot
  of user-type follows ``endpoint*`` in its sequence (SylkServer's example puts it before,
  which does not validate).
- In a partial document (§4.6) conference-description, host-info and conference-state appear
  whole when they changed; a new or changed user is sent ``full`` unless only its endpoints
  changed (then ``partial`` with those endpoints ``full`` or ``deleted``); a user who left is
  ``deleted``, an endpoint that left is ``deleted`` with status ``disconnected`` and its
  disconnection-info.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lxml import etree

from control.sip.sdp import Direction
from control.streams import MediaKind

__all__ = [
    "AGP_NS",
    "CONFERENCE_INFO_TYPE",
    "CONF_NS",
    "ConferenceSnapshot",
    "EndpointInfo",
    "FileInfo",
    "MediaInfo",
    "UserInfo",
    "render_full",
    "render_partial",
    "sylk_hash",
]

CONF_NS = "urn:ietf:params:xml:ns:conference-info"
AGP_NS = "urn:ag-projects:xml:ns:conference-info"  # SylkServer's extension (its clients parse it)
CONFERENCE_INFO_TYPE = "application/conference-info+xml"
_NSMAP: dict[str, str] = {None: CONF_NS, "agp-conf": AGP_NS}  # type: ignore[dict-item]
_C = f"{{{CONF_NS}}}"
_A = f"{{{AGP_NS}}}"
VERSION_MARK = "4294967295"  # rendered in place of the version, replaced per subscription

_MEDIA_TYPES = {MediaKind.AUDIO: "audio", MediaKind.CHAT: "message", MediaKind.FILE: "file"}
# The participant's view of a stream is the mirror of our answer's direction (RFC 3264 §6.1).
_MIRROR = {
    Direction.SENDRECV: "sendrecv",
    Direction.SENDONLY: "recvonly",
    Direction.RECVONLY: "sendonly",
    Direction.INACTIVE: "inactive",
}


@dataclass(frozen=True, slots=True)
class MediaInfo:
    id: str
    type: str  # audio | message | file (RFC 4575 §5.7.1.2: the media's MIME top-level type)
    label: str
    status: str  # sendrecv | sendonly | recvonly | inactive, the participant's view


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    entity: str
    display_text: str
    status: str  # connected | on-hold | muted-via-focus | disconnected
    joined: str  # joining-info/when, xs:dateTime
    media: tuple[MediaInfo, ...] = ()
    joining_method: str = "dialed-in"
    disconnected: str | None = None  # disconnection-info/when, for one that left
    disconnection_method: str | None = None  # departed | booted | failed


@dataclass(frozen=True, slots=True)
class UserInfo:
    entity: str
    display_text: str
    roles: tuple[str, ...]
    endpoints: Mapping[str, EndpointInfo]
    screen_image_url: str | None = None

    def same_own_fields(self, other: UserInfo) -> bool:
        return (self.display_text, self.roles, self.screen_image_url) == (
            other.display_text,
            other.roles,
            other.screen_image_url,
        )


@dataclass(frozen=True, slots=True)
class FileInfo:
    name: str
    hash: str  # sha1:AB:CD:... as in RFC 5547's a=file-selector (SylkServer's form)
    size: int
    sender: str
    status: str = "OK"


@dataclass(frozen=True, slots=True)
class ConferenceSnapshot:
    entity: str
    display_text: str
    subject: str | None
    conf_uris: tuple[str, ...]
    files: tuple[FileInfo, ...]
    host_display_text: str
    host_uris: tuple[str, ...]
    user_count: int
    active: bool
    locked: bool
    maximum_user_count: int
    users: Mapping[str, UserInfo] = field(default_factory=dict)

    def description(self) -> tuple[object, ...]:
        return (
            self.display_text,
            self.subject,
            self.conf_uris,
            self.maximum_user_count,
            self.files,
        )

    def state(self) -> tuple[object, ...]:
        return (self.user_count, self.active, self.locked)


def sylk_hash(sha1_hex: str) -> str:
    """``sha1:49:AD:...``: the RFC 5547 hash form late joiners put in a pull's file-selector."""
    digits = sha1_hex.upper()
    return "sha1:" + ":".join(digits[i : i + 2] for i in range(0, len(digits), 2))


def when(timestamp: float) -> str:
    """An xs:dateTime in UTC for a POSIX timestamp."""
    moment = _dt.datetime.fromtimestamp(timestamp, _dt.UTC).replace(microsecond=0)
    return moment.isoformat().replace("+00:00", "Z")


def media_status(direction: Direction) -> str:
    return _MIRROR.get(direction, "sendrecv")


def media_type(kind: MediaKind) -> str:
    return _MEDIA_TYPES.get(kind, kind.value)


def endpoint_status(audio: Sequence[MediaInfo], *, muted: bool) -> str:
    """RFC 4575 §5.7.1.4: on-hold when the participant sends but no longer receives audio
    (its offer sendonly or inactive), muted-via-focus when the focus takes none of it."""
    if audio and all(m.status in ("sendonly", "inactive") for m in audio):
        return "on-hold"
    if muted:
        return "muted-via-focus"
    return "connected"


# --- rendering -------------------------------------------------------------------------------


def _text(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, _C + tag)
    element.text = text
    return element


def _uris(parent: etree._Element, tag: str, uris: Iterable[str]) -> None:
    uris = tuple(uris)
    if uris:
        container = etree.SubElement(parent, _C + tag)
        for uri in uris:
            entry = etree.SubElement(container, _C + "entry")
            _text(entry, "uri", uri)


def _description(root: etree._Element, snap: ConferenceSnapshot) -> None:
    desc = etree.SubElement(root, _C + "conference-description")
    _text(desc, "display-text", snap.display_text)
    if snap.subject:
        _text(desc, "subject", snap.subject)
    _uris(desc, "conf-uris", snap.conf_uris)
    _text(desc, "maximum-user-count", str(snap.maximum_user_count))
    resources = etree.SubElement(desc, _A + "resources")
    files = etree.SubElement(resources, _A + "files")
    for info in snap.files:
        etree.SubElement(
            files,
            _A + "file",
            name=info.name,
            hash=info.hash,
            size=str(info.size),
            sender=info.sender,
            status=info.status,
        )


def _host(root: etree._Element, snap: ConferenceSnapshot) -> None:
    host = etree.SubElement(root, _C + "host-info")
    _text(host, "display-text", snap.host_display_text)
    _uris(host, "uris", snap.host_uris)


def _state(root: etree._Element, snap: ConferenceSnapshot) -> None:
    state = etree.SubElement(root, _C + "conference-state")
    _text(state, "user-count", str(snap.user_count))
    _text(state, "active", "true" if snap.active else "false")
    _text(state, "locked", "true" if snap.locked else "false")


def _endpoint(parent: etree._Element, ep: EndpointInfo, state: str = "full") -> None:
    element = etree.SubElement(parent, _C + "endpoint", entity=ep.entity, state=state)
    _text(element, "display-text", ep.display_text)
    _text(element, "status", ep.status)
    _text(element, "joining-method", ep.joining_method)
    _text(etree.SubElement(element, _C + "joining-info"), "when", ep.joined)
    if ep.disconnected is not None:
        _text(element, "disconnection-method", ep.disconnection_method or "departed")
        _text(etree.SubElement(element, _C + "disconnection-info"), "when", ep.disconnected)
    for medium in ep.media:
        media = etree.SubElement(element, _C + "media", id=medium.id)
        _text(media, "type", medium.type)
        _text(media, "label", medium.label)
        _text(media, "status", medium.status)


def _user(parent: etree._Element, user: UserInfo) -> None:
    element = etree.SubElement(parent, _C + "user", entity=user.entity, state="full")
    _text(element, "display-text", user.display_text)
    if user.roles:
        roles = etree.SubElement(element, _C + "roles")
        for role in user.roles:
            _text(roles, "entry", role)
    for ep in user.endpoints.values():
        _endpoint(element, ep)
    if user.screen_image_url:  # after the endpoints: user-type's xs:any slot comes last
        etree.SubElement(element, _A + "screen_image_url").text = user.screen_image_url


def _root(snap: ConferenceSnapshot, state: str) -> etree._Element:
    return etree.Element(
        _C + "conference-info", nsmap=_NSMAP, entity=snap.entity, state=state, version=VERSION_MARK
    )


def _bytes(root: etree._Element) -> bytes:
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def render_full(snap: ConferenceSnapshot) -> bytes:
    """The whole room (§4.6 ``state="full"``); the version is :data:`VERSION_MARK`, set per
    subscription by :func:`with_version`."""
    root = _root(snap, "full")
    _description(root, snap)
    _host(root, snap)
    _state(root, snap)
    users = etree.SubElement(root, _C + "users", state="full")
    for user in snap.users.values():
        _user(users, user)
    return _bytes(root)


def _departed(ep: EndpointInfo, at: str) -> EndpointInfo:
    return EndpointInfo(
        ep.entity, ep.display_text, "disconnected", ep.joined, (), ep.joining_method, at, "departed"
    )


def render_partial(old: ConferenceSnapshot, new: ConferenceSnapshot, *, now: float) -> bytes | None:
    """What changed from ``old`` to ``new`` (§4.6 ``state="partial"``), ``None`` when nothing
    did. ``now`` dates the disconnection-info of endpoints that left."""
    root = _root(new, "partial")
    changed = False
    if old.description() != new.description():
        _description(root, new)
        changed = True
    if old.state() != new.state():
        _state(root, new)
        changed = True
    users = etree.Element(_C + "users", state="partial")
    at = when(now)
    for entity, user in new.users.items():
        before = old.users.get(entity)
        if before == user:
            continue
        if before is None or not before.same_own_fields(user):
            _user(users, user)
            continue
        element = etree.SubElement(users, _C + "user", entity=entity, state="partial")
        for ep_entity, ep in user.endpoints.items():
            if before.endpoints.get(ep_entity) != ep:
                _endpoint(element, ep)
        for ep_entity, ep in before.endpoints.items():
            if ep_entity not in user.endpoints:
                _endpoint(element, _departed(ep, at), "deleted")
    for entity in old.users:
        if entity not in new.users:
            etree.SubElement(users, _C + "user", entity=entity, state="deleted")
    if len(users):
        root.append(users)
        changed = True
    return _bytes(root) if changed else None


def with_version(body: bytes, version: int) -> bytes:
    """A rendered document with this subscription's version (§4.6: one counter each)."""
    return body.replace(f'version="{VERSION_MARK}"'.encode(), f'version="{version}"'.encode(), 1)
