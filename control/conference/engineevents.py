"""What the audio engine reports, turned into what the room does (timeouts, failures,
operator mutes and kicks, moved or lost audio, keyed digits).

Split from :mod:`control.conference.app` (one module, one job): the engine's events arrive on
one queue whatever the engine (embedded mixer or FreeSWITCH), and each becomes a change of the
room model, a chat notice, a re-INVITE or a BYE here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from control.media.engine import (
    AudioLost,
    DtmfReceived,
    Kicked,
    MuteChanged,
    RoomFailed,
    StreamFailed,
    StreamMoved,
    StreamTimedOut,
    TalkingStarted,
    TalkingStopped,
)
from control.sip import sdp
from control.streams import MediaKind

from .notices import NoticeKind

if TYPE_CHECKING:
    from control.media.engine import RoomId

    from .app import ConferenceApp
    from .participant import Participant
    from .room import Room

log = logging.getLogger("chorus.conference")


class EngineEvents:
    """The conference's consumer of ``AudioEngine.events()``."""

    def __init__(self, app: ConferenceApp) -> None:
        self.app = app

    async def consume(self) -> None:
        async for event in self.app.engine.events():
            try:
                self.handle(event)
            except Exception:
                log.exception("handling %s failed", event)

    def handle(self, event: object) -> None:
        match event:
            case StreamTimedOut(room=room_id, participant=participant_id):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None and participant.kinds <= {MediaKind.AUDIO}:
                    log.info("RTP timeout: ending %s in %s", participant.identity.uri, room_id)
                    self.app.ua.spawn(self.app.end_participant(participant, "RTP timeout"))
            case StreamFailed(room=room_id, participant=participant_id, reason=reason):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None:
                    log.error(
                        "audio of %s in %s keeps failing (%s): ending it",
                        participant.identity.uri,
                        room_id,
                        reason,
                    )
                    self.app.ua.spawn(self.app.end_participant(participant, "media failure"))
            case RoomFailed(room=room_id, reason=reason):
                self._end_failed_room(room_id, reason)
            case MuteChanged(room=room_id, participant=participant_id, muted=muted, by_operator=op):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None:
                    self.app.rooms[room_id].set_muted(participant, muted, by_operator=op)
                    self.app.room_changed(self.app.rooms[room_id])
            case AudioLost(room=room_id, participant=participant_id, reason=reason):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None:
                    self.app.ua.spawn(
                        self._audio_lost(self.app.rooms[room_id], participant, reason)
                    )
            case Kicked(room=room_id, participant=participant_id, by=by):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None:  # as Moderation.kick: notice, then BYE
                    self.app.rooms[room_id].announce(
                        NoticeKind.KICKED, participant, by, exclude=False
                    )
                    log.info("%s kicked from %s by %s", participant.uri, room_id, by)
                    self.app.ua.spawn(self.app.end_participant(participant, "kicked"))
            case StreamMoved(room=room_id, participant=participant_id, answer=moved):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None:
                    self.app.ua.spawn(self._moved(participant, moved.accept))
            case DtmfReceived(room=room_id, participant=participant_id, digit=digit):
                participant = self.app.participant(room_id, participant_id)
                if participant is not None:
                    self.app.ua.spawn(
                        self.app.moderation.digit(self.app.rooms[room_id], participant, digit)
                    )
            case TalkingStarted() | TalkingStopped():
                log.debug("%s", event)

    async def _moved(self, participant: Participant, accept: sdp.Accept) -> None:
        """The engine moved this participant's audio: re-INVITE with our new side of it
        (RFC 3264 §8: a new version of our SDP, the other m-lines as they were)."""
        audio = participant.stream(MediaKind.AUDIO)
        if audio is not None:
            await self._reoffer(participant, audio.index, accept, "after its audio moved")

    async def _reoffer(
        self, participant: Participant, index: int, decision: sdp.Accept | sdp.Reject, why: str
    ) -> None:
        """Re-INVITE with our side of m-line ``index`` changed, the others as they were."""
        remote = participant.sdp.remote
        if remote is None:
            return
        decisions = list(participant.decisions)
        decisions[index] = decision
        participant.decisions = decisions
        body = participant.sdp.answer_body(remote, decisions)
        response = await participant.session.reinvite(body)
        if response.status >= 300:
            log.warning(
                "re-INVITE of %s %s answered %d", participant.identity.uri, why, response.status
            )

    async def _audio_lost(self, room: Room, participant: Participant, reason: str) -> None:
        """The engine lost this participant's audio for good: a notice, then BYE when audio
        was all it had, else a re-INVITE with the audio m-line at port 0 (RFC 3264 §8.2), its
        chat and files untouched."""
        audio = participant.stream(MediaKind.AUDIO)
        if audio is None:
            return
        log.warning("audio of %s in %s lost (%s)", participant.identity.uri, room.id, reason)
        room.announce(NoticeKind.AUDIO_LOST, participant, exclude=False)
        if participant.kinds <= {MediaKind.AUDIO}:
            await self.app.end_participant(participant, "audio lost")
            return
        participant.streams.pop(audio.index, None)
        room.streams_stopped(participant, [audio], announce=False)
        await audio.close()
        await self._reoffer(participant, audio.index, sdp.Reject(), "without its lost audio")

    def _end_failed_room(self, room_id: RoomId, reason: str) -> None:
        """The engine gave up mixing this room: BYE everyone in it, so nobody sits in silence."""
        room = self.app.rooms.get(room_id)
        participants = list(room.participants.values()) if room is not None else []
        log.error(
            "room %s failed in the audio engine (%s): ending it, BYE to %d participants",
            room_id,
            reason,
            len(participants),
        )
        for participant in participants:
            self.app.ua.spawn(self.app.end_participant(participant, "room failed"))
