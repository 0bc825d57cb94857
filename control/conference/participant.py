"""A participant: one SIP session in a room, carrying several streams added and removed on
their own (audio now; chat, files and screen sharing ride on the same model later)."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from control.media.engine import ParticipantId
from control.sip import sdp
from control.sip.session import Session
from control.sip.uri import NameAddr


class MediaKind(enum.Enum):
    AUDIO = "audio"
    CHAT = "chat"
    FILE = "file"
    SCREEN = "screen"


@dataclass(slots=True)
class Stream:
    """One accepted m-line of a participant's session."""

    kind: MediaKind
    media_index: int
    direction: sdp.Direction = sdp.Direction.SENDRECV


@dataclass(slots=True)
class Participant:
    id: ParticipantId
    identity: NameAddr
    session: Session
    sdp: sdp.SdpSession
    streams: dict[int, Stream] = field(default_factory=dict)  # by m-line index
    joined_at: float = field(default_factory=time.time)
    muted: bool = False

    def stream(self, kind: MediaKind) -> Stream | None:
        return next((s for s in self.streams.values() if s.kind is kind), None)

    @property
    def kinds(self) -> set[MediaKind]:
        return {s.kind for s in self.streams.values()}
