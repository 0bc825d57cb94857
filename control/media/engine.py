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

from control.media.rtcpsession import StreamQuality
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


@dataclass(frozen=True, slots=True)
class MuteChanged:
    """The engine muted or unmuted this participant: ``by_operator`` when someone other than
    the room asked for it (an operator's ``conference R mute N`` on a media server), so the
    room shows the new state and tells the room who did it."""

    room: RoomId
    participant: ParticipantId
    muted: bool
    by_operator: bool


@dataclass(frozen=True, slots=True)
class AudioLost:
    """This participant's audio ended on the engine's side and could not be restored (a
    media node ended the leg, or died with no other node left): the room drops the audio
    stream alone — chat and files go on — tells the room why, and ends (BYE) a participant
    left with nothing else."""

    room: RoomId
    participant: ParticipantId
    reason: str


@dataclass(frozen=True, slots=True)
class Kicked:
    """Someone other than the room removed this participant from the mix (an operator's
    ``conference R kick N`` on a media server, ``by`` says who): the room tells everyone and
    ends the participant (BYE)."""

    room: RoomId
    participant: ParticipantId
    by: str


@dataclass(frozen=True, slots=True)
class StreamMoved:
    """The participant's audio now terminates elsewhere (a media node died and the room was
    re-homed to another): the room re-INVITEs the participant with an answer built from
    ``answer.accept`` so its RTP goes to the new place (RFC 3264 §8)."""

    room: RoomId
    participant: ParticipantId
    answer: AudioAnswer


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """A key the participant pressed (RFC 4733 telephone-event), once per press: the room
    reads PINs from these (control/conference/moderation.py)."""

    room: RoomId
    participant: ParticipantId
    digit: str  # "0"-"9", "*", "#", "A"-"D"


AudioEvent = (
    TalkingStarted
    | TalkingStopped
    | StreamTimedOut
    | StreamFailed
    | RoomFailed
    | MuteChanged
    | AudioLost
    | Kicked
    | StreamMoved
    | DtmfReceived
)


class AudioEngine(ABC):
    # True when the engine reports key presses (DtmfReceived): only then may a room take a
    # PIN keyed after joining (control/conference/moderation.py).
    surfaces_dtmf = False

    async def set_deaf(self, room: RoomId, participant: ParticipantId, deaf: bool) -> None:
        """Stop (or resume) sending the room's audio to this participant (a caller awaiting
        the room's PIN hears nothing). Needed only by engines that surface DTMF: the others
        never hold anyone, and ignore it."""
        return None

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
    async def quality(self) -> dict[tuple[RoomId, ParticipantId], StreamQuality]:
        """Reception quality of every attached participant's audio, both ways (RFC 3550 §6.4).

        One `StreamQuality` per (room, participant) with an audio stream, read at the moment
        of the call (a snapshot, not a live view):

        * what we measured of the participant's RTP, the figures our own reports carry:
          ``packets_received``, ``packets_lost`` (cumulative, expected − received, so a
          duplicate can make it negative), ``fraction_lost`` (0..1, over the last report
          interval) and ``jitter`` (interarrival jitter, seconds, §6.4.1 / A.8);
        * what the participant reported about the stream we send it, None until its first
          receiver or sender report arrived: ``remote_packets_lost``,
          ``remote_fraction_lost`` (0..1) and ``remote_jitter`` (seconds);
        * ``rtt``: round-trip time in seconds from the LSR/DLSR of its report (§6.4.1),
          None until it reported on one of our sender reports;
        * ``reports_sent`` / ``reports_received``: RTCP compounds each way.

        An engine that cannot see RTCP (a media server that keeps it to itself) returns the
        participants it can measure, possibly none; it never raises for a missing figure.
        """

    @abstractmethod
    def events(self) -> AsyncIterator[AudioEvent]:
        """Talking and timeout events, in order, for every room."""

    @abstractmethod
    async def close(self) -> None:
        """Release every port, worker and socket."""
