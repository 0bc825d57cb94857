"""Screen sharing in a room: the conference's side of :mod:`control.conference.screen`.

A participant's chat stream carries its screen as CPIM ``application/blink-screensharing``
frames (the reference page's ``com.ag-projects.screen-sharing`` extension). The room's chat
hands each one here (:meth:`ConferenceScreens.frame`, from the chat validator: a frame the
board refuses is answered 400/413 on its last chunk), never to the other participants and
never to the history. The board numbers the frames and ends a sharing after
``[screen] idle_timeout`` without a frame; the conference ends it when the sharer's chat
stream or the sharer or the room ends (:meth:`stop`, :meth:`stop_room`).

When a sharing starts, everyone in the room (the sharer too: it may pass the link on) gets a
``chorus.Notice: screen`` notice whose ``chorus.Screen-URL`` is the signed viewer page and
``chorus.Screen-Image`` the signed raw image (control/web; absent when the web server is
off); the room keeps the image URL for conference-info's ``agp-conf:screen_image_url``. When it
ends, a ``chorus.Notice: screen-ended`` notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from control.media.engine import ParticipantId, RoomId
from control.msrp.cpim import CpimMessage

from .chat import ChatMember
from .notices import NoticeKind
from .room import Room
from .screen import EndReason, ScreenBoard, ScreenSharing, SharingEnded, SharingStarted

__all__ = ["ConferenceScreens", "ScreenLinks"]

log = logging.getLogger("chorus.conference.screen")


class ScreenLinks(Protocol):
    """Signed screen URLs (control/web's WebUrls)."""

    def screen_page(self, room: RoomId, participant: ParticipantId) -> str: ...

    def screen_image(self, room: RoomId, participant: ParticipantId) -> str: ...


class ConferenceScreens:
    """The node's screen board driven for its rooms; :meth:`start` on the event loop."""

    def __init__(self, board: ScreenBoard, links: ScreenLinks | None = None) -> None:
        self.board = board
        self.links = links
        self._sharing: ScreenSharing | None = None
        self._task: asyncio.Task[None] | None = None
        self._rooms: Mapping[RoomId, Room] = {}
        self._names: dict[tuple[RoomId, ParticipantId], str] = {}

    def start(self, rooms: Mapping[RoomId, Room]) -> None:
        """Read the board's events for ``rooms`` (the application's live rooms)."""
        if self._sharing is not None:
            return
        self._rooms = rooms
        self._sharing = ScreenSharing(self.board)
        self._task = asyncio.get_running_loop().create_task(self._events(), name="screens")

    def frame(self, room: Room, member: ChatMember, message: CpimMessage) -> None:
        """A frame from a chat session of the room; ScreenError (an MsrpError) refuses it."""
        if self._sharing is None:
            return  # not started: nobody can watch, the frame is dropped
        self._names.setdefault((room.id, member.participant), member.shown_name)
        self._sharing.receive_cpim(room.id, member.participant, message)

    def stop(self, room: RoomId, participant: ParticipantId) -> None:
        if self._sharing is not None:
            self._sharing.stop(room, participant)

    def stop_room(self, room: RoomId) -> None:
        if self._sharing is not None:
            self._sharing.stop_room(room)

    async def _events(self) -> None:
        assert self._sharing is not None
        while True:
            event = await self._sharing.next_event()
            try:
                self._event(event)
            except Exception:
                log.exception("handling %s failed", event)

    def _event(self, event: SharingStarted | SharingEnded) -> None:
        key = (event.room, event.participant)
        room = self._rooms.get(event.room)
        match event:
            case SharingStarted(room=room_id, participant=participant_id):
                if room is None:
                    return
                page = image = None
                if self.links is not None:
                    page = self.links.screen_page(room_id, participant_id)
                    image = self.links.screen_image(room_id, participant_id)
                room.screens[participant_id] = image
                details = []
                if page is not None and image is not None:
                    details = [("Screen-URL", page), ("Screen-Image", image)]
                room.announce(
                    NoticeKind.SCREEN,
                    room.participants.get(participant_id),
                    page,
                    who=self._names.get(key),
                    details=details,
                    exclude=False,
                )
            case SharingEnded(participant=participant_id, reason=reason):
                name = self._names.pop(key, None)
                if room is None:
                    return
                room.screens.pop(participant_id, None)
                room.announce(
                    NoticeKind.SCREEN_ENDED,
                    room.participants.get(participant_id),
                    who=name,
                    details=[("Screen-Ended", "idle" if reason is EndReason.IDLE else "stopped")],
                    exclude=False,
                )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._sharing is not None:
            self._sharing.close()
