"""Echo: audio played back to the caller, MSRP chat sent back, MESSAGEs answered with their text.

The simplest application on the SIP core, and the one the core is proven with: INVITE with
audio, chat, file transfer or any mix, re-INVITE (hold, resume, codec change, adding and
removing chat), BYE, and a session limit that ends the call. The m-lines are negotiated by
the stream layer (:func:`control.streams.negotiate`); what is echo's own is the RTP reflector
(:class:`EchoAudio`, a stream of the layer's shape), sending chat back re-addressed
(:mod:`control.echo.chat`), answering MESSAGE with its text, and its limits.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from functools import cached_property

from control.app import (
    IncomingCall,
    IncomingMessage,
    Messenger,
    Referral,
    ReOffer,
    Subscription,
    on_reoffer,
)
from control.echo.chat import EchoChat
from control.echo.reflector import EchoMedia, EchoSockets, RtpReflector
from control.media.answer import answer_stream_crypto
from control.media.ports import PortAllocator, PortsExhausted
from control.media.srtp import CryptoChoice, CryptoNegotiationError, SrtpPolicy
from control.msrp.cpim import CpimAddress
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import Session
from control.sip.uri import NameAddr
from control.sip.useragent import UserAgent
from control.streams import (
    RTP_PROFILES,
    FileStore,
    MediaKind,
    MsrpChatStream,
    MsrpFileStream,
    Negotiation,
    Stream,
    StreamRequest,
    negotiate,
)

log = logging.getLogger("chorus.echo")

# Echo reflects packets untouched, so any codec the configuration names can be answered; the
# RTP clock rates are what SDP matches on (G.722's is 8000 by RFC 3551's mistake).
CODEC_RATES: dict[str, tuple[int, ...]] = {
    "PCMU": (8000,),
    "PCMA": (8000,),
    "G722": (8000,),
    "speex": (16000, 8000),
    "opus": (48000,),
    "telephone-event": (8000, 16000, 48000),
}


@dataclass(frozen=True, slots=True)
class EchoLimits:
    session_limit: float = 600.0
    max_sessions: int = 2000
    max_message_bytes: int = 64 * 1024


class EchoAudio:
    """The call's reflector as the stream of one audio m-line (one per call)."""

    kind = MediaKind.AUDIO

    def __init__(self, call: EchoCall, index: int, accept: sdp.Accept) -> None:
        self.call = call
        self.index = index
        self.accept = accept

    @classmethod
    def open(cls, call: EchoCall, request: StreamRequest) -> EchoAudio | None:
        accept = call.answer_audio(request.offer, request.index)
        return cls(call, request.index, accept) if accept is not None else None

    def fits(self, offer: sdp.SessionDescription, index: int) -> bool:
        return index == self.index

    async def update(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        accept = self.call.answer_audio(offer, index)
        if accept is not None:
            self.accept = accept
        return accept

    async def close(self) -> None:
        self.call.media.reflector.sending = False  # the port stays: a re-offer may resume


class EchoCall:
    """One echo session: its SDP state, its reflector, its streams by m-line, its limit timer."""

    def __init__(
        self,
        app: EchoApp,
        media: EchoMedia,
        sdp_session: sdp.SdpSession,
        *,
        local: NameAddr,
        remote: NameAddr,
    ) -> None:
        self.app = app
        self.session: Session | None = None
        self.media = media
        self.sdp = sdp_session
        self._local = local  # who was called (To) and the caller (From)
        self._remote = remote
        self.streams: dict[int, Stream] = {}
        self.crypto: CryptoChoice | None = None  # SDES keys of the audio stream, if any
        self._tasks: set[asyncio.Task[None]] = set()

    # Chat and file streams' addresses, worked out when one is made (most calls are audio).
    @cached_property
    def service(self) -> CpimAddress:
        return CpimAddress(str(self._local.uri), "Echo")

    @cached_property
    def caller(self) -> CpimAddress:
        return CpimAddress(str(self._remote.uri), self._remote.display_name)

    async def negotiate(self, offer: sdp.SessionDescription) -> tuple[bytes, Negotiation]:
        """Answer an offer or re-offer: the first usable audio stream is reflected, every usable
        chat stream echoed, file transfers stored or served, the rest rejected (RFC 3264 §6).
        488 when nothing is usable. The caller commits (or aborts) the result."""
        result = await negotiate(offer, self.streams, self._answerer)
        try:
            if not result.accepted:
                raise SipError(488, "no audio stream with a common codec and no usable chat")
            answer = self.sdp.answer_body(offer, result.decisions)
        except SipError:
            await result.abort()
            raise
        return answer, result

    async def _answerer(self, request: StreamRequest) -> Stream | None:
        transport = self.app.msrp
        match request.kind:
            case MediaKind.AUDIO if not request.has_other(MediaKind.AUDIO):
                return EchoAudio.open(self, request)
            case MediaKind.CHAT if transport is not None:
                return MsrpChatStream.open(transport, request.offer, request.index)
            case MediaKind.FILE if transport is not None and self.app.files is not None:
                return MsrpFileStream.open(
                    transport, self.app.files, request.offer, request.index, sender=self.caller.uri
                )
        return None

    def answer_audio(self, offer: sdp.SessionDescription, index: int) -> sdp.Accept | None:
        """The reflector's answer to audio m-line ``index`` (``None``: refused)."""
        stream = offer.media[index]
        media = self.media
        if not media.port:
            return None
        try:
            crypto = answer_stream_crypto(
                stream, self.app.srtp, self.app.ua.rng.randbytes, self.crypto
            )
        except CryptoNegotiationError as exc:
            log.info("audio refused: %s", exc)
            return None
        attributes = [sdp.Attribute("crypto", str(crypto.local))] if crypto else []
        attributes += media.reflector.negotiate(stream)  # rtcp-mux, each format's RTP clock
        decision = sdp.accept_audio(
            stream, self.app.supported, port=media.port, attributes=attributes, offerer_order=True
        )
        if not isinstance(decision, sdp.Accept):
            return None
        if crypto is not self.crypto:
            media.reflector.srtp = crypto.context() if crypto is not None else None
            self.crypto = crypto
        # We send only when they listen (hold: sendonly/inactive from them).
        media.reflector.sending = offer.direction_of(stream).receives
        connection = offer.connection_of(stream)
        if media.reflector.remote is None and connection and stream.port:
            media.reflector.remote = (connection.address, stream.port)
        return decision

    async def settle(self, result: Negotiation) -> None:
        """The answer was sent: close what it removed, start what it created."""
        self.streams = result.streams
        await result.commit()
        for stream in result.created:
            if isinstance(stream, MsrpChatStream | MsrpFileStream):
                task = asyncio.create_task(self._run_msrp(stream))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_msrp(self, stream: MsrpChatStream | MsrpFileStream) -> None:
        if isinstance(stream, MsrpChatStream):
            chat = EchoChat(stream, service=self.service, caller=self.caller)
            reason = await chat.run()
            done = chat.echoed
        else:
            reason = await stream.run()
            done = stream.transfers
        await stream.close()
        log.info(
            "echo %s %s ended: %s (%d echoed)",
            stream.kind.value,
            stream.channel.session_id,
            reason,
            done,
        )
        if not self.live() and self.session is not None:
            await self.session.bye(reason="chat ended")

    def live(self) -> bool:
        """Audio, or an MSRP session still open: the call has something left."""
        for stream in self.streams.values():
            if isinstance(stream, MsrpChatStream | MsrpFileStream):
                if not stream.channel.closed:
                    return True
            elif stream.kind is MediaKind.AUDIO:
                return True
        return False

    async def run(self) -> None:
        assert self.session is not None
        on_reoffer(self.session, self.reinvite)
        terminated = self.session.terminated
        try:
            if await _done_within(terminated, self.app.limits.session_limit):
                log.info("echo call %s ended: %s", self.session.dialog.call_id, terminated.result())
            else:
                log.info("echo call %s reached its limit", self.session.dialog.call_id)
                await self.session.bye(reason="session limit")
        finally:
            self.close()

    def close(self) -> None:
        """BYE (or failure) ends every MSRP session; a connection nothing else uses goes too."""
        for stream in self.streams.values():
            if isinstance(stream, MsrpFileStream):
                stream.close_now()
            elif isinstance(stream, MsrpChatStream):
                stream.channel.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.media.close()
        # Each stream refers back to its call: without this an ended call (its offer, answer,
        # reflector, RTCP state: some 70 objects) is garbage only the cyclic collector frees.
        self.streams = {}

    async def reinvite(self, reoffer: ReOffer) -> None:
        description = reoffer.offer
        if _wants_audio(description) and not self.media.port:
            try:
                await self.media.open(self.sdp.connection.address)
            except PortsExhausted:
                reoffer.reject(503, "no RTP ports left")
                return
        if self.app.files is not None:
            await self.app.files.settled()
        try:
            answer, result = await self.negotiate(description)
        except SipError as exc:
            reoffer.reject(exc.status, exc.reason)
            return
        reoffer.answer(answer)
        await self.settle(result)


async def _done_within(future: asyncio.Future[str], timeout: float) -> bool:
    """Wait until ``future`` is done (True) or ``timeout`` seconds pass (False); the future
    itself is never cancelled. What ``wait_for(shield(future), timeout)`` does, with one
    future and one timer instead of three futures, a timer and a callback chain: every echo
    call waits like this for its BYE."""
    if future.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    future.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        future.remove_done_callback(wake)
    return future.done()


def _wants_audio(offer: sdp.SessionDescription) -> bool:
    return any(
        m.media == "audio" and m.proto in RTP_PROFILES and not m.rejected for m in offer.media
    )


class EchoApp:
    def __init__(
        self,
        ua: UserAgent,
        ports: PortAllocator,
        *,
        codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA", "telephone-event"),
        limits: EchoLimits = EchoLimits(),
        msrp: MsrpTransport | None = None,
        files: FileStore | None = None,
        messenger: Messenger | None = None,
        srtp: SrtpPolicy = SrtpPolicy.OPTIONAL,
        rtcp_interval: float = 5.0,  # RFC 3550 §6.2 minimum RTCP interval ([rtp] rtcp_interval)
    ) -> None:
        self.ua = ua
        self.ports = ports
        # Socket pairs kept bound between calls: an eighth of the range at most, 64 pairs.
        self.sockets = EchoSockets(ports, max_idle=min(64, ports.capacity // 8))
        self.srtp = srtp
        self.rtcp_interval = rtcp_interval
        self.supported = [(name, rate) for name in codecs for rate in CODEC_RATES.get(name, ())]
        self.limits = limits
        self.msrp = msrp
        self.files = files
        self.messenger = messenger or Messenger(ua)
        self.calls: set[EchoCall] = set()

    async def incoming_invite(self, call: IncomingCall) -> None:
        if len(self.calls) >= self.limits.max_sessions:
            call.reject(486, "Too many echo sessions")
            return
        offer = call.offer
        host = call.local_address
        # One draw for the SSRC and the origin's sess-id (the UA's source may be a syscall).
        bits = self.ua.rng.getrandbits(63)
        reflector = RtpReflector(bits & 0xFFFFFFFF, rtcp_interval=self.rtcp_interval)
        media = EchoMedia(self.sockets, reflector)
        if _wants_audio(offer):
            try:
                await media.open(host)
            except PortsExhausted:
                call.reject(503, "no RTP ports left")
                return
        state = sdp.SdpSession(sess_id=(bits >> 32) or 1, address=host, username="chorus")
        echo_call = EchoCall(
            self, media, state, local=call.local_identity, remote=call.remote_identity
        )
        if self.files is not None:
            await self.files.settled()  # a pull sees every file whose last chunk arrived
        try:
            answer, result = await echo_call.negotiate(offer)
        except SipError as exc:
            echo_call.close()
            call.reject(exc.status, exc.reason)
            return
        if call.cancelled:
            await result.abort()
            echo_call.close()
            return
        echo_call.session = call.accept(answer, user="echo")
        await echo_call.settle(result)
        self.calls.add(echo_call)
        try:
            await echo_call.run()
        finally:
            self.calls.discard(echo_call)

    async def incoming_message(self, message: IncomingMessage) -> None:
        """Answer 200 and send the text back in a MESSAGE of our own (RFC 3428)."""
        if len(message.body) > self.limits.max_message_bytes:
            message.reject(413)
            return
        message.accept()
        sender = message.sender
        await self.messenger.send(
            NameAddr(sender.uri, sender.display_name),
            NameAddr(message.to.uri),
            message.content_type,
            message.body,
            reply_to=message,
        )

    async def incoming_subscribe(self, subscription: Subscription) -> None:
        subscription.reject(489)  # RFC 6665 §7.2.2: echo offers no event packages

    async def incoming_refer(self, referral: Referral) -> None:
        referral.reject(405, headers=[("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE")])

    async def shutdown(self) -> None:
        calls = [c for c in list(self.calls) if c.session is not None]
        results = await asyncio.gather(
            *(c.session.bye(reason="shutdown") for c in calls if c.session is not None),
            return_exceptions=True,
        )
        for echo_call, result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                assert echo_call.session is not None
                log.warning(
                    "echo call %s: BYE at shutdown failed: %r",
                    echo_call.session.dialog.call_id,
                    result,
                )
        if self.files is not None:
            await self.files.settled()  # a file being committed is finished, not cut off
        self.sockets.close()
