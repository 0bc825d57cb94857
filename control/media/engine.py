"""The AudioEngine interface: what a room asks of whatever mixes its audio.

Two implementations sit behind it: ``EmbeddedMixer`` (in-process, the one-machine default)
and, later, ``FreeSwitchEngine`` (mod_conference over ESL). A room never sees RTP, codecs or
ports; it hands the engine a participant's audio offer and gets back the answer to put in its
SDP, and it reads the engine's events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NewType

from control.sip import sdp

RoomId = NewType("RoomId", str)
ParticipantId = NewType("ParticipantId", str)


class AudioEngineError(Exception):
    """The engine cannot take this offer; ``status`` is the SIP answer (488, 503, …)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AudioAnswer:
    """The engine's side of one audio m-line: ready for ``sdp.build_answer``."""

    accept: sdp.Accept
    address: str  # the IP our RTP listens on, for the answer's c= line


@dataclass(frozen=True, slots=True)
class TalkingStarted:
    room: RoomId
    participant: ParticipantId


@dataclass(frozen=True, slots=True)
class TalkingStopped:
    room: RoomId
    participant: ParticipantId


@dataclass(frozen=True, slots=True)
class StreamTimedOut:
    """No RTP for the configured timeout: the room should end this participant's audio."""

    room: RoomId
    participant: ParticipantId


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """Making this listener's frame failed tick after tick (codec or SRTP error): the room
    should end this participant; the rest of the room keeps mixing."""

    room: RoomId
    participant: ParticipantId
    reason: str


@dataclass(frozen=True, slots=True)
class RoomFailed:
    """Mixing this room failed tick after tick; the engine stopped mixing it and the room
    should end every participant (BYE).  Other rooms are not affected."""

    room: RoomId
    reason: str


AudioEvent = TalkingStarted | TalkingStopped | StreamTimedOut | StreamFailed | RoomFailed


class AudioEngine(ABC):
    @abstractmethod
    async def attach(
        self,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> AudioAnswer:
        """Join ``participant`` to ``room``'s mix with the audio m-line ``media_index`` of
        ``offer``; raises AudioEngineError (488 no common codec / SRTP policy, 503 no ports)."""

    @abstractmethod
    async def update(
        self,
        room: RoomId,
        participant: ParticipantId,
        offer: sdp.SessionDescription,
        media_index: int,
    ) -> AudioAnswer:
        """A re-offer for an attached stream: hold, resume, codec or address change."""

    @abstractmethod
    async def detach(self, room: RoomId, participant: ParticipantId) -> None:
        """Remove the participant's audio; the room's mix ends with its last participant."""

    @abstractmethod
    async def set_muted(self, room: RoomId, participant: ParticipantId, muted: bool) -> None:
        """Stop (or resume) mixing what this participant says; they still hear the room."""

    @abstractmethod
    def events(self) -> AsyncIterator[AudioEvent]:
        """Talking and timeout events, in order, for every room."""

    @abstractmethod
    async def close(self) -> None:
        """Release every port, worker and socket."""
