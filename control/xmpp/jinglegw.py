"""Jingle audio through the gateway (issue 12 item 6): the asyncio glue between the
component's Jingle iqs and XEP-0353 messages, a :class:`~control.xmpp.jinglemedia.WebRtcLeg`
per call, and a SIP INVITE with plain RTP, following the rules of control/xmpp/jinglecall.py.

XMPP → SIP. An XMPP user calls ``user@<sip domain>``:

- with XEP-0353 (Conversations, Dino): the ``<propose/>`` places the INVITE at once (the
  leg's RTP socket, the bridged codecs); a 180 is a ``<ringing/>``, the 200 a ``<proceed/>``
  from ``user@<sip domain>/<RESOURCE>``, and the session-initiate that follows (sid = the
  propose's id) is answered by the leg with a session-accept. A SIP failure is a
  ``<reject/>`` with :func:`~control.xmpp.jinglecall.reason_for_status`; a ``<retract/>``
  CANCELs the INVITE.
- with a session-initiate straight to the gateway's JID: acked, the INVITE placed, 180 →
  session-info ringing, 200 → session-accept, a SIP failure → session-terminate with the
  mapped reason.

SIP → XMPP. An INVITE with an audio m-line to ``sip:user@<xmpp domain>`` is a ``<propose/>``
to the bare JID from ``caller@<sip domain>/<RESOURCE>``; a ``<ringing/>`` is a 180, the
``<proceed/>`` of a device gets the leg's session-initiate, its session-accept the 200 with
the leg's RTP answer; a reject or a terminate before the accept is
:func:`~control.xmpp.jinglecall.status_for_reason`.

A room's audio: a Jingle call to ``room@<sip domain>`` is an INVITE to ``sip:room@<sip
domain>``, which the SIP routing (the provider's proxy, or Chorus as its own outbound proxy)
brings to the conference application when that domain is the rooms': the leg joins the mix as
an ordinary RTP participant (tests/test_xmpp_jingle_gateway.py).

Either way, a BYE ends the Jingle session (terminate ``success``, and a XEP-0353
``<finish/>`` when the call began with a propose), a session-terminate ends the dialog (BYE).
Calls are bounded by ``max_calls`` (past it: 486 toward SIP, ``<reject/>`` busy or
``resource-constraint`` toward XMPP), ringing by ``ring_timeout``. The XMPP server lost ends
every call. Hold both ways: a XEP-0167 hold / unhold is a re-offer toward SIP that stops /
resumes receiving, a SIP re-offer that stops / resumes receiving a session-info hold / unhold.

The Jingle media is ICE with DTLS-SRTP, all the leg (aiortc) terminates, or plain RTP:
a session-initiate straight to the gateway offering XEP-0177 raw UDP with RTP/AVP is
translated, no leg (control/xmpp/jingleplain.py): its description and candidate are the
INVITE's offer, the 200's answer the session-accept, RTP flows phone to phone (no hold; a
SIP re-offer is answered only when it changes nothing, a refresh, else 488); a bad candidate
is ``bad-request``. Other plain RTP (ICE without a fingerprint, SDES, a plain
session-initiate after a proceed, a plain session-accept of ours) ends the call with
``unsupported-transports`` (:data:`PLAIN_RTP`; 488 toward a SIP caller).

aioice 0.13 has no setting for the addresses it gathers host candidates on: with
``ice_addresses`` configured, :func:`gathering_on` puts them in for the time aiortc gathers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from xml.etree import ElementTree as ET

from control.app import IncomingCall, ReOffer, on_reoffer
from control.media.codecs import PcmuCodec, codec_for
from control.sip import sdp
from control.sip.errors import SipError
from control.sip.message import Response
from control.sip.session import Session, place_call
from control.sip.uri import NameAddr, SipUri
from control.sip.useragent import UserAgent
from control.xmpp.addressing import Addressing, AddressRefused, Jid
from control.xmpp.component import Component, XmppIq
from control.xmpp.jingle import (
    Action,
    Content,
    Jingle,
    JingleError,
    Reason,
    parse_jingle,
)
from control.xmpp.jinglebuild import build_jingle, error_element
from control.xmpp.jinglecall import (
    direction_for_info,
    info_for_direction,
    reason_for_status,
    status_for_reason,
)
from control.xmpp.jinglemedia import (
    SIP_CODECS,
    WebRtcLeg,
    gathering_on,
    use_answer,
    webrtc_audio,
)
from control.xmpp.jinglemessage import JingleMessage, jingle_message, read_jingle_message
from control.xmpp.jingleplain import (
    check_offer,
    plain_accept,
    plain_audio,
    plain_offer,
    plain_reanswer,
)
from control.xmpp.jinglesession import (
    Accepted,
    Informed,
    Initiated,
    JingleSession,
    JingleSessions,
    Terminated,
)

__all__ = ["PLAIN_RTP", "RESOURCE", "JingleGateway"]

log = logging.getLogger("chorus.xmpp.jingle")

RESOURCE = "chorus"  # the resource of the gateway's JIDs in calls (user@<sip domain>/chorus)
_ORIGIN_USER = "chorus"
# A Jingle audio content the leg cannot terminate (webrtc_audio): the session ends with it.
PLAIN_RTP = Reason("unsupported-transports", "audio over ICE with DTLS-SRTP only")


@dataclass(slots=True)
class _Call:
    """One bridged call: its Jingle half (``sid`` with ``xmpp`` once a device is known), its
    SIP half (``dialog``) and the leg between."""

    sid: str
    local: Jid  # the gateway's JID in the call: user@<sip domain>/RESOURCE
    xmpp: Jid  # the XMPP party (bare until a device proceeds, for calls from SIP)
    leg: WebRtcLeg | None  # None: a plain RTP call, media phone to phone (``plain``)
    from_xmpp: bool
    proposed: bool  # began with a XEP-0353 propose
    plain: Content | None = None  # the raw-UDP audio offered (jingleplain)
    plain_answer: Content | None = None  # and the SIP side's, as accepted
    session: JingleSession | None = None
    dialog: Session | None = None
    cancel: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    initiated: asyncio.Future[Initiated] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    answered: asyncio.Future[Reason | None] = field(  # from SIP: accept (None) or the reason
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    ringing: Callable[[], None] | None = None  # from SIP: the INVITE's 180
    sess_id: str = "1"  # our o= toward SIP: the id stays, the version counts our SDPs
    sess_version: int = 0
    direction: sdp.Direction = sdp.Direction.SENDRECV  # ours toward SIP (XMPP's hold)
    held_by_sip: bool = False  # the SIP side's re-offer stopped receiving (told as hold)
    ended: bool = False
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


class JingleGateway:
    """The Jingle calls of one gateway (module doc)."""

    def __init__(
        self,
        ua: UserAgent,
        component: Component,
        addressing: Addressing,
        *,
        max_calls: int = 100,
        ring_timeout: float = 60.0,
        ice_addresses: Sequence[str] = (),
        rtp_host: str = "127.0.0.1",
    ) -> None:
        self.ua = ua
        self.component = component
        self.addressing = addressing
        self.max_calls = max_calls
        self.ring_timeout = ring_timeout
        self.ice_addresses = tuple(ice_addresses)
        self.rtp_host = rtp_host
        self.sessions = JingleSessions(new_sid=lambda: ua.token(16), max_sessions=max_calls)
        self._calls: dict[tuple[str, str], _Call] = {}  # (XMPP party's JID, sid)
        self._ours: dict[str, _Call] = {}  # sid of a propose of ours -> its call (from SIP)
        self._free: set[asyncio.Task[object]] = set()  # refusals sent for no call

    def __len__(self) -> int:
        return len({id(c) for c in (*self._calls.values(), *self._ours.values())})

    # XMPP in ---------------------------------------------------------------------------

    def xmpp_message(self, sender: Jid, recipient: Jid, xml: ET.Element) -> None:
        """A XEP-0353 message from the component."""
        m = read_jingle_message(xml)  # JingleError: the component answers bad-request
        if m is None:
            return
        if m.kind == "propose":
            self._proposed(sender, recipient, m)
            return
        call = self._calls.get((str(sender), m.id))
        ours = self._ours.get(m.id) if call is None else None
        if ours is not None and ours.xmpp.bare == sender.bare:
            call = ours
        if call is None:
            log.info("XEP-0353 %s from %s for no call (%s)", m.kind, sender, m.id[:40])
            return
        match m.kind:
            case "retract" if call.from_xmpp:
                self._spawn(call, self._end(call, "XMPP caller retracted", tell_xmpp=False))
            case "ringing" if not call.from_xmpp:
                self._sip_ringing(call)
            case "proceed" if not call.from_xmpp and call.session is None:
                call.xmpp = sender
                self._spawn(call, self._initiate(call))
            case "reject" if not call.from_xmpp and not call.answered.done():
                call.answered.set_result(m.reason or Reason("decline"))
            case _:
                log.info("XEP-0353 %s from %s ignored in this call", m.kind, sender)

    async def xmpp_iq(self, iq: XmppIq) -> None:
        """A Jingle iq from the component: acked or refused, then acted on."""
        try:
            j = parse_jingle(iq.payload)
            if j.action == Action.SESSION_INITIATE and not webrtc_audio(j.contents):
                plain = plain_audio(j.contents)
                if plain is not None:
                    check_offer(plain)  # bad-request before any session state
            event = self.sessions.receive(str(iq.sender), str(iq.recipient), j)
        except JingleError as exc:
            log.info("Jingle request from %s refused: %s", iq.sender, exc)
            self.component.reply_iq(iq, error_element(exc, stanza_ns=self.component.stanza_ns))
            return
        self.component.reply_iq(iq)
        match event:
            case Initiated():
                self._initiated(iq, j, event)
            case Accepted(sid=sid):
                call = self._calls.get((str(iq.sender), sid))
                if call is not None and call.leg is not None and not call.answered.done():
                    if not webrtc_audio(event.contents):  # the SIP caller gets 488
                        await self._end(call, "plain RTP answer", reason=PLAIN_RTP)
                        return
                    await call.leg.accepted(event.contents, event.groups)
                    call.answered.set_result(None)
            case Terminated(sid=sid, reason=reason):
                call = self._calls.get((str(iq.sender), sid))
                if call is None:
                    return
                if not call.from_xmpp and not call.answered.done():
                    call.answered.set_result(reason or Reason("decline"))
                else:
                    text = reason.condition if reason is not None else "no reason"
                    await self._end(call, f"XMPP terminate ({text})", tell_xmpp=False)
            case Informed(sid=sid, info=info):
                call = self._calls.get((str(iq.sender), sid))
                if call is not None and info.kind in ("hold", "unhold"):
                    await self._xmpp_hold(call, info.kind)
            case _:
                pass  # transport-info: aiortc gathered everything, a ping needs nothing

    # XMPP → SIP ---------------------------------------------------------------------------

    def _refusal(self, sender: Jid, recipient: Jid) -> tuple[SipUri, SipUri] | Reason:
        """The SIP addresses of a call from ``sender`` to ``recipient``, or the reason it
        is refused."""
        try:
            target = self.addressing.jid_to_sip(Jid(recipient.local, recipient.domain), side="sip")
            caller = self.addressing.jid_to_sip(sender, side="xmpp", sender=True)
        except AddressRefused as exc:
            return Reason("gone" if exc.sip_status == 404 else "decline", exc.reason[:200])
        if len(self) >= self.max_calls:
            return Reason("busy", f"{self.max_calls} Jingle calls in progress")
        return target, caller

    def _proposed(self, sender: Jid, recipient: Jid, m: JingleMessage) -> None:
        local = Jid(recipient.local, recipient.domain, RESOURCE)
        addresses = self._refusal(sender, recipient)
        if not m.audio:
            addresses = Reason("unsupported-applications", "audio calls only")
        if isinstance(addresses, Reason):
            log.info("Jingle propose from %s to %s refused: %s", sender, recipient, addresses)
            self._jmi(sender, local, JingleMessage("reject", m.id, reason=addresses))
            return
        if (str(sender), m.id) in self._calls:
            return  # a propose repeated (a resend after a reconnect)
        call = _Call(m.id, local, sender, self._leg(), from_xmpp=True, proposed=True)
        self._calls[(str(sender), m.id)] = call
        self._spawn_free(self._invite(call, *addresses))  # an end CANCELs it

    def _initiated(self, iq: XmppIq, j: Jingle, event: Initiated) -> None:
        key = (str(iq.sender), j.sid)
        call = self._calls.get(key)
        if call is not None and call.proposed and call.from_xmpp:
            call.session = event.session
            if not webrtc_audio(event.contents):  # its INVITE is CANCELled or BYEd
                self._spawn(call, self._end(call, "plain RTP offer", reason=PLAIN_RTP))
            elif not call.initiated.done():
                call.initiated.set_result(event)
            return
        addresses = self._refusal(iq.sender, iq.recipient)
        webrtc = webrtc_audio(event.contents)
        plain = None if webrtc else plain_audio(event.contents)
        if not webrtc and plain is None:
            addresses = PLAIN_RTP  # refused before any SIP phone rings
        if isinstance(addresses, Reason):
            log.info("Jingle call from %s to %s refused: %s", iq.sender, iq.recipient, addresses)
            self._spawn_free(
                self._send(iq.sender, iq.recipient, event.session.terminate(*_args(addresses)))
            )
            return
        leg = self._leg() if plain is None else None
        call = _Call(j.sid, iq.recipient, iq.sender, leg, from_xmpp=True, proposed=False)
        call.plain = plain
        call.session = event.session
        call.initiated.set_result(event)
        self._calls[key] = call
        self._spawn_free(self._invite(call, *addresses))  # an end CANCELs it

    def _leg(self) -> WebRtcLeg:
        # PCMU until the SIP answer names the codec (_use_answer): nothing is sent before
        return WebRtcLeg(PcmuCodec(), 0, rtp_host=self.rtp_host)

    def _origin(self, call: _Call) -> sdp.Origin:
        if not call.sess_version:
            call.sess_id = str(self.ua.rng.randrange(1, 2**31))
        call.sess_version += 1
        return sdp.Origin(_ORIGIN_USER, call.sess_id, call.sess_version, "IN", "IP4", self.rtp_host)

    def _sip_offer(self, call: _Call) -> bytes:
        """Our offer toward SIP: the bridged codecs in the INVITE; in a re-offer (hold) the
        leg's one codec and ``call.direction``."""
        leg = call.leg
        if leg is None:  # plain RTP: the Jingle offer itself
            assert call.plain is not None
            return plain_offer(call.plain, self._origin(call))
        codecs: list[sdp.RtpMap | tuple[str, int]] = [*SIP_CODECS, ("telephone-event", 8000)]
        if call.sess_version:
            channels = leg.codec.channels if leg.codec.channels != 1 else None
            codecs = [sdp.RtpMap(leg.payload_type, leg.codec.name, leg.codec.clock_rate, channels)]
        media = sdp.audio_media(leg.rtp_port, codecs, ptime=20, direction=call.direction)
        offer = sdp.build_offer(
            origin=self._origin(call),
            connection=sdp.Connection.for_address(self.rtp_host),
            media=[media],
        )
        return bytes(sdp.serialize(offer))

    async def _invite(self, call: _Call, target: SipUri, caller: SipUri) -> None:
        """Our INVITE for an XMPP caller; then the Jingle answer, or the failure's reason."""
        if call.leg is not None:
            await call.leg.open()
        try:
            dialog, response = await place_call(
                self.ua,
                target,
                from_=NameAddr(caller),
                offer=self._sip_offer(call),
                timeout=self.ring_timeout,
                cancel=call.cancel,
                on_provisional=lambda r: self._progress(call, r),
            )
        except (OSError, ValueError, SipError) as exc:
            log.info("Jingle call to %s: INVITE not sent: %s", target, exc)
            await self._failed(call, 503)
            return
        if dialog is None:
            log.info("Jingle call to %s: SIP answered %d", target, response.status)
            await self._failed(call, response.status)
            return
        call.dialog = dialog
        if call.ended:  # a 2xx that crossed our CANCEL
            await dialog.bye(reason="the Jingle call ended")
            return
        self._watch(call, dialog)
        if call.leg is None:
            await self._plain_answered(call, response, target)
            return
        try:
            use_answer(call.leg, sdp.parse(response.body))
        except SipError as exc:
            log.info("Jingle call to %s: unusable SIP answer: %s", target, exc)
            await self._end(call, "unusable SIP answer", reason=Reason("incompatible-parameters"))
            return
        if call.proposed and call.session is None:
            self._jmi(call.xmpp, call.local, JingleMessage("proceed", call.sid))
        try:
            initiated = await asyncio.wait_for(asyncio.shield(call.initiated), self.ring_timeout)
        except TimeoutError:
            await self._end(call, "no session-initiate after proceed", reason=Reason("timeout"))
            return
        with gathering_on(self.ice_addresses):
            contents, groups = await call.leg.answer(initiated.contents, initiated.groups)
        if call.session is None or call.ended:
            return
        await self._send(call.xmpp, call.local, call.session.accept(contents, groups))
        log.info("Jingle call %s -> %s up", call.xmpp, target)

    async def _plain_answered(self, call: _Call, response: Response, target: SipUri) -> None:
        """The SIP answer to a plain RTP offer as the session-accept (jingleplain)."""
        assert call.plain is not None and call.session is not None
        try:
            contents = plain_accept(sdp.parse(response.body), call.plain)
        except SipError as exc:
            log.info("Jingle call to %s: unusable SIP answer: %s", target, exc)
            await self._end(call, "unusable SIP answer", reason=Reason("incompatible-parameters"))
            return
        call.plain_answer = contents[0]
        await self._send(call.xmpp, call.local, call.session.accept(contents))
        log.info("Jingle call %s -> %s up (plain RTP, phone to phone)", call.xmpp, target)

    def _progress(self, call: _Call, response: Response) -> None:
        if response.status != 180 or call.ended:
            return
        if call.session is not None:
            self._spawn(call, self._send(call.xmpp, call.local, call.session.info("ringing")))
        elif call.proposed:
            self._jmi(call.xmpp, call.local, JingleMessage("ringing", call.sid))

    async def _failed(self, call: _Call, status: int) -> None:
        reason = reason_for_status(status) if status >= 300 else Reason("general-error")
        await self._end(call, f"SIP {status}", reason=reason)

    # SIP → XMPP ---------------------------------------------------------------------------

    async def incoming_invite(self, call_in: IncomingCall) -> None:
        """An INVITE with audio to an XMPP user (module doc)."""
        try:
            callee, caller = self.addressing.call_parties(
                call_in.request_uri, call_in.remote_identity.uri
            )
        except AddressRefused as exc:
            call_in.reject(exc.sip_status, exc.reason[:80])
            return
        if not self.component.connected:
            call_in.reject(503, "XMPP server unavailable", headers=[("Retry-After", "5")])
            return
        if len(self) >= self.max_calls:
            call_in.reject(486, f"{self.max_calls} Jingle calls in progress")
            return
        offer = call_in.offer
        media = next((m for m in offer.media if m.media == "audio" and not m.rejected), None)
        chosen = sdp.choose_codecs(media, SIP_CODECS) if media is not None else []
        factory = (
            codec_for(
                chosen[0].encoding, chosen[0].clock_rate, chosen[0].channels or 1, chosen[0].fmtp
            )
            if chosen
            else None
        )
        connection = offer.connection_of(media) if media is not None else None
        if media is None or factory is None or connection is None:
            call_in.reject(488, "no audio in a bridged codec")
            return
        leg = WebRtcLeg(factory(), chosen[0].payload_type, rtp_host=self.rtp_host)
        local = Jid(caller.local, caller.domain, RESOURCE)
        sid = self.sessions.new_sid(callee.bare)
        call = _Call(
            sid, local, Jid(callee.local, callee.domain), leg, from_xmpp=False, proposed=True
        )
        call.ringing = call_in.ringing
        self._ours[sid] = call
        await leg.open()
        if call_in.cancelled:  # CANCELled while the leg opened: nothing to retract yet
            await self._end(call, "SIP caller cancelled", tell_xmpp=False)
            return
        leg.connect_rtp((connection.address, media.port))
        self._jmi(call.xmpp, local, JingleMessage("propose", sid, ("audio",)))
        # Whichever comes first: XMPP's answer, the caller's CANCEL (a retract at once), the
        # ring timeout. asyncio.wait's default is ALL_COMPLETED, which waited out the ring
        # timeout after a CANCEL (the issue 12 late retract).
        cancelled = call_in.incoming.cancelled
        await asyncio.wait(
            {call.answered, cancelled},
            timeout=self.ring_timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        reason = call.answered.result() if call.answered.done() else Reason("timeout")
        if call_in.cancelled:
            await self._end(call, "SIP caller cancelled", reason=Reason("cancel"))
            return
        if reason is not None:
            status = status_for_reason(reason)
            log.info("Jingle call %s -> %s refused: %s, SIP %d", caller, callee, reason, status)
            call_in.reject(status, reason.text[:80] if reason.text else reason.condition)
            await self._end(
                call, f"XMPP {reason.condition}", tell_xmpp=reason.condition == "timeout"
            )
            return
        decision = sdp.Accept(
            leg.rtp_port, [c.format for c in chosen], attributes=[sdp.Attribute("ptime", "20")]
        )
        answer = sdp.build_answer(
            offer,
            [decision if m is media else sdp.Reject() for m in offer.media],
            origin=self._origin(call),
            connection=sdp.Connection.for_address(self.rtp_host),
        )
        call.dialog = call_in.accept(bytes(sdp.serialize(answer)), user=callee.local)
        self._watch(call, call.dialog)
        log.info("Jingle call %s -> %s up", caller, call.xmpp)

    def _sip_ringing(self, call: _Call) -> None:
        if call.ringing is not None and not call.answered.done():
            call.ringing()

    async def _initiate(self, call: _Call) -> None:
        """A device proceeded: the leg's offer as our session-initiate to it."""
        assert call.leg is not None  # a call from SIP always has one
        with gathering_on(self.ice_addresses):
            contents, groups = await call.leg.offer()
        if call.ended:
            return
        session, initiate = self.sessions.initiate(
            str(call.local), str(call.xmpp), contents, groups, sid=call.sid
        )
        call.session = session
        self._calls[(str(call.xmpp), call.sid)] = call
        failure = await self._send(call.xmpp, call.local, initiate)
        if failure is not None and not call.answered.done():
            call.answered.set_result(Reason("general-error", f"session-initiate: {failure}"))

    # Both ways ----------------------------------------------------------------------------

    def _watch(self, call: _Call, dialog: Session) -> None:
        def ended(_: object) -> None:
            if not call.ended:
                self._spawn(call, self._end(call, "SIP BYE", reason=Reason("success")))

        dialog.terminated.add_done_callback(ended)
        on_reoffer(dialog, lambda reoffer: self._reoffer(call, reoffer))

    async def _reoffer(self, call: _Call, reoffer: ReOffer) -> None:
        """A SIP re-offer: the leg's codec and address kept, its direction told to XMPP as
        hold / unhold (jinglecall.info_for_direction); anything else is 488."""
        if call.leg is None:  # the phones' own media: a refresh only (jingleplain)
            origin = self._origin(call)
            again = plain_reanswer(reoffer.offer, call.plain, call.plain_answer, origin)
            if again is None:
                reoffer.reject(488, "a plain RTP Jingle call cannot change")
            else:
                reoffer.answer(again)
            return
        offer = reoffer.offer
        media = next((m for m in offer.media if m.media == "audio" and not m.rejected), None)
        fmt = str(call.leg.payload_type)
        connection = offer.connection_of(media) if media is not None else None
        if media is None or connection is None or fmt not in media.formats:
            reoffer.reject(488, "the bridged stream cannot change")
            return
        direction = offer.direction_of(media)
        decision = sdp.Accept(call.leg.rtp_port, [fmt], attributes=[sdp.Attribute("ptime", "20")])
        answer = sdp.build_answer(
            offer,
            [decision if m is media else sdp.Reject() for m in offer.media],
            origin=self._origin(call),
            connection=sdp.Connection.for_address(self.rtp_host),
        )
        reoffer.answer(bytes(sdp.serialize(answer)))
        if not connection.is_hold:
            call.leg.connect_rtp((connection.address, media.port))
        info = info_for_direction(direction, held=call.held_by_sip)
        if info is not None and call.session is not None and call.session.state == "active":
            call.held_by_sip = info == "hold"
            await self._send(call.xmpp, call.local, call.session.info(info))

    async def _xmpp_hold(self, call: _Call, kind: str) -> None:
        """The XMPP side's hold / unhold: a re-offer toward SIP that stops (or resumes)
        receiving (jinglecall.direction_for_info)."""
        direction = direction_for_info(kind, call.direction)
        if call.leg is None:
            log.info("Jingle %s from %s ignored: a plain RTP call", kind, call.xmpp)
            return
        if direction is None or call.dialog is None or direction == call.direction:
            return
        call.direction = direction
        try:
            response = await call.dialog.reinvite(self._sip_offer(call))
        except (SipError, OSError) as exc:
            log.info("Jingle %s toward %s not sent: %s", kind, call.dialog, exc)
            return
        log.info("Jingle %s from %s: SIP re-offer answered %d", kind, call.xmpp, response.status)

    async def _end(
        self,
        call: _Call,
        why: str,
        *,
        reason: Reason | None = None,
        tell_xmpp: bool = True,
    ) -> None:
        """End ``call`` once: the Jingle session terminated (or the proposal rejected /
        retracted) unless XMPP ended it, the INVITE CANCELled or the dialog BYEd, the leg
        closed."""
        if call.ended:
            return
        call.ended = True
        log.info(
            "Jingle call %s %s %s ended: %s",
            call.xmpp,
            "->" if call.from_xmpp else "<-",
            call.local,
            why,
        )
        self._forget(call)
        reason = reason or Reason("success")
        if tell_xmpp and self.component.connected:
            if call.session is not None and call.session.state != "ended":
                await self._send(call.xmpp, call.local, call.session.terminate(*_args(reason)))
                if call.proposed:
                    self._jmi(
                        call.xmpp, call.local, JingleMessage("finish", call.sid, reason=reason)
                    )
            elif call.proposed and call.from_xmpp:
                self._jmi(call.xmpp, call.local, JingleMessage("reject", call.sid, reason=reason))
            elif call.proposed:
                self._jmi(call.xmpp, call.local, JingleMessage("retract", call.sid, reason=reason))
        elif call.session is not None and call.session.state != "ended":
            call.session.terminate(*_args(reason))  # our state only: XMPP ended it
        if not call.cancel.done():
            call.cancel.set_result(None)  # a ringing INVITE of ours is CANCELled
        if not call.initiated.done():
            call.initiated.cancel()
        if not call.answered.done():
            call.answered.set_result(reason if reason.condition != "success" else Reason("cancel"))
        if call.dialog is not None:
            with contextlib.suppress(Exception):
                await call.dialog.bye(reason=why[:80])
        if call.leg is not None:
            await call.leg.close()
        current = asyncio.current_task()
        for task in list(call.tasks):
            if task is not current:
                task.cancel()

    def _forget(self, call: _Call) -> None:
        for key in [k for k, c in self._calls.items() if c is call]:
            del self._calls[key]
        if self._ours.get(call.sid) is call:
            del self._ours[call.sid]

    def xmpp_lost(self) -> None:
        """The XMPP server connection is gone: every call ends (BYE toward SIP)."""
        for call in {id(c): c for c in (*self._calls.values(), *self._ours.values())}.values():
            self._spawn(call, self._end(call, "XMPP server lost", tell_xmpp=False))

    async def shutdown(self) -> None:
        calls = {id(c): c for c in (*self._calls.values(), *self._ours.values())}.values()
        await asyncio.gather(
            *(self._end(c, "shutdown", reason=Reason("gone")) for c in calls),
            return_exceptions=True,
        )

    # Out ----------------------------------------------------------------------------------

    async def _send(self, to: Jid, from_: Jid, j: Jingle) -> str | None:
        failure = await self.component.send_iq(to, from_, build_jingle(j))
        if failure is not None:
            log.info("Jingle %s to %s answered %s", j.action.value, to, failure)
        return failure

    def _jmi(self, to: Jid, from_: Jid, m: JingleMessage) -> None:
        if self.component.connected:
            self.component.send_payload(to, from_, jingle_message(m))

    def _spawn(self, call: _Call, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        call.tasks.add(task)
        task.add_done_callback(call.tasks.discard)

    def _spawn_free(self, coro: object) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._free.add(task)
        task.add_done_callback(self._free.discard)


def _args(reason: Reason) -> tuple[str, str | None]:
    return reason.condition, reason.text
