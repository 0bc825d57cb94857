"""The conference application: ad-hoc rooms reached by INVITE (RFC 4353 focus, RFC 4579).

An INVITE to any URI the application map sends here creates that room or joins it. Audio goes
to the AudioEngine; the room ends with its last participant. Re-INVITE adds, removes, holds
and resumes audio; an audio-only participant whose RTP stops is ended with BYE.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from control.conference.participant import MediaKind, Participant, Stream
from control.conference.room import Room, RoomObserver, room_id_for
from control.media.engine import (
    AudioEngine,
    AudioEngineError,
    ParticipantId,
    RoomFailed,
    RoomId,
    StreamFailed,
    StreamTimedOut,
    TalkingStarted,
    TalkingStopped,
)
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import IncomingCall, Offer, Session
from control.sip.uri import SipUri
from control.sip.useragent import IncomingRequest, UserAgent

log = logging.getLogger("chorus.conference")

RTP_PROFILES = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF")


@dataclass(frozen=True, slots=True)
class ConferenceLimits:
    max_rooms: int = 1000
    max_participants: int = 100


class ConferenceApp:
    def __init__(
        self,
        ua: UserAgent,
        engine: AudioEngine,
        *,
        address: str,
        limits: ConferenceLimits = ConferenceLimits(),
        room_observer: RoomObserver | None = None,
    ) -> None:
        self.ua = ua
        self.engine = engine
        self.address = address
        self.limits = limits
        self.room_observer = room_observer
        self.rooms: dict[RoomId, Room] = {}
        self._events_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._events_task = asyncio.get_running_loop().create_task(self._consume_events())

    # --- joining ---------------------------------------------------------------------------

    async def incoming_invite(self, call: IncomingCall) -> None:
        if self._events_task is None:
            self.start()  # the engine's events are read from the first call on
        uri = call.request_uri
        assert isinstance(uri, SipUri), "the server answers 416 to other schemes"
        if not call.has_sdp:
            call.reject(488, "an SDP offer is required")
            return
        try:
            offer = sdp.parse(call.body)
        except SipError as exc:
            log.info("bad SDP from %s: %s", call.incoming.source, exc.reason)
            call.reject(exc.status, exc.reason)
            return
        room_id = room_id_for(uri)
        room = self.rooms.get(room_id)
        if room is None:
            if len(self.rooms) >= self.limits.max_rooms:
                call.reject(503, "Too many rooms")
                return
            room = Room(room_id, uri, max_participants=self.limits.max_participants)
            self.rooms[room_id] = room
            self._notify_observer(room_id, opened=True)
        if room.full:
            call.reject(486, "Room is full")
            self._drop_if_empty(room)
            return
        participant_id = ParticipantId(self.ua.token(16))
        state = sdp.SdpSession(
            sess_id=self.ua.rng.randrange(1, 2**31), address=self.address, username="chorus"
        )
        streams: dict[int, Stream] = {}
        try:
            decisions = await self._negotiate(room, participant_id, offer, streams)
        except SipError as exc:
            await self._release_audio(room, participant_id, streams)
            call.reject(exc.status, exc.reason)
            self._drop_if_empty(room)
            return
        if not streams:
            call.reject(488, "no acceptable stream")
            self._drop_if_empty(room)
            return
        answer = sdp.serialize(state.answer(offer, decisions))
        if call.incoming.cancelled.done() or call.answered:
            await self._release_audio(room, participant_id, streams)
            self._drop_if_empty(room)
            return
        session = call.accept(answer, user=uri.user)
        participant = Participant(participant_id, call.remote_identity, session, state, streams)
        room.add(participant)
        session.on_reinvite = lambda offer_: self._reinvite(room, participant, offer_)
        try:
            reason = await session.terminated
            log.info("%s left %s: %s", participant.identity.uri, room.id, reason)
        finally:
            await self._leave(room, participant)

    async def _negotiate(
        self,
        room: Room,
        participant_id: ParticipantId,
        offer: sdp.SessionDescription,
        streams: dict[int, Stream],
    ) -> list[sdp.Accept | sdp.Reject]:
        """One decision per offered m-line, attaching or updating audio as it goes."""
        decisions: list[sdp.Accept | sdp.Reject] = []
        for index, media in enumerate(offer.media):
            existing = streams.get(index)
            if media.rejected or media.media != "audio" or media.proto not in RTP_PROFILES:
                if existing is not None and existing.kind is MediaKind.AUDIO:
                    await self.engine.detach(room.id, participant_id)
                    del streams[index]
                decisions.append(sdp.Reject())
                continue
            audio_elsewhere = any(
                s.kind is MediaKind.AUDIO and i != index for i, s in streams.items()
            )
            if audio_elsewhere:
                decisions.append(sdp.Reject())  # one audio stream per participant
                continue
            try:
                if existing is None:
                    answer = await self.engine.attach(room.id, participant_id, offer, index)
                else:
                    answer = await self.engine.update(room.id, participant_id, offer, index)
            except AudioEngineError as exc:
                if existing is None and not streams:
                    raise SipError(exc.status, exc.reason) from exc
                decisions.append(sdp.Reject())
                continue
            streams[index] = Stream(MediaKind.AUDIO, index, answer.accept.direction)
            decisions.append(answer.accept)
        return decisions

    async def _reinvite(self, room: Room, participant: Participant, offer: Offer) -> None:
        if not offer.has_sdp:
            offer.incoming.respond(488, "offerless re-INVITE not supported")
            return
        try:
            description = sdp.parse(offer.body)
            if len(description.media) < len(participant.streams):
                raise SipError(488, "re-offer removed m-lines (RFC 3264 §8)")
            decisions = await self._negotiate(
                room, participant.id, description, participant.streams
            )
            answer = sdp.serialize(participant.sdp.answer(description, decisions))
        except SipError as exc:
            offer.incoming.respond(exc.status, exc.reason)
            return
        participant.session.answer_reinvite(offer, answer)

    # --- leaving ---------------------------------------------------------------------------

    async def _release_audio(
        self, room: Room, participant_id: ParticipantId, streams: dict[int, Stream]
    ) -> None:
        if any(s.kind is MediaKind.AUDIO for s in streams.values()):
            try:
                await self.engine.detach(room.id, participant_id)
            except Exception:
                # The participant leaves the room whatever the engine says; a worker that
                # died already freed its ports.  Logged so a leak is never silent.
                log.exception("engine detach of %s in %s failed", participant_id, room.id)
        streams.clear()

    async def _leave(self, room: Room, participant: Participant) -> None:
        await self._release_audio(room, participant.id, participant.streams)
        room.remove(participant.id)
        self._drop_if_empty(room)

    def _drop_if_empty(self, room: Room) -> None:
        if room.empty and self.rooms.get(room.id) is room:
            del self.rooms[room.id]
            log.info("room %s ended", room.id)
            self._notify_observer(room.id, opened=False)

    def _notify_observer(self, room_id: RoomId, *, opened: bool) -> None:
        """An observer's bug is logged and costs nothing: the room goes on either way."""
        if self.room_observer is None:
            return
        try:
            if opened:
                self.room_observer.room_opened(room_id)
            else:
                self.room_observer.room_closed(room_id)
        except Exception:
            action = "open" if opened else "close"
            log.exception("room observer failed on %s of %s", action, room_id)

    def participant(self, room_id: RoomId, participant_id: ParticipantId) -> Participant | None:
        room = self.rooms.get(room_id)
        return room.participants.get(participant_id) if room else None

    async def _consume_events(self) -> None:
        async for event in self.engine.events():
            match event:
                case StreamTimedOut(room=room_id, participant=participant_id):
                    participant = self.participant(room_id, participant_id)
                    if participant is None:
                        continue
                    if participant.kinds <= {MediaKind.AUDIO}:
                        log.info("RTP timeout: ending %s in %s", participant.identity.uri, room_id)
                        self.ua.spawn(self._end(participant.session, "RTP timeout"))
                case StreamFailed(room=room_id, participant=participant_id, reason=reason):
                    participant = self.participant(room_id, participant_id)
                    if participant is not None:
                        log.error(
                            "audio of %s in %s keeps failing (%s): ending it",
                            participant.identity.uri,
                            room_id,
                            reason,
                        )
                        self.ua.spawn(self._end(participant.session, "media failure"))
                case RoomFailed(room=room_id, reason=reason):
                    self._end_failed_room(room_id, reason)
                case TalkingStarted() | TalkingStopped():
                    log.debug("%s", event)

    def _end_failed_room(self, room_id: RoomId, reason: str) -> None:
        """The engine gave up mixing this room: BYE everyone in it, so nobody sits in silence."""
        room = self.rooms.get(room_id)
        participants = list(room.participants.values()) if room is not None else []
        log.error(
            "room %s failed in the audio engine (%s): ending it, BYE to %d participants",
            room_id,
            reason,
            len(participants),
        )
        for participant in participants:
            self.ua.spawn(self._end(participant.session, "room failed"))

    async def _end(self, session: Session, reason: str) -> None:
        await session.bye(reason=reason)

    # --- other entry points ----------------------------------------------------------------

    async def incoming_message(self, incoming: IncomingRequest) -> None:
        incoming.respond(405, headers=[("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS")])

    async def incoming_subscribe(self, incoming: IncomingRequest) -> None:
        incoming.respond(489)  # conference event package: a later issue

    async def incoming_refer(self, incoming: IncomingRequest) -> None:
        incoming.respond(501)  # RFC 4579 REFER: a later issue

    async def shutdown(self) -> None:
        sessions = [p.session for room in self.rooms.values() for p in room.participants.values()]
        await asyncio.gather(
            *(session.bye(reason="shutdown") for session in sessions), return_exceptions=True
        )
        if self._events_task is not None:
            self._events_task.cancel()
        await self.engine.close()
