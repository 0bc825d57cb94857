"""mod_conference members as Chorus sees them: ESL events in, AudioEvents out (sans-IO).

Every audio leg Chorus sends to a node joins the conference named for its room (see
`conference_name`, sent as ``X-Chorus-Room``) and names its participant in
``X-Chorus-Participant``, which mod_sofia keeps as the channel variable
``sip_h_X-Chorus-Participant``; conference events carry the channel's variables, so a
member's event says ``variable_sip_h_X-Chorus-Participant``. The participant id is the leg's
From user too (sofia's ``Caller-Caller-ID-Number``, the number ``conference list`` shows),
which the mapping falls back on. The
``CUSTOM conference::maintenance`` events then say, per ``Action``:

* ``add-member`` / ``del-member`` — a member id (``Member-ID``) appears or goes;
* ``start-talking`` / ``stop-talking`` — the energy detector's verdict (TalkingStarted/Stopped);
* ``mute-member`` / ``unmute-member`` — its ``Speak`` flag changed: a MuteChanged, unless it
  is the echo of a mute Chorus itself asked for (``by_operator``: the room shows the state,
  a notice and conference-info say so);
* ``kick-member`` / ``hup-member`` — someone removed it. When it was not Chorus, an operator
  did (``fs_cli -x 'conference R kick N'``): Kicked(by="operator"), and the room announces it
  and ends that participant (BYE);
* ``deaf-member`` / ``undeaf-member`` — its ``Hear`` flag changed (kept; a room has no deaf
  state to show, so an operator's is only logged);
* ``energy-level-member`` — its noise gate (``Energy-Level``) was set (kept, `energy_level`);
* ``conference-destroy`` — the last member left.

Events of conferences or callers Chorus did not create are ignored: a node may host other
conferences too.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

from control.media.engine import (
    AudioEvent,
    Kicked,
    MuteChanged,
    ParticipantId,
    RoomId,
    TalkingStarted,
    TalkingStopped,
)
from control.media.freeswitch.esl import EslEvent

__all__ = [
    "CONFERENCE_SUBCLASS",
    "OPERATOR",
    "PARTICIPANT_HEADER",
    "PARTICIPANT_VARIABLE",
    "ROOM_HEADER",
    "ConferenceMembers",
    "ListedMember",
    "conference_name",
    "parse_conference_list",
]

log = logging.getLogger("chorus.media.freeswitch")

CONFERENCE_SUBCLASS = "conference::maintenance"
OPERATOR = "operator"  # who an outside ESL client's kick is attributed to
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


def conference_name(room: RoomId) -> str:
    """The conference a room's legs join: readable for operators (`conference list`), safe
    in a Request-URI user part and a dialplan regex, and unique by a short hash (two room ids
    that read alike still get two conferences). No ``@``: mod_conference reads
    ``name@profile``."""
    readable = _UNSAFE.sub("-", room.lower()).strip("-")[:40]
    digest = hashlib.sha1(room.encode("utf-8")).hexdigest()[:8]
    return f"chorus-{readable}-{digest}" if readable else f"chorus-{digest}"


@dataclass(slots=True)
class _Member:
    room: RoomId
    participant: ParticipantId
    member_id: int
    muted: bool = False
    talking: bool = False
    deaf: bool = False
    energy: int | None = None  # its noise gate, as the last event said


@dataclass(frozen=True, slots=True)
class ListedMember:
    """One line of ``conference <name> list``:
    ``id;channel;uuid;caller-id-name;caller-id-number;flags;volume-in;volume-out;energy``."""

    member_id: int
    uuid: str
    caller_id_number: str
    flags: frozenset[str]
    energy: int | None = None

    @property
    def muted(self) -> bool:
        return "speak" not in self.flags

    @property
    def deaf(self) -> bool:
        return "hear" not in self.flags


def _level(event: EslEvent) -> int | None:
    text = event.get("Energy-Level")
    return int(text) if text.isdigit() else None


def parse_conference_list(text: str) -> list[ListedMember]:
    """Parse the default (``;``-delimited) ``conference list`` output; other lines (an error
    such as "Conference x not found") give nothing."""
    members = []
    for line in text.splitlines():
        fields = line.split(";")
        if len(fields) < 6 or not fields[0].isdigit():
            continue
        flags = frozenset(f for f in fields[5].split("|") if f)
        energy = int(fields[8]) if len(fields) > 8 and fields[8].isdigit() else None
        members.append(ListedMember(int(fields[0]), fields[2], fields[4], flags, energy))
    return members


ROOM_HEADER = "X-Chorus-Room"  # the leg's conference: the node's dialplan joins it
PARTICIPANT_HEADER = "X-Chorus-Participant"
# mod_sofia's SOFIA_SIP_HEADER_PREFIX "sip_h_", and ESL's "variable_" for channel variables.
PARTICIPANT_VARIABLE = f"variable_sip_h_{PARTICIPANT_HEADER}"


def _participant_of(event: EslEvent) -> ParticipantId | None:
    value = (
        event.get(PARTICIPANT_VARIABLE)
        or event.get("Caller-Caller-ID-Number")
        or event.get("variable_sip_from_user")
    )
    return ParticipantId(value) if value else None


class ConferenceMembers:
    """The members of one node's Chorus conferences, fed that node's events."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomId] = {}  # conference name → room
        self._participants: set[tuple[RoomId, ParticipantId]] = set()
        self._members: dict[tuple[str, int], _Member] = {}
        self._by_participant: dict[tuple[RoomId, ParticipantId], _Member] = {}
        self._asked_mute: dict[tuple[RoomId, ParticipantId], bool] = {}
        self._asked_deaf: dict[tuple[RoomId, ParticipantId], bool] = {}
        self._asked_kick: set[tuple[RoomId, ParticipantId]] = set()

    # --- what Chorus does -------------------------------------------------------------------

    def expect(self, room: RoomId, participant: ParticipantId) -> str:
        """A leg for ``participant`` is on its way to this node; returns the conference."""
        name = conference_name(room)
        self._rooms[name] = room
        self._participants.add((room, participant))
        return name

    def forget(self, room: RoomId, participant: ParticipantId) -> None:
        """The leg is gone (detached or moved): its member, if any, is no longer ours."""
        key = (room, participant)
        self._participants.discard(key)
        self._asked_mute.pop(key, None)
        self._asked_deaf.pop(key, None)
        self._asked_kick.discard(key)
        member = self._by_participant.pop(key, None)
        if member is not None:
            self._members.pop((conference_name(room), member.member_id), None)
        if not any(r == room for r, _ in self._participants):
            self._rooms.pop(conference_name(room), None)

    def member_id(self, room: RoomId, participant: ParticipantId) -> int | None:
        member = self._by_participant.get((room, participant))
        return member.member_id if member is not None else None

    def learn(self, room: RoomId, listed: ListedMember) -> None:
        """A member found by ``conference list`` (its add-member was missed, e.g. while the
        Event Socket was reconnecting)."""
        participant = ParticipantId(listed.caller_id_number)
        if (room, participant) in self._participants:
            member = self._add(
                conference_name(room), room, participant, listed.member_id, listed.muted
            )
            member.deaf, member.energy = listed.deaf, listed.energy

    def asked_mute(self, room: RoomId, participant: ParticipantId, muted: bool) -> None:
        """Chorus is about to send ``conference R mute|unmute N``: its echo is no news."""
        self._asked_mute[(room, participant)] = muted

    def asked_deaf(self, room: RoomId, participant: ParticipantId, deaf: bool) -> None:
        """Chorus is about to send ``conference R deaf|undeaf N``."""
        self._asked_deaf[(room, participant)] = deaf

    def deaf(self, room: RoomId, participant: ParticipantId) -> bool | None:
        """Whether the node says the member hears nothing (None: not a member yet)."""
        member = self._by_participant.get((room, participant))
        return member.deaf if member is not None else None

    def energy_level(self, room: RoomId, participant: ParticipantId) -> int | None:
        """The member's noise gate as its events last said (None: unknown)."""
        member = self._by_participant.get((room, participant))
        return member.energy if member is not None else None

    def asked_kick(self, room: RoomId, participant: ParticipantId) -> None:
        self._asked_kick.add((room, participant))

    def rooms(self) -> dict[str, RoomId]:
        return dict(self._rooms)

    # --- what the node says -----------------------------------------------------------------

    def handle(self, event: EslEvent) -> list[AudioEvent]:
        if event.subclass != CONFERENCE_SUBCLASS:
            return []
        conference = event.get("Conference-Name")
        room = self._rooms.get(conference)
        if room is None:
            return []
        action = event.get("Action")
        if action == "conference-destroy":
            for key in [k for k in self._members if k[0] == conference]:
                member = self._members.pop(key)
                self._by_participant.pop((member.room, member.participant), None)
            return []
        member_id_text = event.get("Member-ID")
        if not member_id_text.isdigit():
            return []
        member_id = int(member_id_text)
        if action == "add-member":
            participant = _participant_of(event)
            if participant is not None and (room, participant) in self._participants:
                member = self._add(
                    conference, room, participant, member_id, event.get("Speak") == "false"
                )
                member.deaf = event.get("Hear") == "false"
                member.energy = _level(event)
            return []
        found = self._members.get((conference, member_id))
        if found is None:
            return []
        if action == "energy-level-member":
            found.energy = _level(event)
            return []
        return self._member_event(conference, found, action)

    def _add(
        self, conference: str, room: RoomId, participant: ParticipantId, member_id: int, muted: bool
    ) -> _Member:
        old = self._by_participant.pop((room, participant), None)
        if old is not None:
            self._members.pop((conference, old.member_id), None)
        member = _Member(room, participant, member_id, muted=muted)
        self._members[(conference, member_id)] = member
        self._by_participant[(room, participant)] = member
        return member

    def _member_event(self, conference: str, member: _Member, action: str) -> list[AudioEvent]:
        room, participant = member.room, member.participant
        key = (room, participant)
        events: list[AudioEvent] = []
        match action:
            case "start-talking" if not member.talking and not member.muted:
                member.talking = True
                events.append(TalkingStarted(room, participant))
            case "stop-talking" if member.talking:
                member.talking = False
                events.append(TalkingStopped(room, participant))
            case "mute-member" | "unmute-member":
                muted = action == "mute-member"
                if muted and member.talking:
                    member.talking = False
                    events.append(TalkingStopped(room, participant))
                ours = self._asked_mute.get(key) == muted
                if ours:
                    del self._asked_mute[key]
                if member.muted != muted and not ours:
                    events.append(MuteChanged(room, participant, muted, by_operator=True))
                member.muted = muted
            case "deaf-member" | "undeaf-member":
                deaf = action == "deaf-member"
                ours = self._asked_deaf.get(key) == deaf
                if ours:
                    del self._asked_deaf[key]
                elif member.deaf != deaf:
                    log.info("operator made %s %s in %s", participant, action[:-7], room)
                member.deaf = deaf
            case "kick-member" | "hup-member":
                if key in self._asked_kick:
                    self._asked_kick.discard(key)
                else:
                    log.info(
                        "operator kicked %s out of %s (member %d)",
                        participant,
                        room,
                        member.member_id,
                    )
                    events.append(Kicked(room, participant, OPERATOR))
            case "del-member":
                if member.talking:
                    events.append(TalkingStopped(room, participant))
                self._members.pop((conference, member.member_id), None)
                if self._by_participant.get(key) is member:
                    del self._by_participant[key]
        return events
