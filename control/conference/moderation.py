"""Moderation of a room: PIN, lock, moderators, mute, kick, private messages, ending a room.

The policy is the operator's (``[conference] moderators``, ``creator_moderates``,
``pin_attempts`` and per-room ``[conference.rooms.NAME]`` tables, control/config.py); the
state is the room's (:class:`~control.conference.room.Room` ``locked``, ``pin``,
``private_messages``, :attr:`Participant.role`). Who may act is decided by the caller: the
admin API is the operator (its token is enough), a REFER's BYE asks
:meth:`Room.is_moderator` (control/conference/refer.py).

Joining (:meth:`Moderation.admit`, before the answer):

- a locked room refuses new joins ``403 Room is locked``;
- a room with a PIN takes it from the INVITE: dialling ``sip:room@host?pin=1234`` makes the
  caller's UA send a ``Pin: 1234`` header field (RFC 3261 §19.1.5; headers are not allowed in
  a Request-URI itself, §19.1.1, so a Request-URI ``?pin=`` is the parser's 400), or a
  ``;pin=1234`` Request-URI parameter; a right one joins at once, a wrong one is refused
  ``403 Wrong PIN``; without one, a caller
  with audio joins *awaiting the PIN* — held (neither mixed nor sent the room's audio) and
  out of the chat until it keys the PIN on its keypad (RFC 4733 telephone-events, then
  ``#``); after ``pin_attempts`` wrong PINs it is ended with BYE. A caller that cannot key
  anything (no audio, or an audio engine that reports no DTMF) gets ``403 PIN required``.

The role is given on admission: a URI matching a ``moderators`` pattern (fnmatch, on the
caller's identity ``sip:user@host``), or the room's creator (its first joiner) when
``creator_moderates``.

Every change is a chat notice (:class:`NoticeKind`) and calls :meth:`Moderation.changed`,
the room change hook conference-info listens to.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from control.config import ConferenceConfig
from control.media.engine import ParticipantId
from control.sip.errors import SipError
from control.sip.uri import SipUri
from control.streams import MediaKind, Stream

from .chat import identity_key
from .notices import NoticeKind
from .participant import MODERATOR, PARTICIPANT, Participant
from .room import Room

__all__ = [
    "PIN_ALPHABET",
    "Admission",
    "Moderation",
    "ModerationHost",
    "ModerationPolicy",
    "RoomSettings",
    "check_pin",
    "find_participant",
    "pin_of",
]

log = logging.getLogger("chorus.conference.moderation")

PIN_ALPHABET = "0123456789*ABCD"  # what a keypad sends (RFC 4733 events 0-15 but '#')
MAX_PIN_CHARS = 32
PIN_END = "#"


def check_pin(pin: str) -> str:
    """A PIN a keypad can send: 1 to 32 of ``0-9 * A-D`` (``#`` ends the entry)."""
    pin = pin.strip().upper()
    if not 1 <= len(pin) <= MAX_PIN_CHARS or any(c not in PIN_ALPHABET for c in pin):
        raise ValueError(f"a PIN is 1 to {MAX_PIN_CHARS} of 0-9, *, A-D")
    return pin


@dataclass(frozen=True, slots=True)
class RoomSettings:
    """One ``[conference.rooms.NAME]`` table: the room's state when it opens."""

    pin: str | None = None
    locked: bool = False
    private_messages: bool = True
    moderators: tuple[str, ...] = ()  # more URI patterns, for this room only


@dataclass(frozen=True, slots=True)
class ModerationPolicy:
    moderators: tuple[str, ...] = ()  # fnmatch patterns on participant URIs, every room
    creator_moderates: bool = True  # a room's first joiner moderates it
    pin_attempts: int = 3  # wrong PINs keyed before the caller is ended
    rooms: Mapping[str, RoomSettings] = field(default_factory=dict)  # by id or user part

    @classmethod
    def from_config(cls, config: ConferenceConfig) -> ModerationPolicy:
        """``[conference] moderators``, ``creator_moderates``, ``pin_attempts``, ``rooms``."""
        return cls(
            moderators=config.moderators,
            creator_moderates=config.creator_moderates,
            pin_attempts=config.pin_attempts,
            rooms={
                name: RoomSettings(r.pin, r.locked, r.private_messages, r.moderators)
                for name, r in config.rooms.items()
            },
        )

    def settings(self, room_id: str) -> RoomSettings:
        key = room_id.lower()
        found = self.rooms.get(key) or self.rooms.get(key.partition("@")[0])
        return found or RoomSettings()


class ModerationHost(Protocol):
    """What moderation needs of the conference application (control/conference/app.py)."""

    async def mute_audio(self, room: Room, participant: Participant, muted: bool) -> None: ...

    async def hold_audio(self, room: Room, participant: Participant, held: bool) -> None:
        """Held: neither mixed nor sent the room's audio (awaiting the PIN); released: back
        to the mix, muted as the participant is."""

    async def end_participant(self, participant: Participant, reason: str) -> None: ...

    def room_changed(self, room: Room) -> None: ...


@dataclass(slots=True)
class Admission:
    """What :meth:`Moderation.admit` decided for one caller."""

    role: str
    awaiting_pin: bool


def pin_of(uri: SipUri, header: str | None = None) -> str | None:
    """The INVITE's ``Pin`` header field (a dialled URI's ``?pin=``, RFC 3261 §19.1.5), else
    the URI's ``?pin=`` header or ``;pin=`` parameter."""
    if header is not None:
        return header
    for name, value in uri.headers.items():
        if name.lower() == "pin":
            return value
    return uri.params.get("pin")


def _matches(uri: str, patterns: tuple[str, ...]) -> bool:
    lowered = uri.lower()
    return any(fnmatch.fnmatchcase(lowered, p.lower()) for p in patterns)


class Moderation:
    """The policy applied to every room, and the actions on a room (see the module doc)."""

    def __init__(self, policy: ModerationPolicy, host: ModerationHost) -> None:
        self.policy = policy
        self.host = host
        self._entry: dict[str, str] = {}  # participant id -> digits keyed so far
        self._failures: dict[str, int] = {}

    # --- joining ---------------------------------------------------------------------------

    def room_opened(self, room: Room) -> None:
        settings = self.policy.settings(room.id)
        room.pin = settings.pin
        room.locked = settings.locked
        room.private_messages = settings.private_messages
        self._sync_chat(room)

    def admit(
        self, room: Room, uri: SipUri, caller: str, *, keypad: bool, pin: str | None = None
    ) -> Admission:
        """Before the answer: SipError 403 when this caller may not join (see module doc);
        ``keypad``: it could key a PIN (audio, an engine that reports DTMF); ``pin`` is the
        INVITE's ``Pin`` header field."""
        if room.locked:
            raise SipError(403, "Room is locked")
        awaiting = False
        if room.pin is not None:
            given = pin_of(uri, pin)
            if given is not None:
                if given.strip().upper() != room.pin:
                    log.info("%s gave a wrong PIN for %s", caller, room.id)
                    raise SipError(403, "Wrong PIN")
            elif keypad:
                awaiting = True
            else:
                raise SipError(403, "PIN required")
        return Admission(self.role_for(room, caller), awaiting)

    def role_for(self, room: Room, caller: str) -> str:
        settings = self.policy.settings(room.id)
        if _matches(caller, self.policy.moderators + settings.moderators):
            return MODERATOR
        people = [p for p in room.participants.values() if not p.transfer_only]
        if self.policy.creator_moderates and not people:
            return MODERATOR
        return PARTICIPANT

    async def joined(self, room: Room, participant: Participant) -> None:
        """After :meth:`Room.add` (a caller awaiting the PIN was muted before the answer)."""
        if participant.awaiting_pin:
            self.host.room_changed(room)

    async def streams_added(
        self, room: Room, participant: Participant, streams: Iterable[Stream]
    ) -> None:
        """A re-INVITE's new streams: new audio of a muted or PIN-awaiting participant starts
        muted in the mixer too (the engine's mute is per stream)."""
        if not any(s.kind is MediaKind.AUDIO for s in streams):
            return
        if participant.awaiting_pin:
            await self.host.hold_audio(room, participant, True)
        elif participant.muted:
            await self.host.mute_audio(room, participant, True)

    def left(self, participant: Participant) -> None:
        self._entry.pop(participant.id, None)
        self._failures.pop(participant.id, None)

    async def digit(self, room: Room, participant: Participant, digit: str) -> None:
        """One key pressed (RFC 4733): PIN entry while awaiting it, ``#`` ends an entry."""
        if not participant.awaiting_pin or room.pin is None:
            if participant.awaiting_pin:  # the PIN was cleared meanwhile
                await self._let_in(room, participant)
            return
        if digit != PIN_END:
            entry = self._entry.get(participant.id, "") + digit.upper()
            self._entry[participant.id] = entry[-MAX_PIN_CHARS:]
            return
        entry = self._entry.pop(participant.id, "")
        if entry == room.pin:
            log.info("%s keyed the PIN of %s", participant.uri, room.id)
            await self._let_in(room, participant)
            return
        failures = self._failures.get(participant.id, 0) + 1
        self._failures[participant.id] = failures
        log.info("%s keyed a wrong PIN for %s (%d)", participant.uri, room.id, failures)
        if failures >= self.policy.pin_attempts:
            await self.host.end_participant(participant, "wrong PIN")

    async def _let_in(self, room: Room, participant: Participant) -> None:
        participant.awaiting_pin = False
        self._failures.pop(participant.id, None)
        room.admitted(participant)
        await self.host.hold_audio(room, participant, False)
        self.host.room_changed(room)

    # --- actions (the admin API; REFER's BYE; chat commands some day) ----------------------

    async def set_muted(
        self, room: Room, participant: Participant, muted: bool, *, by: str = "operator"
    ) -> None:
        """Mute or unmute via the focus: the mixer stops (or resumes) taking its audio."""
        if participant.muted == muted:
            return
        room.set_muted(participant, muted, by_operator=True)
        if not participant.awaiting_pin:
            await self.host.mute_audio(room, participant, muted)
        log.info("%s %s in %s by %s", participant.uri, "muted" if muted else "unmuted", room.id, by)
        self.host.room_changed(room)

    async def kick(self, room: Room, participant: Participant, *, by: str = "operator") -> None:
        """End every session of this participant's identity in the room (BYE)."""
        targets = [p for p in room.participants.values() if p.uri == participant.uri]
        for target in targets:
            room.announce(NoticeKind.KICKED, target, by, exclude=False)
        log.info("%s kicked from %s by %s", participant.uri, room.id, by)
        await self._end_all(room, targets, "kicked")

    def kick_chat_only(self, room: Room, identity: str, *, by: str = "operator") -> bool:
        """Remove a chat member with no SIP session of its own (an XMPP occupant,
        control/xmpp/mucgw.py): its chat sessions are detached (its gateway tells it it was
        kicked) and the room hears of it. False when the room has no such member."""
        if room.chat is None:
            return False
        try:
            key = identity_key(identity)
        except ValueError:
            return False
        members = [
            m
            for m in room.chat.core.members.values()
            if m.key == key and m.participant not in room.participants
        ]
        for member in members:
            room.chat.detach(member.session)
        if members:
            log.info("%s (chat only) kicked from %s by %s", identity, room.id, by)
            room.announce(NoticeKind.KICKED, None, by, who=members[0].shown_name)
        return bool(members)

    def set_locked(self, room: Room, locked: bool, *, by: str = "operator") -> None:
        if room.locked == locked:
            return
        room.locked = locked
        room.announce(NoticeKind.LOCKED if locked else NoticeKind.UNLOCKED, None, who=by)
        log.info("%s %s by %s", room.id, "locked" if locked else "unlocked", by)
        self.host.room_changed(room)

    async def set_pin(self, room: Room, pin: str | None, *, by: str = "operator") -> None:
        """A new PIN (checked by :func:`check_pin`), or none: everyone awaiting one is in."""
        room.pin = check_pin(pin) if pin is not None else None
        room.announce(NoticeKind.PIN_SET if room.pin else NoticeKind.PIN_CLEARED, None, who=by)
        log.info("PIN of %s %s by %s", room.id, "set" if room.pin else "cleared", by)
        if room.pin is None:
            for participant in [p for p in room.participants.values() if p.awaiting_pin]:
                await self._let_in(room, participant)
        self.host.room_changed(room)

    def set_private_messages(self, room: Room, allowed: bool, *, by: str = "operator") -> None:
        if room.private_messages == allowed:
            return
        room.private_messages = allowed
        self._sync_chat(room)
        kind = NoticeKind.PRIVATE_ON if allowed else NoticeKind.PRIVATE_OFF
        room.announce(kind, None, who=by)
        self.host.room_changed(room)

    async def end_room(self, room: Room, *, by: str = "operator") -> int:
        """BYE to everyone: the room ends with its last participant. How many were ended."""
        room.announce(NoticeKind.ROOM_ENDED, None, who=by)
        log.info("room %s ended by %s", room.id, by)
        participants = list(room.participants.values())
        await self._end_all(room, participants, "room ended")
        return len(participants)

    async def _end_all(self, room: Room, participants: list[Participant], reason: str) -> None:
        """BYE to each at once; one that fails (its peer gone) is logged, the others end."""
        results = await asyncio.gather(
            *(self.host.end_participant(p, reason) for p in participants), return_exceptions=True
        )
        for participant, result in zip(participants, results, strict=True):
            if isinstance(result, Exception):
                log.warning("ending %s in %s failed: %r", participant.uri, room.id, result)

    def _sync_chat(self, room: Room) -> None:
        if room.chat is not None:
            room.chat.core.private_messages = room.private_messages


def find_participant(room: Room, key: str) -> Participant | None:
    """A participant named by its id, its URI (``sip:`` optional) or its display name."""
    by_id = room.participants.get(ParticipantId(key))
    if by_id is not None:
        return by_id
    wanted = key.lower()
    if not wanted.startswith(("sip:", "sips:")) and "@" in wanted:
        wanted = "sip:" + wanted
    for participant in room.participants.values():
        if wanted in (participant.uri.lower(), participant.name.lower()):
            return participant
    return None
