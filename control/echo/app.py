"""Echo: audio played back to the caller; out-of-dialog MESSAGEs answered with their text.

The simplest application on the SIP core, and the one the core is proven with: INVITE with
audio, re-INVITE (hold, resume, codec change), BYE, and a session limit that ends the call.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from control.echo.reflector import EchoMedia, RtpReflector
from control.media.ports import PortAllocator, PortsExhausted
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.session import IncomingCall, Offer, Session
from control.sip.uri import NameAddr
from control.sip.useragent import IncomingRequest, UserAgent, build_request

log = logging.getLogger("chorus.echo")

CODEC_RATES = {"PCMU": 8000, "PCMA": 8000, "G722": 8000, "telephone-event": 8000}
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")


@dataclass(frozen=True, slots=True)
class EchoLimits:
    session_limit: float = 600.0
    max_sessions: int = 2000
    max_message_bytes: int = 64 * 1024


class EchoCall:
    """One echo session: its SDP state, its reflector, its limit timer."""

    def __init__(
        self, app: EchoApp, session: Session, media: EchoMedia, sdp_session: sdp.SdpSession
    ):
        self.app = app
        self.session = session
        self.media = media
        self.sdp = sdp_session

    async def run(self) -> None:
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
            self.media.close()

    async def reinvite(self, offer: Offer) -> None:
        try:
            description = sdp.parse(offer.body) if offer.has_sdp else None
        except SipError as exc:
            offer.incoming.respond(exc.status, exc.reason)
            return
        if description is None:
            offer.incoming.respond(488)  # offerless re-INVITE: not supported here
            return
        try:
            answer = self.app.answer(description, self.sdp, self.media)
        except SipError as exc:
            offer.incoming.respond(exc.status, exc.reason)
            return
        self.session.answer_reinvite(offer, answer)


class EchoApp:
    def __init__(
        self,
        ua: UserAgent,
        ports: PortAllocator,
        *,
        codecs: tuple[str, ...] = ("G722", "PCMU", "PCMA", "telephone-event"),
        limits: EchoLimits = EchoLimits(),
    ) -> None:
        self.ua = ua
        self.ports = ports
        self.supported = [(name, CODEC_RATES[name]) for name in codecs if name in CODEC_RATES]
        self.limits = limits
        self.calls: set[EchoCall] = set()

    def answer(
        self, offer: sdp.SessionDescription, state: sdp.SdpSession, media: EchoMedia
    ) -> bytes:
        """Accept the first audio stream we can reflect; reject the rest (RFC 3264 §6)."""
        decisions: list[sdp.Accept | sdp.Reject] = []
        audio_taken = False
        for stream in offer.media:
            decision: sdp.Accept | sdp.Reject = sdp.Reject()
            if (
                not audio_taken
                and stream.media == "audio"
                and stream.proto in RTP_PROFILES
                and not stream.rejected
            ):
                decision = sdp.accept_audio(
                    stream, self.supported, port=media.port, offerer_order=True
                )
                if isinstance(decision, sdp.Accept):
                    audio_taken = True
                    direction = offer.direction_of(stream)
                    # We send only when they listen (hold: sendonly/inactive from them).
                    media.reflector.sending = direction.receives
                    connection = offer.connection_of(stream)
                    if media.reflector.remote is None and connection and stream.port:
                        media.reflector.remote = (connection.address, stream.port)
            decisions.append(decision)
        if not audio_taken:
            raise SipError(488, "no audio stream with a common codec")
        return sdp.serialize(state.answer(offer, decisions))

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
        media = EchoMedia(self.ports, RtpReflector(self.ua.rng.getrandbits(32)))
        try:
            await media.open(host)
        except PortsExhausted:
            call.reject(503, "no RTP ports left")
            return
        state = sdp.SdpSession(
            sess_id=self.ua.rng.randrange(1, 2**31), address=host, username="chorus"
        )
        try:
            answer = self.answer(offer, state, media)
        except SipError as exc:
            media.close()
            call.reject(exc.status, exc.reason)
            return
        if call.incoming.cancelled.done():
            media.close()
            return
        session = call.accept(answer, user="echo")
        echo_call = EchoCall(self, session, media, state)
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
        await asyncio.gather(
            *(call.session.bye(reason="shutdown") for call in list(self.calls)),
            return_exceptions=True,
        )
