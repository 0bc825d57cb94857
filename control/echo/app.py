"""Echo: audio played back to the caller, MSRP chat sent back, MESSAGEs answered with their text.

The simplest application on the SIP core, and the one the core is proven with: INVITE with
audio, chat or both, re-INVITE (hold, resume, codec change, adding and removing chat), BYE, and a
session limit that ends the call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from control.echo.chat import CpimValidator, EchoChat
from control.echo.files import EchoFiles
from control.echo.reflector import EchoMedia, RtpReflector
from control.media.answer import answer_stream_crypto
from control.media.ports import PortAllocator, PortsExhausted
from control.media.srtp import CryptoChoice, CryptoNegotiationError, SrtpPolicy
from control.msrp.cpim import CpimAddress
from control.msrp.sdp import Setup, accept_msrp, answer_setup, is_msrp, parse_msrp_media
from control.msrp.transport import MsrpTransport
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import IncomingCall, Offer, Session
from control.sip.uri import NameAddr
from control.sip.useragent import IncomingRequest, UserAgent, build_request

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
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")


@dataclass(frozen=True, slots=True)
class EchoLimits:
    session_limit: float = 600.0
    max_sessions: int = 2000
    max_message_bytes: int = 64 * 1024


class EchoCall:
    """One echo session: its SDP state, its reflector, its chat streams, its limit timer.

    Chat streams are kept per m-line index, so a re-INVITE that repeats a chat m-line keeps
    its MSRP session (same a=path in the answer), one that sets its port to 0 ends it, and a new
    one starts another (RFC 3264 §8).
    """

    def __init__(
        self,
        app: EchoApp,
        media: EchoMedia,
        sdp_session: sdp.SdpSession,
        *,
        service: CpimAddress,
        caller: CpimAddress,
    ) -> None:
        self.app = app
        self.session: Session | None = None
        self.media = media
        self.sdp = sdp_session
        self.service = service
        self.caller = caller
        self.chats: dict[int, EchoChat] = {}
        self.audio = False
        self.crypto: CryptoChoice | None = None  # SDES keys of the audio stream, if any
        self._tasks: set[asyncio.Task[None]] = set()

    def negotiate(self, offer: sdp.SessionDescription) -> bytes:
        """Answer an offer or re-offer: the first usable audio stream is reflected, every usable
        chat stream echoed, the rest rejected (RFC 3264 §6). 488 when nothing is usable."""
        decisions: list[sdp.Accept | sdp.Reject] = []
        chats: dict[int, EchoChat] = {}
        created: list[EchoChat] = []
        audio_taken = False
        for index, stream in enumerate(offer.media):
            decision: sdp.Accept | sdp.Reject = sdp.Reject()
            if stream.rejected:
                pass
            elif not audio_taken and stream.media == "audio" and stream.proto in RTP_PROFILES:
                decision = self._audio(offer, stream)
                audio_taken = isinstance(decision, sdp.Accept)
            elif is_msrp(stream):
                decision, chat = self._chat(offer, stream, self.chats.get(index))
                if chat is not None:
                    chats[index] = chat
                    if chat is not self.chats.get(index):
                        created.append(chat)
            decisions.append(decision)
        try:
            if not audio_taken and not chats:
                raise SipError(488, "no audio stream with a common codec and no usable chat")
            answer = sdp.serialize(self.sdp.answer(offer, decisions))
        except SipError:
            for chat in created:
                chat.close()
            raise
        for index, chat in self.chats.items():
            if chats.get(index) is not chat:
                chat.close()  # removed or replaced by this offer
        self.chats = chats
        self.audio = audio_taken
        if not audio_taken:
            self.media.reflector.sending = False
        return answer

    def _audio(
        self, offer: sdp.SessionDescription, stream: sdp.MediaDescription
    ) -> sdp.Accept | sdp.Reject:
        media = self.media
        if not media.port:
            return sdp.Reject()
        try:
            crypto = answer_stream_crypto(
                stream, self.app.srtp, self.app.ua.rng.randbytes, self.crypto
            )
        except CryptoNegotiationError as exc:
            log.info("audio refused: %s", exc)
            return sdp.Reject()
        attributes = [sdp.Attribute("crypto", str(crypto.local))] if crypto else []
        attributes += media.reflector.negotiate(stream)  # rtcp-mux, each format's RTP clock
        decision = sdp.accept_audio(
            stream, self.app.supported, port=media.port, attributes=attributes, offerer_order=True
        )
        if isinstance(decision, sdp.Accept):
            if crypto is not self.crypto:
                media.reflector.srtp = crypto.context() if crypto is not None else None
                self.crypto = crypto
            # We send only when they listen (hold: sendonly/inactive from them).
            media.reflector.sending = offer.direction_of(stream).receives
            connection = offer.connection_of(stream)
            if media.reflector.remote is None and connection and stream.port:
                media.reflector.remote = (connection.address, stream.port)
        return decision

    def _chat(
        self,
        offer: sdp.SessionDescription,
        stream: sdp.MediaDescription,
        existing: EchoChat | None,
    ) -> tuple[sdp.Accept | sdp.Reject, EchoChat | None]:
        transport = self.app.msrp
        if transport is None:
            return sdp.Reject(), None
        if stream.has("file-selector"):  # RFC 5547 file transfer: control/echo/files.py
            if self.app.files is None:
                return sdp.Reject(), None
            return self.app.files.negotiate(
                transport, offer, stream, existing, service=self.service, caller=self.caller
            )
        try:
            theirs = parse_msrp_media(stream, offer.direction_of(stream))
        except SipError as exc:
            log.info("unusable chat m-line: %s", exc.reason)
            return sdp.Reject(), None
        if theirs.setup is Setup.HOLDCONN:
            return sdp.Reject(), None
        setup, active = answer_setup(theirs.setup)
        if existing is not None and existing.fits(theirs, setup):
            chat = existing
        else:
            if not active and transport.listener(theirs.secure) is None:
                return sdp.Reject(), None  # no msrps (or msrp) listener configured
            channel = transport.open(
                transport.local_uri(theirs.secure),
                theirs.path,
                active=active,
                accept_types=theirs.accept_types,
                validator=CpimValidator(theirs.accept_wrapped_types or theirs.accept_types),
            )
            chat = EchoChat(channel, theirs, setup, service=self.service, caller=self.caller)
        accept = accept_msrp(
            chat.channel.local_uri,
            theirs.accept_types,
            accept_wrapped_types=theirs.accept_wrapped_types,
            max_size=transport.max_message_bytes,
            setup=setup,
        )
        return accept, chat

    def start_chats(self) -> None:
        """Run the chat streams the last answer created (after that answer was sent)."""
        for chat in self.chats.values():
            if not chat.started:
                chat.started = True
                task = asyncio.create_task(self._run_chat(chat))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_chat(self, chat: EchoChat) -> None:
        reason = await chat.run()
        chat.close()
        log.info("echo chat %s ended: %s (%d echoed)", chat.channel.session_id, reason, chat.echoed)
        live = self.audio or any(not c.channel.closed for c in self.chats.values())
        if not live and self.session is not None:
            await self.session.bye(reason="chat ended")

    async def run(self) -> None:
        assert self.session is not None
        self.session.on_reinvite = self.reinvite
        try:
            reason = await asyncio.wait_for(
                asyncio.shield(self.session.terminated), self.app.limits.session_limit
            )
            log.info("echo call %s ended: %s", self.session.dialog.call_id, reason)
        except TimeoutError:
            log.info("echo call %s reached its limit", self.session.dialog.call_id)
            await self.session.bye(reason="session limit")
        finally:
            self.close()

    def close(self) -> None:
        """BYE (or failure) ends every MSRP session; a connection nothing else uses goes too."""
        for chat in self.chats.values():
            chat.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.media.close()

    async def reinvite(self, offer: Offer) -> None:
        assert self.session is not None
        try:
            description = sdp.parse(offer.body) if offer.has_sdp else None
        except SipError as exc:
            offer.incoming.respond(exc.status, exc.reason)
            return
        if description is None:
            offer.incoming.respond(488)  # offerless re-INVITE: not supported here
            return
        if _wants_audio(description) and not self.media.port:
            try:
                await self.media.open(self.sdp.connection.address)
            except PortsExhausted:
                offer.incoming.respond(503, "no RTP ports left")
                return
        if self.app.files is not None:
            await self.app.files.settled()
        try:
            answer = self.negotiate(description)
        except SipError as exc:
            offer.incoming.respond(exc.status, exc.reason)
            return
        self.session.answer_reinvite(offer, answer)
        self.start_chats()


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
        files: EchoFiles | None = None,
        srtp: SrtpPolicy = SrtpPolicy.OPTIONAL,
        rtcp_interval: float = 5.0,  # RFC 3550 §6.2 minimum RTCP interval ([rtp] rtcp_interval)
    ) -> None:
        self.ua = ua
        self.ports = ports
        self.srtp = srtp
        self.rtcp_interval = rtcp_interval
        self.supported = [(name, rate) for name in codecs for rate in CODEC_RATES.get(name, ())]
        self.limits = limits
        self.msrp = msrp
        self.files = files
        self.calls: set[EchoCall] = set()

    async def incoming_invite(self, call: IncomingCall) -> None:
        if len(self.calls) >= self.limits.max_sessions:
            call.reject(486, "Too many echo sessions")
            return
        if not call.has_sdp:
            call.reject(488, "an SDP offer is required")
            return
        try:
            offer = sdp.parse(call.body)
        except SipError as exc:
            log.info("bad SDP from %s: %s", call.incoming.source, exc.reason)
            call.reject(exc.status, exc.reason)
            return
        host, _ = self.ua.local_host_port("udp", call.incoming.source.host)
        reflector = RtpReflector(self.ua.rng.getrandbits(32), rtcp_interval=self.rtcp_interval)
        media = EchoMedia(self.ports, reflector)
        if _wants_audio(offer):
            try:
                await media.open(host)
            except PortsExhausted:
                call.reject(503, "no RTP ports left")
                return
        state = sdp.SdpSession(
            sess_id=self.ua.rng.randrange(1, 2**31), address=host, username="chorus"
        )
        caller = call.remote_identity
        echo_call = EchoCall(
            self,
            media,
            state,
            service=CpimAddress(str(call.request.to.uri), "Echo"),
            caller=CpimAddress(str(caller.uri), caller.display_name),
        )
        if self.files is not None:
            await self.files.settled()  # a pull sees every file whose last chunk arrived
        try:
            answer = echo_call.negotiate(offer)
        except SipError as exc:
            echo_call.close()
            call.reject(exc.status, exc.reason)
            return
        if call.incoming.cancelled.done():
            echo_call.close()
            return
        echo_call.session = call.accept(answer, user="echo")
        echo_call.start_chats()
        self.calls.add(echo_call)
        try:
            await echo_call.run()
        finally:
            self.calls.discard(echo_call)

    async def incoming_message(self, incoming: IncomingRequest) -> None:
        """Answer 200 and send the text back in a MESSAGE of our own (RFC 3428)."""
        request = incoming.request
        if len(request.body) > self.limits.max_message_bytes:
            incoming.respond(413)
            return
        content_type = request.headers.get("Content-Type") or "text/plain"
        incoming.respond(200, to_tag=self.ua.token(12))
        sender = request.from_
        reply = build_request(
            "MESSAGE",
            sender.uri,
            from_=NameAddr(request.to.uri).with_tag(self.ua.token(12)),
            to=NameAddr(sender.uri, sender.display_name),
            call_id=self.ua.token(24),
            body=request.body,
            content_type=content_type,
        )
        peer = (
            await self.ua.resolve(self.ua.outbound_proxy)
            if self.ua.outbound_proxy
            else incoming.source
        )
        outgoing = self.ua.send_request(reply, peer)
        response = await outgoing.final
        if response.status >= 300:
            log.info("echo MESSAGE to %s answered %s", sender.uri, response.status)

    async def incoming_subscribe(self, incoming: IncomingRequest) -> None:
        incoming.respond(489)  # RFC 6665 §7.2.2: echo offers no event packages

    async def incoming_refer(self, incoming: IncomingRequest) -> None:
        incoming.respond(405, headers=[("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE")])

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
