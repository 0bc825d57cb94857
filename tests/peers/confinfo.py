"""A conference-info subscriber's side (RFC 4575 §4.6): rebuild the room from a full document
and the partial ones after it, into a plain model tests compare with what the room holds.

Rules applied, as a watcher must: a ``full`` document replaces everything; a ``partial`` one
must carry the next version (else it is an error: a lost NOTIFY); conference-description,
host-info and conference-state present in it replace the local copy; under ``users``, a user
``deleted`` goes, ``full`` replaces, ``partial`` updates the children present (display-text,
roles, screen image, endpoints by entity: ``deleted`` goes, otherwise replaced).
Every document is parsed with the server's own hardened parser.

:func:`world` is a room for unit tests and benchmarks without SIP or MSRP: named stand-ins
for sessions, streams and the chat's transport around a real Room and ChatCore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from control.conference.chat import ChatCore, ChatMember, ChatSessionId
from control.conference.info import AGP_NS, CONF_NS, ConferenceSnapshot
from control.conference.infosubs import room_snapshot
from control.conference.participant import Participant
from control.conference.room import Room
from control.media.engine import ParticipantId, RoomId
from control.sip.sdp import Accept, Direction
from control.sip.uri import parse_name_addr, parse_uri
from control.streams import MediaKind
from control.xmlsafe import parse

__all__ = ["ConfModel", "Files", "Rebuilder", "World", "model_of", "stream", "world"]

C = f"{{{CONF_NS}}}"
A = f"{{{AGP_NS}}}"

Endpoint = tuple[
    str, str, str, tuple[tuple[str, str, str, str], ...]
]  # display, status, when, media


@dataclass
class ConfModel:
    entity: str = ""
    description: dict[str, Any] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)


def _child_text(element: etree._Element, tag: str) -> str | None:
    child = element.find(C + tag)
    return None if child is None else (child.text or "")


def _description(element: etree._Element) -> dict[str, Any]:
    files = [
        (f.get("name"), f.get("hash"), f.get("size"), f.get("sender"), f.get("status"))
        for f in element.iter(A + "file")
    ]
    conf_uris = [e.text for e in element.iterfind(f"{C}conf-uris/{C}entry/{C}uri")]
    return {
        "display-text": _child_text(element, "display-text"),
        "subject": _child_text(element, "subject"),
        "conf-uris": conf_uris,
        "maximum-user-count": _child_text(element, "maximum-user-count"),
        "files": files,
    }


def _state(element: etree._Element) -> dict[str, str]:
    return {tag: _child_text(element, tag) or "" for tag in ("user-count", "active", "locked")}


def _endpoint(element: etree._Element) -> Endpoint:
    media = tuple(
        (
            m.get("id") or "",
            _child_text(m, "type") or "",
            _child_text(m, "label") or "",
            _child_text(m, "status") or "",
        )
        for m in element.iterfind(C + "media")
    )
    joined = element.findtext(f"{C}joining-info/{C}when") or ""
    return (
        _child_text(element, "display-text") or "",
        _child_text(element, "status") or "",
        joined,
        media,
    )


def _user_fields(element: etree._Element, user: dict[str, Any], *, whole: bool) -> None:
    text = _child_text(element, "display-text")
    if text is not None or whole:
        user["display-text"] = text
    roles = element.find(C + "roles")
    if roles is not None or whole:
        user["roles"] = (
            tuple(e.text for e in roles.iterfind(C + "entry")) if roles is not None else ()
        )
    screen = element.find(A + "screen_image_url")
    if screen is not None or whole:
        user["screen"] = screen.text if screen is not None else None
    for ep in element.iterfind(C + "endpoint"):
        entity = ep.get("entity") or ""
        if ep.get("state") == "deleted":
            user["endpoints"].pop(entity, None)
        else:
            user["endpoints"][entity] = _endpoint(ep)


class Rebuilder:
    """Feed NOTIFY bodies in order; :attr:`model` is the room as a watcher sees it."""

    def __init__(self) -> None:
        self.model = ConfModel()
        self.version: int | None = None
        self.documents = 0

    def apply(self, body: bytes) -> ConfModel:
        root = parse(body)
        if root.tag != C + "conference-info":
            raise ValueError(f"not conference-info: {root.tag}")
        version = int(root.get("version") or "0")
        state = root.get("state", "full")
        if state == "full":
            self.model = ConfModel(entity=root.get("entity") or "")
        elif self.version is None or version != self.version + 1:
            raise ValueError(f"partial version {version} after {self.version}: a lost document")
        self.version = version
        self.documents += 1
        if (desc := root.find(C + "conference-description")) is not None:
            self.model.description = _description(desc)
        if (cstate := root.find(C + "conference-state")) is not None:
            self.model.state = _state(cstate)
        if (users := root.find(C + "users")) is not None:
            for element in users.iterfind(C + "user"):
                entity = element.get("entity") or ""
                user_state = element.get("state", "full")
                if user_state == "deleted":
                    self.model.users.pop(entity, None)
                    continue
                if user_state == "full" or entity not in self.model.users:
                    self.model.users[entity] = {"endpoints": {}}
                    _user_fields(element, self.model.users[entity], whole=True)
                else:
                    _user_fields(element, self.model.users[entity], whole=False)
        return self.model


def model_of(snap: ConferenceSnapshot) -> ConfModel:
    """The model a faithful watcher ends with for this snapshot."""
    return ConfModel(
        entity=snap.entity,
        description={
            "display-text": snap.display_text,
            "subject": snap.subject,
            "conf-uris": list(snap.conf_uris),
            "maximum-user-count": str(snap.maximum_user_count),
            "files": [(f.name, f.hash, str(f.size), f.sender, f.status) for f in snap.files],
        },
        state={
            "user-count": str(snap.user_count),
            "active": "true" if snap.active else "false",
            "locked": "true" if snap.locked else "false",
        },
        users={
            entity: {
                "display-text": user.display_text,
                "roles": user.roles,
                "screen": user.screen_image_url,
                "endpoints": {
                    ep.entity: (
                        ep.display_text,
                        ep.status,
                        ep.joined,
                        tuple((m.id, m.type, m.label, m.status) for m in ep.media),
                    )
                    for ep in user.endpoints.values()
                },
            }
            for entity, user in snap.users.items()
        },
    )


# --- named stand-ins for what a unit test cannot have: SIP sessions and MSRP chat ---------------


@dataclass
class StandInStream:
    """A negotiated m-line as conference-info reads it: kind, index, our answer's direction."""

    kind: MediaKind
    index: int
    accept: Accept


@dataclass
class StandInDialog:
    remote_target: str


@dataclass
class StandInSession:
    dialog: StandInDialog


class StandInChat:
    """The room chat's state (a real ChatCore) without MSRP: notices go nowhere."""

    def __init__(self, room_id: str) -> None:
        self.core = ChatCore(room_id, f"sip:{room_id}", room_id.partition("@")[0])

    def notice(self, *args: object, **kwargs: object) -> None:
        pass

    def attach(self, *args: object) -> None:
        pass

    def detach(self, *args: object) -> None:
        pass

    def close(self) -> None:
        pass


def stream(kind: MediaKind, index: int, direction: Direction = Direction.SENDRECV) -> StandInStream:
    return StandInStream(kind, index, Accept(port=9, formats=("0",), direction=direction))


@dataclass
class Files:
    """Room files as control/files/records.py's RoomFile shows them."""

    name: str
    sha1: str
    size: int
    sender: str


@dataclass
class World:
    room: Room
    chat: StandInChat
    files: list[Files] = field(default_factory=list)
    serial: int = 0

    def join(self, user: str, display: str | None, kinds: tuple[MediaKind, ...]) -> Participant:
        self.serial += 1
        pid = ParticipantId(f"p{self.serial}")
        name = f'"{display}" ' if display else ""
        participant = Participant(
            pid,
            parse_name_addr(f"{name}<sip:{user}@example.com>"),
            StandInSession(StandInDialog(f"sip:{user}@192.0.2.{self.serial % 250}:5060")),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            streams={i: stream(k, i) for i, k in enumerate(kinds)},  # type: ignore[misc]
            joined_at=1_700_000_000 + self.serial,
        )
        self.room.add(participant)
        if MediaKind.CHAT in kinds:
            self.chat.core.add(ChatMember(ChatSessionId(f"s-{pid}"), pid, participant.uri))
        return participant

    def leave(self, participant: Participant) -> None:
        self.room.remove(participant.id)
        self.chat.core.members.pop(ChatSessionId(f"s-{participant.id}"), None)
        self.room.screens.pop(participant.id, None)

    def snapshot(self) -> ConferenceSnapshot:
        return room_snapshot(self.room, self.files)


def world() -> World:
    room = Room(
        RoomId("team@conf.example"), parse_uri("sip:team@conf.example"), max_participants=50
    )  # type: ignore[arg-type]
    chat = StandInChat(room.id)
    room.chat = chat  # type: ignore[assignment]
    w = World(room, chat)
    return w
