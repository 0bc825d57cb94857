"""The SIP side of one chat session (RFC 7573): an MSRP chat m-line (RFC 4975) through the
stream layer, answered or offered, and what the peer takes.

- :func:`answer_chat`: a SIP user's INVITE answered with its first MSRP chat m-line
  (``negotiate`` + :class:`~control.streams.MsrpChatStream`; every other m-line refused, port
  0; 488 when there is no usable chat m-line). Our answer lists what the gateway takes
  (:data:`CHAT_TYPES`, wrapped :data:`WRAPPED_TYPES`), whatever the offer listed; the
  application's ``check`` sees every message before its 200.
- :func:`reanswer`: a re-INVITE keeps the chat stream when it still fits (same MSRP path, RFC
  4975 §8.1: a session refresh, RFC 4028); one that would need a new MSRP session is 488 and
  the session goes on as it was.
- :func:`call_chat`: our INVITE with one MSRP chat m-line (:class:`~control.msrp.chat.
  ChatStream`, ``a=setup:actpass`` when we listen, RFC 6135), CANCELled when ``cancel`` is
  done; returns once the MSRP session is connected, else the failure as a SIP status.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from control.app import ReOffer
from control.msrp.chat import ChatStream
from control.msrp.iscomposing import ISCOMPOSING_CONTENT_TYPE
from control.msrp.sdp import Setup, accept_msrp, answer_setup, parse_msrp_media
from control.msrp.transport import MsrpChannel, MsrpConnectError, MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import Session, place_call
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent
from control.streams import (
    ChatOptions,
    MediaKind,
    MessageCheck,
    MsrpChatStream,
    Stream,
    StreamRequest,
    negotiate,
)

__all__ = [
    "CHAT_TYPES",
    "CHUNK_SIZE",
    "WRAPPED_TYPES",
    "ChatLeg",
    "answer_chat",
    "call_chat",
    "reanswer",
]

# What our chat m-line takes (offer and answer alike): what XMPP carries, bare or in CPIM.
CHAT_TYPES = ("message/cpim", "text/plain", "text/html", ISCOMPOSING_CONTENT_TYPE)
WRAPPED_TYPES = ("text/plain", "text/html", ISCOMPOSING_CONTENT_TYPE)
CHUNK_SIZE = 2048  # bytes of one MSRP SEND we write (RFC 4975 §7.1: chunk large messages)


@dataclass(slots=True)
class ChatLeg:
    """The SIP side of a session: its dialog, its MSRP channel, what the peer takes."""

    dialog: Session | None = None
    channel: MsrpChannel | None = None
    accept_types: tuple[str, ...] = CHAT_TYPES
    accept_wrapped_types: tuple[str, ...] = WRAPPED_TYPES
    local_sdp: sdp.SdpSession | None = None  # our side of the SDP (re-offers)
    streams: dict[int, Stream] = field(default_factory=dict)  # an answered INVITE's streams
    offered: ChatStream | None = None  # the chat m-line of an INVITE of ours


def _sdp_session(rng: random.Random, host: str) -> sdp.SdpSession:
    return sdp.SdpSession(sess_id=rng.randrange(1, 2**31), address=host, username="chorus")


async def answer_chat(
    msrp: MsrpTransport, offer: sdp.SessionDescription, *, rng: random.Random, check: MessageCheck
) -> tuple[bytes, MsrpChatStream, ChatLeg]:
    """The answer to an INVITE's offer taking its first MSRP chat m-line (module doc)."""

    async def answerer(request: StreamRequest) -> Stream | None:
        if request.kind is not MediaKind.CHAT or request.has_other(MediaKind.CHAT):
            return None
        options = ChatOptions(
            accept_types=CHAT_TYPES, accept_wrapped_types=WRAPPED_TYPES, check=check
        )
        return MsrpChatStream.open(msrp, request.offer, request.index, options)

    result = await negotiate(offer, {}, answerer)
    chats = [s for s in result.created if isinstance(s, MsrpChatStream)]
    if not result.accepted or not chats:
        await result.abort()
        raise SipError(488, "no usable MSRP chat stream")
    stream = chats[0]
    state = _sdp_session(rng, stream.channel.local_uri.host)
    answer = state.answer_body(offer, result.decisions)
    await result.commit()
    leg = ChatLeg(
        channel=stream.channel,
        accept_types=stream.offered.accept_types,
        accept_wrapped_types=stream.offered.accept_wrapped_types or ("*",),
        local_sdp=state,
        streams=dict(result.streams),
    )
    return answer, stream, leg


async def reanswer(leg: ChatLeg, reoffer: ReOffer) -> bool:
    """Answer a re-INVITE keeping the chat stream (module doc); False when it was 488."""
    if leg.offered is not None:
        return _reanswer_ours(leg, leg.offered, reoffer)

    async def refuse_new(request: StreamRequest) -> Stream | None:
        return None

    result = await negotiate(reoffer.offer, leg.streams, refuse_new)
    kept = [s for s in result.kept if isinstance(s, MsrpChatStream)]
    if not kept or leg.local_sdp is None:
        await result.abort()
        reoffer.reject(488, "the chat stream cannot change in this session")
        return False
    reoffer.answer(leg.local_sdp.answer_body(reoffer.offer, result.decisions))
    await result.commit()
    leg.streams = dict(result.streams)
    return True


def _reanswer_ours(leg: ChatLeg, stream: ChatStream, reoffer: ReOffer) -> bool:
    """A re-offer in a session whose INVITE was ours: its one MSRP m-line must keep the path
    the SIP user answered with (the same MSRP session); we answer with our path and the
    role opposite theirs (RFC 6135)."""
    offer = reoffer.offer
    theirs = None
    if len(offer.media) == 1 and stream.remote is not None and leg.local_sdp is not None:
        media = offer.media[0]
        try:
            theirs = parse_msrp_media(media, offer.direction_of(media))
        except SipError:
            theirs = None
    if theirs is None or stream.remote is None or theirs.path != stream.remote.path:
        reoffer.reject(488, "the chat stream cannot change in this session")
        return False
    setup, _ = answer_setup(theirs.setup)
    accept = accept_msrp(
        stream.local_uri, CHAT_TYPES, accept_wrapped_types=WRAPPED_TYPES, setup=setup
    )
    assert leg.local_sdp is not None
    reoffer.answer(leg.local_sdp.answer_body(offer, [accept]))
    return True


async def call_chat(
    ua: UserAgent,
    msrp: MsrpTransport,
    leg: ChatLeg,
    target: SipUri,
    from_: SipUri,
    *,
    timeout: float,
    cancel: asyncio.Future[object] | None,
    on_dialog: Callable[[Session], None],
) -> tuple[int, str] | None:
    """Our INVITE with one MSRP chat m-line; None once MSRP is connected (``leg`` holds the
    dialog and channel), else the failure as a SIP status (the stream closed; a dialog that
    came up stays in ``leg`` for the caller to BYE). ``on_dialog`` sees the dialog at once."""
    secure = msrp.listener(True) is not None or msrp.listener(False) is None
    listening = msrp.listener(secure) is not None
    stream = ChatStream(
        msrp,
        secure=secure,
        accept_types=CHAT_TYPES,
        accept_wrapped_types=WRAPPED_TYPES,
        setup=Setup.ACTPASS if listening else Setup.ACTIVE,
    )
    state = _sdp_session(ua.rng, stream.local_uri.host)
    offer = sdp.serialize(state.offer([stream.offer_media()]))
    leg.offered, leg.local_sdp = stream, state
    failure = await _call(ua, leg, stream, offer, target, from_, timeout, cancel, on_dialog)
    if failure is not None:
        stream.close()
    return failure


async def _call(
    ua: UserAgent,
    leg: ChatLeg,
    stream: ChatStream,
    offer: bytes,
    target: SipUri,
    from_: SipUri,
    timeout: float,
    cancel: asyncio.Future[object] | None,
    on_dialog: Callable[[Session], None],
) -> tuple[int, str] | None:
    try:
        dialog, response = await place_call(
            ua,
            target,
            from_=NameAddr(from_),
            offer=offer,
            timeout=timeout,
            cancel=cancel,
        )
        if dialog is None:
            return response.status, response.reason
        leg.dialog = dialog
        on_dialog(dialog)
        answered = sdp.parse(response.body)
        if leg.local_sdp is not None:
            leg.local_sdp.answer_received(answered)  # a re-offer's answer builds on it
        if len(answered.media) != 1 or not answered.media[0].port:
            return 488, "chat m-line refused"
        leg.channel = stream.answered(answered.media[0])
        if stream.remote is not None:
            leg.accept_types = stream.remote.accept_types
            leg.accept_wrapped_types = stream.remote.accept_wrapped_types or ("*",)
        await leg.channel.wait_connected(timeout)
    except SipError as exc:
        return exc.status, exc.reason
    except sdp.SdpError:
        return 488, "unusable answer"
    except (MsrpConnectError, TimeoutError):
        return 480, "MSRP session not connected"
    except OSError as exc:
        return 503, f"SIP side not reachable: {exc}"
    return None
