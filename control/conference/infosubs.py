"""A room's conference-info subscribers (RFC 4575 §3): sans-IO, fed the time.

:func:`room_snapshot` reads a live :class:`Room` into an :class:`~.info.ConferenceSnapshot`.
:class:`RoomInfo` holds a room's subscriptions: a change marks each one due; the caller asks
:meth:`RoomInfo.next_timer` and calls :meth:`RoomInfo.handle_timer` then, which builds *one*
snapshot and gives each due subscription its partial document (a burst of changes becomes one
NOTIFY, at most one per ``min_interval`` per subscription: RFC 4575 §3's rate limit). With no
subscriber a change costs a truth test: no snapshot is built.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from control.streams import MediaKind

from .info import (
    ConferenceSnapshot,
    EndpointInfo,
    FileInfo,
    MediaInfo,
    UserInfo,
    endpoint_status,
    media_status,
    media_type,
    render_full,
    render_partial,
    sylk_hash,
    when,
    with_version,
)
from .participant import PARTICIPANT
from .room import Room, room_uri_for

__all__ = ["InfoSubscriber", "RoomFileRecord", "RoomInfo", "nicknames", "room_snapshot"]


class RoomFileRecord(Protocol):
    """What conference-info shows of a room file (control/files/records.py's RoomFile)."""

    @property
    def name(self) -> str: ...
    @property
    def sha1(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sender(self) -> str: ...


def nicknames(room: Room) -> dict[str, str]:
    """Nicknames by SIP identity: RFC 7701 §6 gives one to an identity, all its sessions
    (conference-info shows it as the display-text; the admin API as ``nickname``)."""
    if room.chat is None:
        return {}
    return {m.uri: m.nickname for m in room.chat.core.members.values() if m.nickname}


def room_snapshot(
    room: Room, files: Sequence[RoomFileRecord] = (), *, host: str = "Chorus"
) -> ConferenceSnapshot:
    """The room as conference-info shows it: one user per distinct SIP identity (the same
    person on two devices is one user with two endpoints), transfers left out."""
    names = nicknames(room)
    users: dict[str, UserInfo] = {}
    for participant in room.participants.values():
        if participant.transfer_only:
            continue
        media = tuple(
            MediaInfo(
                id=f"{participant.id}-{index}",
                type=media_type(stream.kind),
                label=f"{participant.id}-{index}",
                status=media_status(stream.accept.direction),
            )
            for index, stream in sorted(participant.streams.items())
        )
        audio = [
            m
            for m, (_, s) in zip(media, sorted(participant.streams.items()), strict=True)
            if s.kind is MediaKind.AUDIO
        ]
        name = names.get(participant.uri) or participant.name
        uri = participant.uri
        previous = users.get(uri)
        dialog = getattr(participant.session, "dialog", None)
        target = getattr(dialog, "remote_target", None)
        entity = str(target) if target is not None else f"{uri};id={participant.id}"
        if previous is not None and entity in previous.endpoints:
            # Two sessions of one UA (one Contact) are still an endpoint each (RFC 4575
            # §5.7: one per session), the later told apart by its participant id.
            entity = f"{entity};id={participant.id}"
        ep = EndpointInfo(
            entity=entity,
            display_text=name,
            status="pending"  # held out of the room until it enters the PIN
            if participant.awaiting_pin
            else endpoint_status(audio, muted=participant.muted),
            joined=when(participant.joined_at),
            media=media,
        )
        roles = tuple(sorted({participant.role, *(previous.roles if previous else ())}))
        screen = room.screens.get(participant.id) or (
            previous.screen_image_url if previous else None
        )
        endpoints = {**(previous.endpoints if previous else {}), ep.entity: ep}
        users[uri] = UserInfo(uri, name, roles, endpoints, screen)
    _chat_only(room, users, names)
    uri = room_uri_for(room.id)
    return ConferenceSnapshot(
        entity=uri,
        display_text=f"Conference {room.id.partition('@')[0]}",
        subject=room.subject,  # set over MUC (control/xmpp/mucgw.py)
        conf_uris=(uri,),
        files=tuple(FileInfo(f.name, sylk_hash(f.sha1), f.size, f.sender) for f in files),
        host_display_text=host,
        host_uris=(uri,),
        user_count=len(users),
        active=True,
        locked=room.locked,
        maximum_user_count=room.max_participants,
        users=users,
    )


def _chat_only(room: Room, users: dict[str, UserInfo], names: dict[str, str]) -> None:
    """Chat members with no SIP session of their own (XMPP occupants through MUC,
    control/xmpp/mucgw.py) are users too, one endpoint per chat session with its chat."""
    for member in room.chat_only:
        name = names.get(member.uri) or member.shown_name
        label = f"{member.session}-chat"
        ep = EndpointInfo(
            entity=f"{member.uri};id={member.session}",
            display_text=name,
            status="connected",
            joined=when(member.joined_at or room.created_at),
            media=(MediaInfo(label, media_type(MediaKind.CHAT), label, "sendrecv"),),
        )
        previous = users.get(member.uri)
        endpoints = {**(previous.endpoints if previous else {}), ep.entity: ep}
        users[member.uri] = UserInfo(member.uri, name, (PARTICIPANT,), endpoints)


@dataclass(slots=True)
class InfoSubscriber:
    """One subscription's place in the room's documents: its version (§4.6: starts at 1 with
    the full document, +1 each NOTIFY), the snapshot it last got, and when it may next get one."""

    last: ConferenceSnapshot
    min_interval: float
    sent_at: float
    version: int = 1
    due_since: float | None = None

    def mark(self, now: float) -> None:
        if self.due_since is None:
            self.due_since = now

    def next_timer(self) -> float | None:
        if self.due_since is None:
            return None
        return max(self.due_since, self.sent_at + self.min_interval)


Key = Hashable


class RoomInfo:
    """The conference-info subscriptions of one room, keyed by the caller's subscription id."""

    def __init__(
        self,
        build: Callable[[], ConferenceSnapshot],
        *,
        min_interval: float = 1.0,
        max_subscriptions: int = 100,
    ) -> None:
        self.build = build
        self.min_interval = min_interval  # seconds between two NOTIFYs of one subscription
        self.max_subscriptions = max_subscriptions
        self.subscribers: dict[Key, InfoSubscriber] = {}
        self.snapshots_built = 0  # how many times a change cost a snapshot (benchmarks, tests)

    @property
    def full(self) -> bool:
        return len(self.subscribers) >= self.max_subscriptions

    def _snapshot(self) -> ConferenceSnapshot:
        self.snapshots_built += 1
        return self.build()

    def subscribe(self, key: Key, now: float) -> bytes:
        """A new subscription: its first NOTIFY's body, the full document, version 1."""
        snap = self._snapshot()
        self.subscribers[key] = InfoSubscriber(snap, self.min_interval, sent_at=now)
        return with_version(render_full(snap), 1)

    def resend_full(self, key: Key, now: float) -> bytes | None:
        """A refresh (RFC 6665 §4.2.1.2: a NOTIFY follows): the full document, next version."""
        subscriber = self.subscribers.get(key)
        if subscriber is None:
            return None
        subscriber.last = self._snapshot()
        subscriber.version += 1
        subscriber.sent_at, subscriber.due_since = now, None
        return with_version(render_full(subscriber.last), subscriber.version)

    def unsubscribe(self, key: Key) -> None:
        self.subscribers.pop(key, None)

    def changed(self, now: float) -> None:
        """Something the documents show changed; costs nothing without subscribers."""
        for subscriber in self.subscribers.values():
            subscriber.mark(now)

    def next_timer(self) -> float | None:
        due = [t for s in self.subscribers.values() if (t := s.next_timer()) is not None]
        return min(due, default=None)

    def handle_timer(self, now: float, *, wall: float | None = None) -> list[tuple[Key, bytes]]:
        """The NOTIFY bodies due at ``now``: one snapshot for all, one partial render per
        distinct previous snapshot (subscribers in step share it), versions set per subscriber.
        ``wall`` (POSIX time, default ``now``) dates the disconnection-info of those who left."""
        due = [
            (k, s)
            for k, s in self.subscribers.items()
            if (t := s.next_timer()) is not None and t <= now
        ]
        if not due:
            return []
        snap = self._snapshot()
        rendered: dict[int, bytes | None] = {}
        out: list[tuple[Key, bytes]] = []
        for key, subscriber in due:
            subscriber.due_since = None
            mark = id(subscriber.last)
            if mark not in rendered:
                rendered[mark] = render_partial(
                    subscriber.last, snap, now=now if wall is None else wall
                )
            body = rendered[mark]
            subscriber.last = snap
            if body is None:
                continue  # changed and changed back: nothing to tell
            subscriber.version += 1
            subscriber.sent_at = now
            out.append((key, with_version(body, subscriber.version)))
        return out

    def final(self, wall: float) -> list[tuple[Key, bytes]]:
        """The room ended: each subscription's last body (terminated NOTIFY), a partial with
        everyone gone and the conference inactive; the subscriptions are dropped."""
        out: list[tuple[Key, bytes]] = []
        for key, subscriber in self.subscribers.items():
            ended = replace(subscriber.last, users={}, user_count=0, active=False)
            body = render_partial(subscriber.last, ended, now=wall)
            if body is not None:
                subscriber.version += 1
                out.append((key, with_version(body, subscriber.version)))
        self.subscribers.clear()
        return out
