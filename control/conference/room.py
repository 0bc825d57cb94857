"""A room: the participants reached by one conference URI (RFC 4353 §5)."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from control.conference.participant import Participant
from control.media.engine import ParticipantId, RoomId
from control.sip.uri import SipUri

log = logging.getLogger("chorus.conference.room")


class RoomObserver(Protocol):
    """Told when a room starts and ends, e.g. so a cluster edge can pin the room's URI to this
    node while it lives (the Kamailio dispatcher; draining is the observer's business)."""

    def room_opened(self, room: RoomId) -> None: ...

    def room_closed(self, room: RoomId) -> None: ...


def room_id_for(uri: SipUri) -> RoomId:
    """``user@host`` of the Request-URI, case-folded: one room per conference URI."""
    user = (uri.unescaped_user() or "").lower()
    return RoomId(f"{user}@{uri.host.lower()}" if user else uri.host.lower())


class Room:
    def __init__(self, room_id: RoomId, uri: SipUri, *, max_participants: int) -> None:
        self.id = room_id
        self.uri = uri
        self.max_participants = max_participants
        self.participants: dict[ParticipantId, Participant] = {}
        self.created_at = time.time()

    @property
    def full(self) -> bool:
        return len(self.participants) >= self.max_participants

    @property
    def empty(self) -> bool:
        return not self.participants

    def add(self, participant: Participant) -> None:
        self.participants[participant.id] = participant
        log.info("%s joined %s (%d in room)", participant.identity.uri, self.id, len(self))

    def remove(self, participant_id: ParticipantId) -> Participant | None:
        participant = self.participants.pop(participant_id, None)
        if participant is not None:
            log.info("%s left %s (%d in room)", participant.identity.uri, self.id, len(self))
        return participant

    def __len__(self) -> int:
        return len(self.participants)
