"""A live room as the web's room page reads it (control/web/views.py's ``RoomView``).

A snapshot made per request from the room's own state: who is in it, by name and SIP
identity, with the kinds of their streams in m-line order and when they joined. Transfers
(sessions with file m-lines only) are not people and are left out. The room's files and live
screens the page reads from the file store and the screen board itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from control.media.engine import RoomId
from control.web.views import ParticipantView

from .room import Room

__all__ = ["ConferenceRoomView"]


class ConferenceRoomView:
    def __init__(self, room: Room) -> None:
        self._room = room

    @property
    def room_id(self) -> RoomId:
        return self._room.id

    @property
    def uri(self) -> str:
        return f"sip:{self._room.id}"

    def participants(self) -> Sequence[ParticipantView]:
        return [
            ParticipantView(
                id=participant.id,
                name=participant.name,
                uri=participant.uri,
                media=tuple(s.kind.value for _, s in sorted(participant.streams.items())),
                joined_at=participant.joined_at,
            )
            for participant in list(self._room.participants.values())
            if not participant.transfer_only
        ]
