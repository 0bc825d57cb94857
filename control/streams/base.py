"""What every stream is: one negotiated m-line (kind, index, its current answer).

The shape is aiortc's transceiver: one object per m-line of the session, created when an
offer's m-line is first accepted and kept across re-offers that leave the m-line as it is
(RFC 3264 §8.3.1 keeps the stream when its m-line is modified in place; a port of 0 removes
it, §8.2). :func:`control.streams.negotiation.negotiate` walks the m-lines and asks each
stream whether a re-offer still fits it.
"""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from control.msrp.sdp import is_msrp
from control.sip import sdp

__all__ = ["RTP_PROFILES", "MediaKind", "Stream", "classify"]

RTP_PROFILES = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
"""RFC 3551, RFC 4585, RFC 3711, RFC 5124: the RTP profiles an audio m-line may carry."""


class MediaKind(enum.Enum):
    """What a stream carries. The values are the names config, logs and web pages use."""

    AUDIO = "audio"
    CHAT = "chat"
    FILE = "file"
    SCREEN = "screen"


def classify(media: sdp.MediaDescription) -> MediaKind | None:
    """The kind of stream an offered m-line asks for, ``None`` for one no stream here carries
    (it is rejected in place, port 0, RFC 3264 §6).

    An MSRP m-line with ``a=file-selector`` is a file transfer (RFC 5547 §5); any other MSRP
    m-line is chat (RFC 4975 §8).
    """
    if media.media == "audio" and media.proto.upper() in RTP_PROFILES:
        return MediaKind.AUDIO
    if is_msrp(media):
        return MediaKind.FILE if media.has("file-selector") else MediaKind.CHAT
    return None


@runtime_checkable
class Stream(Protocol):
    """One accepted m-line. ``accept`` is what the last answer said for it."""

    @property
    def kind(self) -> MediaKind: ...

    @property
    def index(self) -> int: ...

    @property
    def accept(self) -> sdp.Accept: ...

    def fits(self, offer: sdp.SessionDescription, index: int) -> bool:
        """Whether a re-offer of this m-line keeps this stream (else it is replaced)."""
        ...

    async def update(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        """Answer a re-offer that fits; ``None`` when the stream cannot go on (it is removed:
        port 0 in the answer, closed once the answer is committed)."""
        ...

    async def close(self) -> None:
        """Release what the stream holds (MSRP session, engine attachment). Idempotent."""
        ...
