"""The stream layer: one object per negotiated m-line, one negotiation routine for all.

How an application uses it (echo does exactly this; the conference the same with
:class:`AudioStream`)::

    from control.streams import (
        AudioStream, ChatOptions, MediaKind, MsrpChatStream, MsrpFileStream, StreamRequest,
        negotiate,
    )

    async def answerer(request: StreamRequest) -> Stream | None:     # per new m-line
        match request.kind:
            case MediaKind.AUDIO:   # one per participant: AudioStream.open refuses a second
                return await AudioStream.open(engine, room_id, participant_id, request)
            case MediaKind.CHAT if not request.has_other(MediaKind.CHAT) or several_allowed:
                return MsrpChatStream.open(msrp_transport, request.offer, request.index,
                                           ChatOptions(accept_types=("message/cpim",),
                                                       accept_wrapped_types=("*",),
                                                       chatroom=("nickname", "private-messages"),
                                                       nicknames=True, check=my_check))
            case MediaKind.FILE:
                await store.settled()
                return MsrpFileStream.open(msrp_transport, store, request.offer,
                                           request.index, sender=str(caller_uri))
        return None                                                   # refused: port 0

    result = await negotiate(offer, participant_streams, answerer)   # {} for an initial offer
    if not result.accepted:
        await result.abort(); reject 488
    answer = sdp_session.answer_body(offer, result.decisions)
    try: send the answer (call.accept / session.answer_reinvite)
    except ...: await result.abort(); raise
    await result.commit()            # closes removed/replaced streams (after the answer)
    participant_streams = result.streams
    for stream in result.created: start what runs on it (read stream.channel events ...)

- ``negotiate`` raises ``SipError(488)`` for a re-offer with fewer m-lines (RFC 3264 §8) before
  touching anything, and re-raises an answerer's ``SipError`` after closing what it created.
  Port-0 m-lines and kinds nobody carries are rejected in place; ``result.kept`` are the same
  objects as before (same MSRP a=path), ``result.replaced`` were swapped for a new object.
- ``MsrpChatStream``: ``channel`` (``MsrpChannel``: send_message, next_event, drain,
  wait_connected, close), ``offered`` (``MsrpMedia``: path, secure, accept_types,
  accept_wrapped_types, chatroom), ``index``, ``kind``, ``accept``, ``fits``, ``close``. Every
  complete message is checked before its last chunk is answered: 400 malformed CPIM, 415
  wrapped type outside our accept-wrapped-types, then ``ChatOptions.check(content_type, body,
  cpim)`` (raise ``MsrpError(403, ...)`` for a spoofed From; store the message there).
- ``AudioStream``: ``open`` → ``engine.attach``, re-offer → ``engine.update``, ``close`` →
  ``engine.detach``; ``room``, ``participant``, ``answer`` (``AudioAnswer``), ``direction``.
  A second audio m-line is refused; an ``AudioEngineError`` refuses the m-line, or fails the
  offer with the engine's status (503, 488) when it is all the offer asks for
  (``request.alone``). An update the engine refuses removes the stream (detached on commit).
- ``MsrpFileStream`` + ``FileStore`` (the spool and its index; a parameter, one per room
  later): ``await stream.run()`` stores a push / serves a pull; ``outcome``, ``stored``.
- Streams of the application's own (echo's RTP reflector) implement :class:`Stream`.
"""

from .audio import AudioStream
from .base import RTP_PROFILES, MediaKind, Stream, classify
from .chat import ChatOptions, CpimValidator, MessageCheck, MsrpChatStream
from .files import MsrpFileStream
from .filestore import FileStore, Verdict, finish_and_commit
from .msrp import MsrpLeg, MsrpOffer, read_msrp_offer
from .negotiation import Answerer, Negotiation, StreamRequest, negotiate

__all__ = [
    "RTP_PROFILES",
    "Answerer",
    "AudioStream",
    "ChatOptions",
    "CpimValidator",
    "FileStore",
    "MediaKind",
    "MessageCheck",
    "MsrpChatStream",
    "MsrpFileStream",
    "MsrpLeg",
    "MsrpOffer",
    "Negotiation",
    "Stream",
    "StreamRequest",
    "Verdict",
    "classify",
    "finish_and_commit",
    "negotiate",
    "read_msrp_offer",
]
