"""Media: RTP/RTCP, codecs, SRTP, jitter buffer, and the audio engines.

The package re-exports the pieces applications and tests name; the mixer's internals
(``stream``, ``mixroom``, ``mixworker``, ``answer``) stay in their modules.
"""

from control.media.codecs import Codec, CodecError, codec_for
from control.media.engine import (
    AudioAnswer,
    AudioEngine,
    AudioEngineError,
    AudioEvent,
    ParticipantId,
    RoomFailed,
    RoomId,
    StreamFailed,
    StreamTimedOut,
    TalkingStarted,
    TalkingStopped,
)
from control.media.jitter import JitterBuffer
from control.media.mixer import EmbeddedMixer
from control.media.ports import PortAllocator, PortsExhausted
from control.media.rtcpsession import StreamQuality
from control.media.rtp import RtpError, RtpPacket
from control.media.srtp import SrtpContext, SrtpError

__all__ = [
    "AudioAnswer",
    "AudioEngine",
    "AudioEngineError",
    "AudioEvent",
    "Codec",
    "CodecError",
    "EmbeddedMixer",
    "JitterBuffer",
    "ParticipantId",
    "PortAllocator",
    "PortsExhausted",
    "RoomFailed",
    "RoomId",
    "RtpError",
    "RtpPacket",
    "SrtpContext",
    "SrtpError",
    "StreamFailed",
    "StreamQuality",
    "StreamTimedOut",
    "TalkingStarted",
    "TalkingStopped",
    "codec_for",
]
