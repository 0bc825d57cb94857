"""INVITE sessions: the dialog usage applications talk to (RFC 3261 §13–15, RFC 3264).

``IncomingCall`` is an offer waiting for ``accept``/``reject``; ``Session`` is the established
call: re-INVITE both ways with 491 glare handling (§14.1), BYE, the UAS's 2xx retransmission
until ACK (§13.3.1.4), and RFC 4028 session timers: the session refreshes itself with a
re-INVITE carrying the same SDP when it is the refresher, and ends with BYE when refreshes stop
(``terminated`` then resolves with ``SESSION_EXPIRED``, which is how an application learns that
a participant is gone). Bodies are opaque bytes here; the SDP model lives in
``control.sip.sdp`` and the applications.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from control.sip.compose import ALLOWED_METHODS, build_request
from control.sip.dialog import Dialog
from control.sip.errors import SipError
from control.sip.events import RefreshDue, SessionExpired
from control.sip.message import Request, Response
from control.sip.sessiontimer import (
    IntervalTooSmall,
    Negotiated,
    Refresher,
    SessionTimer,
    TimerPolicy,
    answer_request,
    offer_headers,
    read_answer,
    retry_interval,
)
from control.sip.transaction import TwoHundredRetransmitter, build_cancel
from control.sip.transport import Peer
from control.sip.uri import NameAddr, SipUri, Uri, parse_name_addr
from control.sip.useragent import IncomingRequest, OutgoingRequest, UserAgent

log = logging.getLogger("chorus.sip.session")

SDP = "application/sdp"
SESSION_EXPIRED = "session timer expired"  # the ``terminated`` reason when refreshes stopped


def timer_terms(incoming: IncomingRequest, policy: TimerPolicy | None) -> Negotiated | None:
    """The session timer an INVITE, re-INVITE or UPDATE asks for (RFC 4028 §9).

    A too small interval is answered 422 with our Min-SE (§8.1), a malformed one 400; both
    leave ``incoming`` answered (``final_sent``) and return ``None``, as do disabled timers.
    """
    if policy is None:
        return None
    try:
        terms = answer_request(incoming.request, policy)
    except IntervalTooSmall as exc:
        incoming.respond(exc.status, exc.reason, headers=exc.headers)
        return None
    except SipError as exc:
        incoming.respond(exc.status, exc.reason)
        return None
    incoming.timer_terms = (policy, terms)
    return terms


class SessionState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Offer:
    """An SDP offer in an INVITE or re-INVITE, answered once."""

    def __init__(self, incoming: IncomingRequest, session_timer: Negotiated | None = None) -> None:
        self.incoming = incoming
        self.session_timer = session_timer  # what the 2xx answering it will say (RFC 4028 §9)

    @property
    def request(self) -> Request:
        return self.incoming.request

    @property
    def body(self) -> bytes:
        return self.request.body

    @property
    def has_sdp(self) -> bool:
        content_type = self.request.content_type
        return bool(self.body) and content_type is not None and content_type.mime == SDP

    @property
    def answered(self) -> bool:
        return self.incoming.final_sent


class IncomingCall(Offer):
    """A new INVITE. The application accepts it with an answer or rejects it."""

    def __init__(self, ua: UserAgent, incoming: IncomingRequest) -> None:
        super().__init__(incoming)
        self.ua = ua
        self.local_tag = ua.token(12)

    @property
    def remote_identity(self) -> NameAddr:
        return self.request.from_

    @property
    def request_uri(self) -> Uri:
        return self.request.uri

    def ringing(self) -> None:
        if not self.answered:
            self.incoming.respond(180, to_tag=self.local_tag)

    def reject(self, status: int, reason: str | None = None) -> None:
        if not self.answered:
            self.incoming.respond(status, reason, to_tag=self.local_tag)

    def _secure_request(self) -> bool:
        """§12.1.1: the dialog is SIPS when the Request-URI or the top Record-Route is."""
        if isinstance(self.request.uri, SipUri) and self.request.uri.scheme == "sips":
            return True
        routes = self.request.headers.get_all("Record-Route")
        if routes:
            try:
                uri = parse_name_addr(routes[0]).uri
            except SipError:
                return False
            return isinstance(uri, SipUri) and uri.scheme == "sips"
        return False

    def accept(self, answer: bytes, *, user: str | None = None) -> Session:
        """Send 200 with ``answer``; the session is confirmed when the ACK arrives."""
        if self.answered:
            raise SipError(487, "already answered or cancelled")
        contact = self.ua.contact_for(self.incoming.source, user, secure=self._secure_request())
        dialog = Dialog.as_uas(self.request, self.local_tag, contact)
        session = Session(self.ua, dialog, self.incoming.source, is_uac=False)
        known = self.incoming.timer_terms  # the server's 422 check worked it out already
        if known is not None and known[0] is self.ua.session_timers:
            negotiated: Negotiated | None = known[1]
        else:
            negotiated = session.negotiate_timer(self.request)
        response = self.request.make_response(
            200, to_tag=self.local_tag, body=answer, content_type=SDP
        )
        response.headers.add("Contact", str(contact))
        response.headers.add("Allow", ALLOWED_METHODS)
        session.add_timer_headers(response, negotiated)
        sent = self.incoming.send_response(response)
        session.local_sdp = answer
        session.start_2xx_retransmission(response, sent)
        if negotiated is not None:
            session.apply_timer(negotiated, we_are_uac=False)
        return session


class Session:
    """An established (or confirming) INVITE dialog usage."""

    def __init__(
        self, ua: UserAgent, dialog: Dialog, source: Peer, *, is_uac: bool, direct: bool = False
    ) -> None:
        self.ua = ua
        self.dialog = dialog
        self.source = source
        self.is_uac = is_uac
        # The INVITE went straight to its peer, not through the outbound proxy: so do the
        # in-dialog requests (RFC 3261 §12.2.1.1 knows only the route set and remote target).
        self.direct = direct
        self.state = SessionState.EARLY
        loop = asyncio.get_running_loop()
        self.confirmed: asyncio.Future[None] = loop.create_future()
        self.terminated: asyncio.Future[str] = loop.create_future()
        self.on_reinvite: Callable[[Offer], Awaitable[None]] | None = None
        self.on_request: Callable[[IncomingRequest], Awaitable[None]] | None = None
        self._retransmitter: TwoHundredRetransmitter | None = None
        self._pending_reinvite: OutgoingRequest | None = None
        self._reinvite_lock: asyncio.Lock | None = None  # made by the first re-INVITE we send
        self._incoming_reinvite: IncomingRequest | None = None
        self._last_2xx: Response | None = None
        self.local_sdp = b""  # what a refresh re-INVITE offers again (RFC 4028 §7.4)
        self.session_timer: SessionTimer | None = None
        ua.dialogs[dialog.id] = self

    # --- peer routing --------------------------------------------------------------------

    async def next_peer(self) -> Peer:
        """Reuse the connection the dialog was created on while it is the next hop's; else
        resolve the route set or remote target (RFC 3261 §18.1.1, §12.2.1.1): through the
        outbound proxy when the INVITE went through it, straight when it did not."""
        if self.source.reliable:
            return self.source
        hop = self.dialog.next_hop()
        try:
            if self.direct:
                return await resolve_direct(hop, self.source.transport)
            return await self.ua.resolve(hop)
        except (OSError, ValueError):
            return self.source

    # --- UAS side: 2xx retransmission and ACK ----------------------------------------------

    def start_2xx_retransmission(self, response: Response, sent: bytes | None = None) -> None:
        """``sent``: the bytes the transaction sent for ``response`` (not serialised again)."""
        # §13.3.1.4 applies on every transport: a proxy beyond a TCP hop may be on UDP.
        self._last_2xx = response
        self._retransmitter = TwoHundredRetransmitter(
            sent or response.serialize(), now=self.ua.now(), timers=self.ua.timers
        )
        self.ua.schedule(self)

    def next_timer(self) -> float | None:
        resend = self._retransmitter.next_timer() if self._retransmitter else None
        refresh = self.session_timer.next_timer() if self.session_timer else None
        if resend is None:
            return refresh
        return resend if refresh is None else min(resend, refresh)

    def handle_timer(self, now: float) -> None:
        self._handle_retransmission(now)
        self._handle_session_timer(now)

    def _handle_retransmission(self, now: float) -> None:
        retransmitter = self._retransmitter
        if retransmitter is None:
            return
        retransmitter.handle_timer(now)
        assert self.ua.transport is not None
        for data in retransmitter.data_to_send():
            self.ua.transport.send(data, self.source)
        if retransmitter.timed_out:
            # §13.3.1.4: no ACK within 64*T1 — confirm and immediately end the session.
            self._retransmitter = None
            log.info("no ACK for 2xx on %s: ending with BYE", self.dialog.call_id)
            self.state = SessionState.CONFIRMED
            self.ua.spawn(self.bye(reason="no ACK"))

    # --- RFC 4028 session timer ------------------------------------------------------------

    def negotiate_timer(self, request: Request) -> Negotiated | None:
        """What our 2xx to ``request`` says about the session timer; ``None`` when timers are
        off. Callers reject a too-small interval (422) before they get here."""
        policy = self.ua.session_timers
        if policy is None:
            return None
        try:
            return answer_request(request, policy)
        except SipError as exc:
            log.warning("session timer of %s not usable (%s): none", self.dialog.call_id, exc)
            return None

    def add_timer_headers(self, response: Response, negotiated: Negotiated | None) -> None:
        if self.ua.session_timers is None:
            return
        response.headers.add("Supported", "timer")
        for name, value in negotiated.response_headers() if negotiated else []:
            response.headers.add(name, value)

    def apply_timer(self, negotiated: Negotiated, *, we_are_uac: bool) -> None:
        """A refresh transaction succeeded (we sent or received its 2xx): restart the clock."""
        local = negotiated.local_refresh(we_are_uac=we_are_uac)
        now = self.ua.now()
        if self.session_timer is None:
            self.session_timer = SessionTimer(negotiated.interval, local_refresh=local, now=now)
        else:
            self.session_timer.restart(negotiated.interval, local_refresh=local, now=now)
        self.ua.schedule(self)

    def _timer_offer(self, interval: int) -> list[tuple[str, str]]:
        """Session timer headers for a re-INVITE we send: keep whoever refreshes now (§7.4)."""
        policy = self.ua.session_timers
        if policy is None:
            return []
        timer = self.session_timer
        refresher = None
        if timer is not None:
            refresher = Refresher.UAC if timer.local_refresh else Refresher.UAS
        return offer_headers(policy, interval, refresher)

    def _handle_session_timer(self, now: float) -> None:
        timer = self.session_timer
        if timer is None or self.state is SessionState.TERMINATED:
            return
        timer.handle_timer(now)
        while (event := timer.next_event()) is not None:
            match event:
                case RefreshDue():
                    self.ua.spawn(self._refresh())
                case SessionExpired(interval=interval):
                    log.info(
                        "no session refresh on %s within %d s: ending with BYE",
                        self.dialog.call_id,
                        interval,
                    )
                    self.ua.spawn(self.bye(reason=SESSION_EXPIRED))

    async def _refresh(self) -> None:
        """§7.4/§10: refresh with the same SDP; 408 or 481 means the peer is gone (§14.1)."""
        if self.state is SessionState.TERMINATED:
            return
        response = await self.reinvite(self.local_sdp)
        if self.state is SessionState.TERMINATED or 200 <= response.status < 300:
            return
        if response.status in (408, 481):
            log.info("session refresh on %s got %s: ending", self.dialog.call_id, response.status)
            await self.bye(reason=f"refresh got {response.status}")
        else:
            log.info(
                "session refresh on %s got %s: the session ends at expiry",
                self.dialog.call_id,
                response.status,
            )

    def handle_ack(self, request: Request, peer: Peer) -> None:
        last = self._last_2xx
        if last is not None and request.cseq.number != last.cseq.number:
            # §13.3.1.4: only the ACK for the 2xx being resent stops it; a late ACK for an
            # earlier INVITE's 2xx (a retransmission the peer re-ACKed) is not that ACK.
            return
        if self._retransmitter is not None:
            self._retransmitter.ack_received()
            self._retransmitter = None
        if self.state is SessionState.EARLY:
            self.state = SessionState.CONFIRMED
        if not self.confirmed.done():
            self.confirmed.set_result(None)

    # --- in-dialog requests from the peer --------------------------------------------------

    def handle_request(self, incoming: IncomingRequest) -> None:
        request = incoming.request
        try:
            self.dialog.receive_request(request)
        except SipError as exc:
            incoming.respond(exc.status, exc.reason)
            return
        match request.method:
            case "BYE":
                incoming.respond(200)
                self._terminate("remote BYE")
            case "INVITE":
                self._handle_reinvite(incoming)
            case "OPTIONS":
                incoming.respond(200, headers=[("Allow", ALLOWED_METHODS)])
            case "UPDATE" if not request.body and self.ua.session_timers is not None:
                self._handle_update_refresh(incoming)
            case "INFO" | "UPDATE" if self.on_request is None:
                incoming.respond(200 if request.method == "INFO" else 501)
            case _:
                if self.on_request is not None:
                    self.ua.spawn(self._run_request_hook(incoming))
                else:
                    incoming.respond(405, headers=[("Allow", ALLOWED_METHODS)])

    async def _run_request_hook(self, incoming: IncomingRequest) -> None:
        assert self.on_request is not None
        try:
            await self.on_request(incoming)
        finally:
            if not incoming.final_sent:
                incoming.respond(500)

    def _refresh_terms(self, incoming: IncomingRequest) -> Negotiated | None:
        return timer_terms(incoming, self.ua.session_timers)

    def _handle_update_refresh(self, incoming: IncomingRequest) -> None:
        """RFC 4028 §9 with RFC 3311: an UPDATE without a body only refreshes the session."""
        negotiated = self._refresh_terms(incoming)
        if negotiated is None:
            return
        response = incoming.request.make_response(200)
        response.headers.add("Contact", str(self.dialog.local_contact))
        self.add_timer_headers(response, negotiated)
        incoming.send_response(response)
        self.apply_timer(negotiated, we_are_uac=False)

    def _handle_reinvite(self, incoming: IncomingRequest) -> None:
        # §14.2: a re-INVITE while ours is pending → 491; while an earlier one of theirs is
        # unanswered → 500 with Retry-After.
        if self._pending_reinvite is not None:
            incoming.respond(491)
            return
        if self._incoming_reinvite is not None and not self._incoming_reinvite.final_sent:
            # §14.2: Retry-After chosen at random between 0 and 10 seconds.
            retry = str(self.ua.rng.randint(0, 10))
            incoming.respond(500, headers=[("Retry-After", retry)])
            return
        negotiated = self._refresh_terms(incoming)
        if incoming.final_sent:
            return
        self._incoming_reinvite = incoming
        offer = Offer(incoming, negotiated)
        if self.on_reinvite is None:
            incoming.respond(488)
            return
        self.ua.spawn(self._run_reinvite(offer))

    async def _run_reinvite(self, offer: Offer) -> None:
        assert self.on_reinvite is not None
        try:
            await self.on_reinvite(offer)
        finally:
            if not offer.answered:
                offer.incoming.respond(500)

    def answer_reinvite(self, offer: Offer, answer: bytes) -> None:
        response = offer.request.make_response(200, body=answer, content_type=SDP)
        response.headers.add("Contact", str(self.dialog.local_contact))
        self.add_timer_headers(response, offer.session_timer)
        sent = offer.incoming.send_response(response)
        self.local_sdp = answer
        self.start_2xx_retransmission(response, sent)
        if offer.session_timer is not None:
            self.apply_timer(offer.session_timer, we_are_uac=False)

    # --- requests we send ------------------------------------------------------------------

    async def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        peer = await self.next_peer()
        request = self.dialog.create_request(
            method,
            via=self.ua.via_for(peer),
            body=body,
            content_type=content_type,
            extra_headers=extra_headers,
        )
        outgoing = self.ua.send_request(request, peer)
        response = await outgoing.final
        if response.status == 481 or response.status == 408:
            self._terminate(f"{method} got {response.status}")
        return response

    async def reinvite(self, body: bytes, *, attempts: int = 3) -> Response:
        """Send a re-INVITE; on 491 wait as §14.1 says and try again.

        Calls are taken one at a time: §14.1 forbids a second re-INVITE while one is pending.
        """
        if self._reinvite_lock is None:
            self._reinvite_lock = asyncio.Lock()
        async with self._reinvite_lock:
            return await self._reinvite(body, attempts)

    async def _reinvite(self, body: bytes, attempts: int) -> Response:
        policy = self.ua.session_timers
        timer = self.session_timer
        interval = timer.interval if timer else policy.session_expires if policy else 0
        for _ in range(attempts):
            peer = await self.next_peer()
            request = self.dialog.create_request(
                "INVITE",
                via=self.ua.via_for(peer),
                body=body,
                content_type=SDP,
                extra_headers=self._timer_offer(interval),
            )
            outgoing = self.ua.send_request(request, peer)
            self._pending_reinvite = outgoing
            try:
                response = await outgoing.final
            finally:
                self._pending_reinvite = None
            if 200 <= response.status < 300:
                self.dialog.receive_response(request, response)
                self._ack_2xx(outgoing, peer)
                self.local_sdp = body
                self._timer_answered(response, interval)
                return response
            if response.status == 422 and policy is not None:
                # RFC 4028 §7.4: try again with the peer's Min-SE, at once.
                retry = retry_interval(response, interval)
                if retry is None:
                    return response
                interval = retry
                continue
            if response.status != 491:
                return response
            # §14.1: the Call-ID owner waits 2.1–4 s, the other side 0–2 s.
            delay = self.ua.rng.uniform(2.1, 4.0) if self.is_uac else self.ua.rng.uniform(0, 2)
            await asyncio.sleep(delay)
        return response

    def _timer_answered(self, response: Response, offered: int) -> None:
        """§7.2: the 2xx to our (re-)INVITE sets the interval and who refreshes next."""
        if self.ua.session_timers is None:
            return
        try:
            negotiated = read_answer(response, offered)
        except SipError as exc:
            log.warning("bad Session-Expires on %s (%s): we refresh", self.dialog.call_id, exc)
            negotiated = Negotiated(offered, Refresher.UAC)
        self.apply_timer(negotiated, we_are_uac=True)

    def _ack_2xx(self, outgoing: OutgoingRequest, peer: Peer) -> None:
        """§13.2.2.4: ACK the 2xx, and again each retransmission of it: the UAS resends its
        2xx until an ACK gets through (§13.3.1.4), and would otherwise end the call."""
        invite = outgoing.request
        self._send_ack(invite, peer)
        outgoing.on_2xx_retransmission = lambda _: self._send_ack(invite, peer)

    def _send_ack(self, invite: Request, peer: Peer, body: bytes = b"") -> None:
        """``body``: the answer to an offer the 2xx carried (RFC 3261 §13.2.2.4)."""
        ack = self.dialog.create_request(
            "ACK",
            via=self.ua.via_for(peer),
            cseq=invite.cseq.number,
            body=body,
            content_type=SDP if body else None,
        )
        self.ua.send_stateless(ack, peer)

    async def bye(self, *, reason: str = "local BYE") -> None:
        if self.state is SessionState.TERMINATED:
            return
        self._terminate(reason)
        try:
            await asyncio.wait_for(self.request("BYE"), timeout=64 * self.ua.timers.t1 + 1)
        except (TimeoutError, OSError, ValueError) as exc:
            log.debug("BYE on %s: %s", self.dialog.call_id, exc)

    def _terminate(self, reason: str) -> None:
        if self.state is SessionState.TERMINATED:
            return
        self.state = SessionState.TERMINATED
        self._retransmitter = None
        # No request reaches an ended session (its dialog leaves the table below): its hooks
        # let go of the application, whose call object usually holds the session, so the
        # pair is freed when the call's task ends, not left as a cycle for the collector.
        self.on_reinvite = None
        self.on_request = None
        self._last_2xx = None  # only an ACK to it needed it, and none reaches an ended session
        if self.session_timer is not None:
            self.session_timer.stop()
        self.ua.unschedule(self)
        self.ua.dialogs.pop(self.dialog.id, None)
        if not self.terminated.done():
            self.terminated.set_result(reason)
        if not self.confirmed.done():
            self.confirmed.cancel()


async def place_call(
    ua: UserAgent,
    target: Uri,
    *,
    from_: NameAddr,
    offer: bytes,
    peer: Peer | None = None,
    timeout: float | None = 32.0,
    extra_headers: Sequence[tuple[str, str]] = (),
    direct: bool = False,
    on_provisional: Callable[[Response], None] | None = None,
    answer: Callable[[Response], Awaitable[bytes]] | None = None,
    cancel: asyncio.Future[object] | None = None,
) -> tuple[Session | None, Response]:
    """Send an INVITE as UAC (§13.2); on 2xx build the dialog, ACK, and return the session.

    The INVITE asks for a session timer (RFC 4028 §7.1) and is sent once more with a larger
    interval after a 422 (§7.4). After ``timeout`` seconds (``None``: never), or once
    ``cancel`` is done, the call is cancelled (§9.1).
    ``extra_headers`` go into the INVITE as given (the FreeSWITCH leg's ``X-Chorus-*``).
    ``direct`` sends the INVITE to ``peer`` (else the target itself) even when an outbound
    proxy is configured, and keeps the dialog's ACK, re-INVITEs and BYE off the proxy too.
    ``on_provisional`` sees each 1xx. An empty ``offer`` is a delayed offer (§13.2.1): the
    2xx carries the peer's offer and ``answer(response)`` makes the answer the ACK carries
    (RFC 3264 §4, the REFER dial-out of control/conference/refer.py).
    """
    if direct and peer is None:
        peer = await resolve_direct(target, "udp")
    if peer is None:
        peer = await ua.resolve(target)
    contact = ua.contact_for(
        peer,
        from_.uri.user if hasattr(from_.uri, "user") else None,
        secure=isinstance(target, SipUri) and target.scheme == "sips",
    )
    policy = ua.session_timers
    interval = policy.session_expires if policy is not None else 0
    tagged = from_.with_tag(ua.token(12)) if from_.tag is None else from_
    call_id = ua.token(24)
    for cseq in (1, 2):
        extra = [("Allow", ALLOWED_METHODS), *extra_headers]
        if policy is not None:
            extra += offer_headers(policy, interval, None)
        request = build_request(
            "INVITE",
            target,
            from_=tagged,
            to=NameAddr(target),
            call_id=call_id,
            cseq=cseq,
            contact=contact,
            body=offer,
            content_type=SDP if offer else None,
            extra_headers=extra,
        )
        outgoing, response = await _invite(ua, request, peer, timeout, on_provisional, cancel)
        retry = retry_interval(response, interval) if response.status == 422 else None
        if retry is None or policy is None:
            break
        interval = retry
    if not 200 <= response.status < 300:
        return None, response
    dialog = Dialog.as_uac(outgoing.request, response)
    session = Session(ua, dialog, peer, is_uac=True, direct=direct)
    session.state = SessionState.CONFIRMED
    session.confirmed.set_result(None)
    ack_body = await answer(response) if answer is not None and not offer else b""
    session.local_sdp = offer or ack_body
    ack_peer = await session.next_peer()
    session._send_ack(outgoing.request, ack_peer, ack_body)

    def re_ack(_: Response) -> None:
        session._send_ack(outgoing.request, ack_peer, ack_body)

    outgoing.on_2xx_retransmission = re_ack
    session._timer_answered(response, interval)
    return session, response


async def resolve_direct(uri: Uri, default_transport: str) -> Peer:
    """Where ``uri`` itself is, never the outbound proxy (RFC 3261 §12.2.1.1, §18.1.1): on
    the transport it names, else ``default_transport`` (the one the INVITE used); host names
    through the system resolver, as ``UserAgent.resolve``."""
    if not isinstance(uri, SipUri):
        raise ValueError(f"cannot route to {uri}")
    transport = uri.transport or ("tls" if uri.scheme == "sips" else default_transport)
    port = uri.port or (5061 if transport == "tls" else 5060)
    try:
        return Peer(transport, str(ipaddress.ip_address(uri.bare_host)), port)
    except ValueError:
        infos = await asyncio.get_running_loop().getaddrinfo(uri.bare_host, port)
        return Peer(transport, str(infos[0][4][0]), port)


async def _invite(
    ua: UserAgent,
    request: Request,
    peer: Peer,
    timeout: float | None,
    on_provisional: Callable[[Response], None] | None = None,
    cancel: asyncio.Future[object] | None = None,
) -> tuple[OutgoingRequest, Response]:
    """Send the INVITE and wait for its final response, cancelling it after ``timeout`` or
    when ``cancel`` is done.

    §9.1: a CANCEL is only sent once a provisional response has arrived; before that the
    INVITE may not even have reached the UAS, which would answer the CANCEL 481 and then ring
    on. So the timeout waits for the first provisional (or the final) before cancelling.
    """
    outgoing = ua.send_request(request, peer)
    ringing: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(_: object) -> None:
        if not ringing.done():
            ringing.set_result(None)

    outgoing.provisional.append(answered)
    if on_provisional is not None:
        outgoing.provisional.append(on_provisional)
    outgoing.final.add_done_callback(answered)
    waits: set[asyncio.Future[Any]] = {outgoing.final}
    if cancel is not None:
        waits.add(cancel)
    await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if not outgoing.final.done():
        await ringing
        if not outgoing.final.done():
            ua.send_request(build_cancel(outgoing.request), peer)
    return outgoing, await outgoing.final
