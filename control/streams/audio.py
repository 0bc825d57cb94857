"""An audio stream backed by an :class:`~control.media.engine.AudioEngine` (a room's mix).

``open`` attaches the participant's audio m-line to the room's mix, a re-offer that keeps the
m-line is an ``update`` (hold, resume, codec or address change), ``close`` detaches. The
engine owns RTP, codecs and ports; the stream holds only which room and participant it is.
One audio stream per participant: the engine mixes one stream of each (a second audio m-line
is refused, port 0).
"""

from __future__ import annotations

import logging

from control.media.engine import AudioAnswer, AudioEngine, AudioEngineError, ParticipantId, RoomId
from control.sip import sdp
from control.sip.errors import SipError

from .base import MediaKind
from .negotiation import StreamRequest

__all__ = ["AudioStream"]

log = logging.getLogger("chorus.streams.audio")


class AudioStream:
    kind = MediaKind.AUDIO

    def __init__(
        self,
        engine: AudioEngine,
        room: RoomId,
        participant: ParticipantId,
        index: int,
        answer: AudioAnswer,
    ) -> None:
        self.engine = engine
        self.room = room
        self.participant = participant
        self.index = index
        self.answer = answer
        self.closed = False

    @property
    def accept(self) -> sdp.Accept:
        return self.answer.accept

    @property
    def direction(self) -> sdp.Direction:
        return self.answer.accept.direction

    @classmethod
    async def open(
        cls,
        engine: AudioEngine,
        room: RoomId,
        participant: ParticipantId,
        request: StreamRequest,
    ) -> AudioStream | None:
        """Attach the requested audio m-line; ``None`` refuses it (port 0).

        A second audio m-line is refused. When the engine cannot take the offer
        (:class:`AudioEngineError`: 488 no common codec, 503 no ports) and this is the only
        thing the offer asks for (:attr:`StreamRequest.alone`), the offer fails with the
        engine's status; beside other streams (chat), only this m-line is refused.
        """
        if request.has_other(MediaKind.AUDIO):
            return None
        try:
            answer = await engine.attach(room, participant, request.offer, request.index)
        except AudioEngineError as exc:
            if request.alone:
                raise SipError(exc.status, exc.reason) from exc
            log.info("audio of %s refused by the engine: %s", participant, exc.reason)
            return None
        return cls(engine, room, participant, request.index, answer)

    def fits(self, offer: sdp.SessionDescription, index: int) -> bool:
        return not self.closed and index == self.index

    async def update(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        """The engine's answer to the re-offer; ``None`` (the stream is removed) when the
        engine cannot take it."""
        try:
            self.answer = await self.engine.update(self.room, self.participant, offer, index)
        except AudioEngineError as exc:
            log.info("audio update of %s refused by the engine: %s", self.participant, exc.reason)
            return None
        return self.answer.accept

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        await self.engine.detach(self.room, self.participant)
